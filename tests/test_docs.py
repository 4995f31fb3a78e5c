"""The docs name what the code has: every command in README.md's commands table, every module in
docs/architecture.md's tree (and nothing the tree names is missing from the code)."""

from __future__ import annotations

import re
from pathlib import Path

from envbuilder.cli import COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "envbuilder"


def _section(path: Path, start: str, end: str) -> str:
    text = path.read_text(encoding="utf-8")
    begin = text.index(start)
    return text[begin:text.index(end, begin + len(start))]


def test_every_command_has_a_row_in_the_readme_commands_table():
    table = _section(ROOT / "README.md", "## Commands\n\n| command |", "\n\n")
    first_cells = [re.split(r"(?<!\\)\|", row)[1] for row in table.splitlines()[2:]]  # `\|` is inside a cell
    commands = {name for cell in first_cells for name in re.findall(r"`envbuilder ([a-z]+)", cell)}
    assert sorted(set(COMMANDS) - commands) == [], "add a row for these to README.md's commands table"
    assert sorted(commands - set(COMMANDS)) == [], "the README lists commands the CLI does not have"


def _tree() -> dict[str, set[str]]:
    """folder ('' for the package root) -> the module names the architecture tree lists in it."""
    tree = _section(ROOT / "docs" / "architecture.md", "```\nenvbuilder/\n", "\n```")
    listed: dict[str, set[str]] = {"": set()}
    folder = ""
    for line in tree.splitlines()[2:]:
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if not words:
            continue
        if indent == 2 and words[0].endswith("/"):
            folder = words[0].rstrip("/")
            listed.setdefault(folder, set())
            continue
        if indent == 2:
            folder = ""
        if indent in (2, 4):  # the leading NAME.py words; the description may name other files (setup.py)
            names = words[:next((n for n, w in enumerate(words) if not w.endswith(".py")), len(words))]
            listed[folder] |= {w[:-3] for w in names}
    return listed


def test_the_architecture_tree_lists_every_module_and_only_real_ones():
    listed = _tree()
    actual: dict[str, set[str]] = {"": {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__")}}
    for folder in PACKAGE.iterdir():
        if (folder / "__init__.py").is_file():
            actual[folder.name] = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("__")}
    assert sorted(actual) == sorted(listed), "a stage folder is missing from (or extra in) the tree"
    # cli/ is one module per command: COMMANDS is its list (tested above against the README).
    missing = {f"{f}/{m}" for f in actual if f != "cli" for m in actual[f] - listed[f]}
    extra = {f"{f}/{m}" for f in listed for m in listed[f] - actual.get(f, set())}
    assert not missing, f"modules docs/architecture.md does not show: {sorted(missing)}"
    assert not extra, f"modules docs/architecture.md shows that do not exist: {sorted(extra)}"

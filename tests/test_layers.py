"""The import rules between envbuilder's stage folders, from one table (LAYERS), checked on the real import graph.

The graph is read with ast from every module under envbuilder/, function-level imports included (they run
too, just later); only `if TYPE_CHECKING:` imports are left out of purity and cycles, since they never run.
docs/architecture.md shows the same table: test_the_doc_shows_this_table renders it and looks for it there.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import envbuilder

PACKAGE = Path(envbuilder.__file__).parent
DOC = PACKAGE.parent / "docs" / "architecture.md"

# The foundation: small top-level modules every stage may use.
FOUNDATION = "foundation"
FOUNDATION_MODULES = ("values", "errors", "error_codes", "notices", "redact", "quantities", "imagelayout", "settings",
                      "tomlparser", "defaults")

# unit -> (envbuilder units it may import, pure?). A unit is a stage folder, `proc`, `api`, or the foundation.
# Pure: imports no subprocess, socket, ssl, http, urllib.request/urllib.error or docker SDK, and no
# envbuilder.proc / envbuilder.docker module, directly or transitively (PURE_MODULES refines host and project).
LAYERS: dict[str, tuple[tuple[str, ...], bool]] = {
    FOUNDATION: ((), True),
    "proc": ((FOUNDATION,), False),
    "host": ((FOUNDATION, "proc"), False),
    "project": ((FOUNDATION, "proc"), False),
    "resolve": ((FOUNDATION, "host", "project"), True),
    "render": ((FOUNDATION, "project", "resolve"), True),
    "index": ((FOUNDATION, "proc", "project", "resolve"), False),
    "docker": ((FOUNDATION, "proc"), False),
    "build": ((FOUNDATION, "proc", "project", "resolve", "render", "index", "docker"), False),
    "run": ((FOUNDATION, "proc", "host", "project", "resolve", "render", "docker", "build"), False),
    "cluster": ((FOUNDATION, "proc", "project", "resolve", "render", "docker", "run"), False),
    "api": ((FOUNDATION, "proc", "host", "project", "resolve", "render", "index", "docker", "build", "run", "cluster"),
            False),
    "cli": ((FOUNDATION, "proc", "host", "project", "resolve", "render", "index", "docker", "build", "run", "cluster",
             "api"), False),
}
# Within the impure host and project folders, these modules are pure (the readers, values and parsers).
PURE_MODULES = ("host.types", "host.parsers", "project.spec", "project.markers", "project.found",
                "project.pyproject", "project.setuptools", "project.requirements", "project.conda", "project.locks",
                "project.install",
                "cluster.profiles", "cluster.spec", "cluster.slurm", "cluster.kubernetes", "cluster.skypilot",
                "cluster.text")
FORBIDDEN_EXTERNAL = ("subprocess", "socket", "ssl", "http", "urllib.request", "urllib.error", "docker")
FORBIDDEN_OURS = ("envbuilder.proc", "envbuilder.docker")


# --- the import graph ---------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return FOUNDATION  # the envbuilder package itself
    if parts[1] in FOUNDATION_MODULES:
        return FOUNDATION
    return parts[1] if parts[1] in LAYERS else "cli" if parts[1] == "__main__" else parts[1]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> list[tuple[str, bool]]:
    """(imported module, runs at runtime) for every import statement in the module, at any depth."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    is_package = MODULES[module].name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, runtime: bool) -> None:
        if isinstance(node, ast.If) and _type_checking(node):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runtime)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, runtime) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, runtime))
            # `from pkg import mod` imports the submodule too
            found.extend((f"{base}.{alias.name}", runtime) for alias in node.names if f"{base}.{alias.name}" in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child, runtime)

    visit(tree, True)
    return found


GRAPH: dict[str, list[tuple[str, bool]]] = {m: imports_of(m) for m in MODULES}


def ours(name: str) -> bool:
    return name == "envbuilder" or name.startswith("envbuilder.")


def runtime_edges(module: str) -> set[str]:
    """The envbuilder modules this one loads when it (or any of its functions) runs, parent packages included."""
    out: set[str] = set()
    for name, runtime in GRAPH[module]:
        if runtime and ours(name):
            parts = name.split(".")
            out.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in MODULES)
    out.discard(module)
    return out


def closure(module: str) -> set[str]:
    seen, todo = {module}, [module]
    while todo:
        for nxt in runtime_edges(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def forbidden_in(module: str) -> list[str]:
    """What a module's transitive closure imports that a pure module must not."""
    bad = []
    for mod in sorted(closure(module)):
        for name, runtime in GRAPH[mod]:
            if not runtime:
                continue
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_EXTERNAL + FORBIDDEN_OURS):
                bad.append(f"{mod} imports {name}")
    return bad


def is_pure(module: str) -> bool:
    rel = module.removeprefix("envbuilder.")
    return LAYERS.get(unit_of(module), ((), False))[1] or any(rel == p for p in PURE_MODULES)


# --- the rules ----------------------------------------------------------------------------------------------


def test_every_module_belongs_to_a_unit_of_the_table():
    assert {unit_of(m) for m in MODULES} <= set(LAYERS), sorted({unit_of(m) for m in MODULES} - set(LAYERS))


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_each_unit_imports_only_what_the_table_allows(unit):
    allowed = set(LAYERS[unit][0]) | {unit}
    broken = sorted({f"{m} imports {name}" for m in MODULES if unit_of(m) == unit
                     for name, _ in GRAPH[m] if ours(name) and unit_of(name) not in allowed})
    assert not broken, "\n".join(broken)


def test_nothing_imports_the_cli():
    broken = [f"{m} imports {name}" for m in MODULES if unit_of(m) != "cli"
              for name, _ in GRAPH[m] if ours(name) and unit_of(name) == "cli"]
    assert not broken


@pytest.mark.parametrize("module", sorted(m for m in MODULES if is_pure(m)))
def test_pure_modules_import_no_io_directly_or_transitively(module):
    assert not forbidden_in(module)


def test_the_checker_sees_a_transitive_leak():
    # host.probes runs programs through envbuilder.proc: the walk must find that, one module away.
    assert any("envbuilder.proc imports subprocess" in line for line in forbidden_in("envbuilder.host.probes"))
    assert not is_pure("envbuilder.host.probes") and is_pure("envbuilder.host.parsers")


def _cycle(nodes: set[str], edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else path + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return None

    for node in sorted(nodes):
        if node not in state and (found := visit(node, [node])):
            return found
    return None


def test_no_cycles_between_modules():
    edges = {m: {e for e in runtime_edges(m) if not MODULES[m].name == "__init__.py"} for m in MODULES}
    assert _cycle(set(MODULES), edges) is None


def test_no_cycles_between_units():
    edges: dict[str, set[str]] = defaultdict(set)
    for m in MODULES:
        edges[unit_of(m)] |= {unit_of(e) for e in runtime_edges(m)} - {unit_of(m)}
    assert _cycle(set(LAYERS), edges) is None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a", "b"}, {"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


_LOADED_IO = ("import json, sys\n"
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('subprocess', 'socket', 'ssl', 'http', "
              "'docker') or m in ('urllib.request', 'urllib.error', 'envbuilder.proc', 'envbuilder.host.probes') "
              "or m.startswith('envbuilder.docker'))))")


def _io_modules_after(imports: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", imports + "\n" + _LOADED_IO], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(json.loads(out.stdout))


def test_pure_stages_load_no_io_modules_at_runtime():
    # Our dependencies load some on their own: packaging.tags imports subprocess (macOS version probing), and
    # pydantic's plugin loader reaches socket through importlib.metadata -> email.utils. Those are measured in a
    # baseline of the dependencies alone; whatever a pure stage loads beyond it is ours, and must be nothing.
    baseline = _io_modules_after("import pydantic, packaging.requirements, packaging.utils, html.parser\n"
                                 "class M(pydantic.BaseModel):\n    x: int = 0")
    pure = sorted(m for m in MODULES if is_pure(m) and not MODULES[m].name == "__init__.py" and unit_of(m) != FOUNDATION)
    loaded = _io_modules_after("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in pure))
    assert loaded - baseline == set()


def test_the_runtime_check_sees_a_probe():
    assert "envbuilder.proc" in _io_modules_after("import envbuilder.host.probes")


# --- the doc shows the same table ---------------------------------------------------------------------------


def layer_table() -> str:
    rows = ["| unit | may import | pure |", "|---|---|---|"]
    for unit, (allowed, pure) in LAYERS.items():
        label = f"`{unit}` ({', '.join(FOUNDATION_MODULES)})" if unit == FOUNDATION else f"`{unit}`"
        pure_text = "yes" if pure else ("only " + ", ".join(f"`{p}`" for p in PURE_MODULES if p.startswith(unit + "."))
                                        if any(p.startswith(unit + ".") for p in PURE_MODULES) else "no")
        rows.append(f"| {label} | {', '.join(allowed) or '-'} | {pure_text} |")
    return "\n".join(rows)


def test_the_doc_shows_this_table():
    assert layer_table() in DOC.read_text(encoding="utf-8"), "regenerate with: python tests/test_layers.py"


if __name__ == "__main__":  # prints the table for docs/architecture.md
    print(layer_table())

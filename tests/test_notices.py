"""Notices (#7): warnings, findings and notes are values with a code, every code is in the catalog
(envbuilder/notices.py), every catalogued code is used, and docs/notices.md is generated from the catalog."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from envbuilder.notices import NOTICE_CODES, Notice, markdown
from envbuilder.project.inspect import inspect_project
from envbuilder.resolve.matrix import load_matrix
from envbuilder.resolve.plan import Target
from envbuilder.resolve.resolver import resolve

PACKAGE = Path(__file__).resolve().parents[1] / "envbuilder"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "notices.md"


def codes_used() -> dict[str, list[str]]:
    """Every literal code passed to Notice(...) in the package, with where."""
    used: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Notice":
                first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "code"), None)
                assert isinstance(first, ast.Constant), f"{path}:{node.lineno}: a notice's code must be a literal"
                used.setdefault(first.value, []).append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return used


def test_every_code_used_is_catalogued_and_every_catalogued_code_is_used():
    used = codes_used()
    assert len(used) > 30, "the scan found too few notices to be looking at the package"
    assert not {c: w for c, w in used.items() if c not in NOTICE_CODES}, "codes missing from envbuilder/notices.py"
    assert not set(NOTICE_CODES) - set(used), "catalogued codes nothing reports"


def test_docs_are_generated_from_the_catalog():
    assert DOCS.read_text(encoding="utf-8") == markdown(), "run: python -m envbuilder.notices > docs/notices.md"


def test_plans_hosts_and_projects_carry_notices_and_json_gives_the_code(tmp_path):
    matrix = load_matrix()
    # An H100 with no driver known: warnings about what was assumed; an old driver: a CPU fallback with a hint.
    assumed = resolve(inspect_project(_project(tmp_path / "a", "torch\n")),
                      Target(os="linux", arch="x86_64", gpu="nvidia"), matrix)
    fallback = resolve(inspect_project(_project(tmp_path / "b", "torch\n")),
                       Target(os="linux", arch="x86_64", gpu="nvidia", cuda_driver="390.1", compute_capabilities=("9.0",)),
                       matrix)
    assert {w.code for w in assumed.warnings} >= {"driver-unknown", "compute-capability-not-checked"}
    assert fallback.status == "cpu-fallback" and "cpu-fallback" in {w.code for w in fallback.warnings}
    for plan in (assumed, fallback):
        assert all(isinstance(w, Notice) for w in plan.warnings)
        dumped = json.loads(json.dumps(plan.to_json()))["warnings"]
        assert dumped == [{"code": w.code, "message": w.message, "hint": w.hint} for w in plan.warnings]
    spec = inspect_project(_project(tmp_path / "c", "-e .\nnumpy\n--trusted-host example.org\n"))
    assert [n.code for n in spec.notes] == ["entry-skipped", "option-ignored"]
    assert all(isinstance(n, Notice) and str(n) == n.message for n in spec.notes)


def _project(folder: Path, requirements: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "requirements.txt").write_text(requirements, encoding="utf-8")
    return folder

"""The error catalog is the one list of codes: every code raised is in it, with the class that raises it, and
docs/errors.md is generated from it. Every command prints its errors as JSON with --json."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from envbuilder import errors
from envbuilder.error_codes import CATALOG, render_markdown

PACKAGE = Path(errors.__file__).resolve().parent
REPO = PACKAGE.parent
ERROR_CLASSES = {name for name, value in vars(errors).items()
                 if isinstance(value, type) and issubclass(value, errors.EnvbuilderError)}


def _calls():
    """(file, line, class name, first argument node, keywords) for every construction of an envbuilder error."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ERROR_CLASSES:
                yield path.relative_to(REPO), node.lineno, node.func.id, node.args[0] if node.args else None, node.keywords


def test_every_literal_code_raised_is_in_the_catalog_with_its_class():
    problems = []
    seen = 0
    for where, line, cls, first, _ in _calls():
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            seen += 1
            entry = CATALOG.get(first.value)
            if entry is None:
                problems.append(f"{where}:{line}: {first.value!r} is not in envbuilder/error_codes.py")
            elif cls != "EnvbuilderError" and entry.error.__name__ != cls:
                problems.append(f"{where}:{line}: {first.value!r} raised as {cls}, catalogued as {entry.error.__name__}")
            elif cls == "EnvbuilderError" and entry.error is not errors.EnvbuilderError:
                problems.append(f"{where}:{line}: {first.value!r} must be raised as {entry.error.__name__} "
                                f"(its exit code is {entry.exit_code})")
    assert seen > 60, "the scan found too few raises to be looking at the package"
    assert not problems, "\n".join(problems)


def test_exit_codes_come_from_classes_not_call_sites():
    offenders = [f"{where}:{line}" for where, line, cls, _, keywords in _calls()
                 if any(k.arg == "exit_code" for k in keywords)]
    assert not offenders, f"pass the error class whose exit code you mean instead: {offenders}"


def test_docker_diagnoses_are_catalogued_as_docker_errors():
    from envbuilder.docker import diagnose

    tables = [value for name, value in vars(diagnose).items() if name.isupper() or name.startswith("_")
              if isinstance(value, tuple) and value and isinstance(value[0], tuple)]
    codes = {row[1] for table in tables for row in table}
    assert len(codes) >= 8
    for code in codes:
        assert CATALOG[code].error is errors.DockerError, code


def test_no_catalog_entry_is_stale():
    source = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "error_codes.py")
    stale = [code for code in CATALOG if f'"{code}"' not in source and f"run-" not in code]
    assert not stale, f"codes nothing raises (remove them, or raise them): {stale}"


def test_docs_errors_md_is_generated_from_the_catalog():
    assert (REPO / "docs" / "errors.md").read_text() == render_markdown(), \
        "regenerate: python -m envbuilder.error_codes > docs/errors.md"


def test_classes_carry_the_exit_codes():
    assert errors.UsageError.exit_code == errors.EXIT_USAGE
    assert errors.ResolveConflict.exit_code == errors.EXIT_CONFLICT
    assert errors.DockerError.exit_code == errors.EXIT_DOCKER
    assert errors.ProjectError.exit_code == errors.EXIT_ERROR
    assert errors.JobEnded("run-failed", "m", job_exit_code=7).exit_code == 7


@pytest.mark.parametrize("args, code, exit_code", [
    (["inspect", "/nonexistent/project", "--json"], "project-not-found", 1),
    (["resolve", "/nonexistent/project", "--json"], "project-not-found", 1),
    (["render", "/nonexistent/project", "--json-nonsense-flag", "--json"], "usage", 2),
    (["runs", "show", "no-such-run", "--json"], "run-not-found", 1),
    (["resolve", ".", "--gpu", "nvidia", "--target-os", "linux", "--target-arch", "x86_64",
      "--compute-capability", "42.0", "--cuda-driver", "570.86", "--json"], "unknown-compute-capability", 2),
])
def test_every_command_prints_its_error_as_json(args, code, exit_code, cli):
    result = cli(*args)
    assert result.exit_code == exit_code, result.stderr
    payload = json.loads(result.stdout)
    assert payload["code"] == code
    assert payload["exit_code"] == exit_code
    assert payload["message"]
    assert f"envbuilder: {code}" in result.stderr or code == "usage"


def test_args_after_double_dash_belong_to_the_job(cli, tmp_path):
    result = cli("run", str(tmp_path / "missing"), "--", "python", "--json")
    assert result.exit_code != 0
    assert result.stdout == ""  # --json after -- is the job's flag, not ours

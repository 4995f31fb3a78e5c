"""The bad-input corpus (tests/data/bad-input/cases.toml), run through the CLI in-process: every case ends in one
stderr line `envbuilder: CODE: ... Hint: ...` with the exit code of CODE's class, never `internal error` or a
traceback. Plus what the corpus cannot say: good values of the same kinds still pass, and build output is shown
without rich's markup or emoji substitution."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from envbuilder.error_codes import CATALOG
from envbuilder.tomlparser import tomllib

CORPUS = Path(__file__).parent / "data" / "bad-input"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text(encoding="utf-8"))["case"]


def _make(spec: str, project: Path, home: Path) -> None:
    """One entry of a case's `make`: what git cannot hold (FIFOs, symlink loops) or what is too big to keep."""
    kind, rel, *rest = spec.split()
    path = Path(rel.replace("{home}", str(home)))
    path = path if path.is_absolute() else project / path
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(rest[0])
    elif kind == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads a chmod 000 file anyway; the FIFO and symlink cases cover unreadable files for root")
        path.write_text("numpy\n")
        path.chmod(0)
    elif kind == "nested-toml":
        depth = int(rest[0])
        path.write_text("x = " + "[" * depth + "]" * depth + "\n")
    elif kind == "nested-yaml":
        depth = int(rest[0])
        path.write_text("name: deep\ndependencies: " + "[" * depth + "]" * depth + "\n")
    elif kind == "nested-json":
        depth = int(rest[0])
        path.write_text('{"schema_version": ' + "[" * depth + "]" * depth + "}\n")
    elif kind == "long-expression":
        terms = int(rest[0])
        path.write_text('from setuptools import setup\nsetup(name="deep", install_requires=["torch"], version='
                        + "+".join(["1"] * terms) + ")\n")
    else:
        raise AssertionError(f"unknown make kind {kind!r} in cases.toml")


@pytest.fixture
def no_engine(monkeypatch):
    """No case may reach Docker: if a check slips behind the build, the case fails on a docker code, fast."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/envbuilder-bad-input.sock")
    monkeypatch.setenv("ENVBUILDER_DOCKER", "/nonexistent/docker")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_is_one_line_with_a_code_and_a_hint(case, cli, tmp_path, no_engine):
    project = tmp_path / "project"
    if "project" in case:
        shutil.copytree(CORPUS / "projects" / case["project"], project, symlinks=True)
    else:
        project.mkdir()
    good = tmp_path / "good"
    shutil.copytree(CORPUS / "projects" / "good", good)
    home = tmp_path / "envbuilder-home"  # the cli fixture's data dir
    for spec in case.get("make", []):
        _make(spec, project, home)
    values = {"{project}": str(project), "{good}": str(good), "{data}": str(CORPUS), "{home}": str(home)}
    args = []
    for arg in case["args"]:
        for key, value in values.items():
            arg = arg.replace(key, value)
        args.append(arg)

    result = cli(*args)

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "internal error" not in line and "Traceback" not in result.stderr
    assert line.startswith(f"envbuilder: {case['code']}: "), line
    assert ". Hint: " in line, line
    assert result.exit_code == case["exit"], line
    assert CATALOG[case["code"]].exit_code == case["exit"], "the case's exit is not its code's class exit"


def test_the_corpus_is_unique_and_covers_every_class():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 60
    codes = {c["code"] for c in CASES}
    assert {"project-invalid-config", "project-invalid-url", "project-too-deep", "project-not-utf8",
            "project-file-unreadable", "project-file-missing", "url-invalid", "ca-cert-invalid", "data-dir-invalid",
            "image-tag-invalid", "matrix-invalid"} <= codes
    stored = {p.name for p in (CORPUS / "projects").iterdir()}
    used = {c["project"] for c in CASES if "project" in c} | {"good"}
    assert stored == used, "a stored project no case uses, or a case naming no stored project"


# --- the same kinds of value, good: the checks refuse only what is broken ---------------------------------------

@pytest.mark.parametrize("url", ["https://download.pytorch.org/whl/cu128", "http://127.0.0.1:8080/simple/",
                                 "https://user@mirror.example:8443/pypi/simple", "file:///srv/wheels",
                                 "http://[::1]:3141/root/pypi/+simple/"])
def test_good_index_urls_pass(url):
    from envbuilder.defaults import url_problem

    assert url_problem(url) is None


def test_a_find_links_folder_is_not_a_url_problem():
    from envbuilder.defaults import url_problem

    assert url_problem("wheels/", folder_ok=True) is None
    assert url_problem("wheels/") is not None


@pytest.mark.parametrize("tag", ["myproject", "myproject:v1.2", "registry.example:5000/team/my_proj__x-y:2025.01",
                                 "localhost/x", "a" * 200 + ":" + "t" * 128])
def test_good_tags_pass(tag):
    from envbuilder.build.inputs import check_image_tag

    check_image_tag(tag)


@pytest.mark.parametrize("tag", ["x:" + "t" * 129, "a" * 256, "x//y", "-x", "x:.v", "x y"])
def test_tags_docker_refuses_are_refused(tag):
    from envbuilder.build.inputs import check_image_tag
    from envbuilder.errors import UsageError

    with pytest.raises(UsageError) as err:
        check_image_tag(tag)
    assert err.value.code == "image-tag-invalid"


def test_a_pem_bundle_passes():
    from envbuilder.build.inputs import check_ca_bundle

    bundle = next((Path(p) for p in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                                     "/etc/ssl/cert.pem") if Path(p).is_file()), None)
    if bundle is None:
        pytest.skip("no system CA bundle on this machine to load")
    assert check_ca_bundle(bundle) == bundle.resolve()


def test_good_projects_of_the_same_kinds_still_read(cli, tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "ok"\nversion = "1"\ndependencies = ["torch"]\n\n[project.optional-dependencies]\n'
        'onnx = ["onnxruntime"]\n\n[[tool.uv.index]]\nname = "pytorch"\nurl = "https://download.pytorch.org/whl/cpu"\n'
        'explicit = true\n\n[tool.uv.sources]\ntorch = [{ index = "pytorch" }]\n')
    (tmp_path / "requirements.txt").write_text("--extra-index-url https://mirror.example/simple\n-r more.txt\nnumpy\n")
    (tmp_path / "more.txt").write_text("scipy\n")
    result = cli("inspect", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stderr


# --- build output: the engine's text, shown as is -----------------------------------------------------------------

def _progress_lines(monkeypatch, verbose: bool, lines: list[str]) -> str:
    from rich.console import Console

    from envbuilder.cli import build_cmd

    out = io.StringIO()
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # the live display, as on a terminal
    shown = build_cmd._progress(verbose)
    shown.__dict__["err"] = Console(file=out, force_terminal=True, color_system=None, width=200, highlight=False)
    with shown as on_line:
        for line in lines:
            on_line(line)
    return out.getvalue()


@pytest.mark.parametrize("verbose", [True, False], ids=["plain", "live"])
def test_build_lines_are_printed_without_markup_or_emoji(monkeypatch, verbose):
    lines = ["#7 [3/5] RUN echo 'envbuilder:x:1000:1000::/home/envbuilder:/bin/sh' >> /etc/passwd [bold]",
             "#7 0.101 envbuilder:x:1000 :smile: [red]not red[/]", "#7 DONE 0.2s",
             "# envbuilder: log :x: kept"]
    shown = _progress_lines(monkeypatch, verbose, lines)
    assert "❌" not in shown and "😄" not in shown
    assert "envbuilder:x:1000" in shown
    if verbose:
        assert "[red]not red[/]" in shown and ":smile:" in shown
    assert "# envbuilder: log :x: kept" in shown

"""The build memo (envbuilder.build.memo, envbuilder.cli.memo): an unchanged `build` answered from a few stat calls.

Unit tests write and read memos over real files with an image lookup standing in for the engine; each input the
memo depends on is changed in turn and must turn the answer into a miss. The docker tests run the real CLI in a
fresh interpreter: the third identical build is answered without click or pydantic being imported, and an edit or
a moved tag sends it back through the full path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fixtures import HOST_CA, copy_project

from envbuilder.build import memo
from envbuilder.cli.memo import _build_command
from envbuilder.settings import Settings

REPO = Path(__file__).resolve().parents[1]
LONG_AGO = time.time() - 3600


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / "pkg").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\ndependencies = ["torch"]\n')
    (project / "pkg" / "train.py").write_text("print('train')\n")
    _backdate(project)
    return project


def _backdate(*roots: Path) -> None:
    """Inputs edited long ago: a memo is never written over an input edited within its timestamp tick."""
    for root in roots:
        for path in [root, *root.rglob("*")]:
            os.utime(path, (LONG_AGO, LONG_AGO))


def _context(project: Path):
    """The context entries as the build's walk gives them (.git is never in a context)."""
    return [(str(p), memo.signature(p, follow=False)) for p in sorted(project.rglob("*"))
            if ".git" not in p.relative_to(project).parts]


class Images:
    def __init__(self) -> None:
        self.ids = {"envbuilder/proj:k": "sha256:1", "envbuilder/proj:latest": "sha256:1", "base:3.11": "sha256:b"}

    def __call__(self, ref: str) -> str | None:
        return self.ids.get(ref)


def _remembered(tmp_path: Path, argv=("build", "."), environ=None):
    project = _project(tmp_path)
    settings = Settings(tmp_path / "home")
    environ = {"HOME": str(tmp_path), "ENVBUILDER_OFFLINE": "1"} if environ is None else environ
    observed = memo.observe_before(list(argv), str(project), environ, settings, project)
    images = Images()
    written = memo.remember(settings, observed, context=_context(project), read_after=[], images=dict(images.ids),
                            answer={"result": {"image": "envbuilder/proj:k"}, "as_json": True})
    assert written is not None and written.stat().st_mode & 0o777 == 0o600
    return project, settings, observed.key, images


def test_an_unchanged_build_is_answered_from_its_memo(tmp_path):
    project, settings, key, images = _remembered(tmp_path)
    assert memo.recall(settings, key, images) == {"result": {"image": "envbuilder/proj:k"}, "as_json": True}


@pytest.mark.parametrize("change", [
    "edit a source file (same size, mtime kept)", "add a file in a package", "chmod a file", "edit pyproject.toml",
    "add a top-level file", "remove a file", "write the user config", "install a matrix",
])
def test_any_changed_input_is_a_miss(tmp_path, change):
    project, settings, key, images = _remembered(tmp_path)
    source = project / "pkg" / "train.py"
    if change.startswith("edit a source"):
        before = source.stat()
        source.write_text("print('TRAIN')\n")
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))  # only ctime tells
    elif change == "add a file in a package":
        (project / "pkg" / "new.py").write_text("")
    elif change == "chmod a file":
        source.chmod(0o755)
    elif change == "edit pyproject.toml":
        (project / "pyproject.toml").write_text('[project]\nname = "proj"\ndependencies = ["torch<2.9"]\n')
    elif change == "add a top-level file":
        (project / "requirements.txt").write_text("numpy\n")
    elif change == "remove a file":
        source.unlink()
    elif change == "write the user config":
        (settings.data_dir / "config.toml").write_text("[defaults]\n")
    elif change == "install a matrix":
        settings.matrix_override.write_text("{}")
    assert memo.recall(settings, key, images) is None


def test_git_activity_in_the_project_is_not_a_change(tmp_path):
    project = tmp_path / "proj"
    (project / ".git").mkdir(parents=True)
    project, settings, key, images = _remembered(tmp_path)
    (project / ".git" / "index.lock").write_text("")  # what `git status` does to the folder
    assert memo.recall(settings, key, images) is not None


def test_a_moved_or_missing_image_is_a_miss(tmp_path):
    project, settings, key, images = _remembered(tmp_path)
    images.ids["envbuilder/proj:latest"] = "sha256:2"  # another build took :latest; the full path retags it
    assert memo.recall(settings, key, images) is None
    images.ids["envbuilder/proj:latest"] = "sha256:1"
    images.ids["base:3.11"] = "sha256:new-base"
    assert memo.recall(settings, key, images) is None
    del images.ids["base:3.11"]
    assert memo.recall(settings, key, images) is None


def test_the_key_is_the_command_line_the_folder_and_the_environment(tmp_path):
    env = {"HOME": "/home/u", "ENVBUILDER_OFFLINE": "1", "OLDPWD": "/a", "SHLVL": "1"}
    key = memo.memo_key(["build", "."], "/p", env)
    assert memo.memo_key(["build", "."], "/p", {**env, "OLDPWD": "/b", "SHLVL": "2", "_": "x"}) == key
    assert memo.memo_key(["build", ".", "--json"], "/p", env) != key
    assert memo.memo_key(["build", "."], "/q", env) != key
    assert memo.memo_key(["build", "."], "/p", {**env, "HTTPS_PROXY": "http://proxy:3128"}) != key
    assert memo.memo_key(["build", "."], "/p", {k: v for k, v in env.items() if k != "ENVBUILDER_OFFLINE"}) != key


def test_a_memo_expires(tmp_path):
    project, settings, key, images = _remembered(tmp_path)
    assert memo.recall(settings, key, images, now=lambda: time.time() + memo.MEMO_TTL_S - 5) is not None
    assert memo.recall(settings, key, images, now=lambda: time.time() + memo.MEMO_TTL_S + 1) is None


def test_files_named_on_the_command_line_are_inputs(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("bundle")
    _backdate(ca)
    project, settings, key, images = _remembered(tmp_path, argv=("build", ".", f"--ca-cert={ca}"))
    assert memo.recall(settings, key, images) is not None
    ca.write_text("another bundle")
    assert memo.recall(settings, key, images) is None


def test_no_memo_over_an_input_edited_just_now(tmp_path):
    project = _project(tmp_path)
    settings = Settings(tmp_path / "home")
    observed = memo.observe_before(["build", "."], str(project), {}, settings, project)
    (project / "pkg" / "train.py").write_text("print('edited')\n")  # within the tick the memo could not tell apart
    written = memo.remember(settings, observed, context=_context(project), read_after=[], images={}, answer={})
    assert written is None
    assert memo.recall(settings, observed.key, Images()) is None


def test_only_the_newest_memos_are_kept(tmp_path):
    project = _project(tmp_path)
    settings = Settings(tmp_path / "home")
    keys = []
    for n in range(5):
        observed = memo.observe_before(["build", ".", f"--tag=t{n}"], str(project), {}, settings, project)
        assert memo.remember(settings, observed, context=(), read_after=[], images={}, answer={"n": n},
                             keep=3) is not None
        keys.append(observed.key)
        time.sleep(0.01)  # distinct mtimes
    kept = [memo.recall(settings, key, Images()) for key in keys]
    assert kept == [None, None, {"n": 2}, {"n": 3}, {"n": 4}]


def test_a_damaged_memo_is_a_miss(tmp_path):
    project, settings, key, images = _remembered(tmp_path)
    memo.memo_path(settings, key).write_text("{not json")
    assert memo.recall(settings, key, images) is None


@pytest.mark.parametrize(("argv", "expected"), [
    (["build", "."], (None, None)),
    (["--data-dir", "/d", "build", ".", "--json"], ("/d", None)),
    (["--data-dir=/d", "--docker", "/usr/bin/docker", "build"], ("/d", "/usr/bin/docker")),
    (["-v", "build", "."], None),
    (["build", ".", "--help"], None),
    (["--version"], None),
    (["run", ".", "--", "build"], None),
    (["--data-dir", "", "build"], None),
    (["--data-dir"], None),
])
def test_only_a_plain_build_command_line_is_answered_from_a_memo(argv, expected):
    assert _build_command(argv) == expected


def test_the_memo_path_imports_neither_click_nor_pydantic():
    code = ("import sys; import envbuilder.cli, envbuilder.cli.memo, envbuilder.cli.output, envbuilder.build.memo; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'click', 'pydantic', 'rich'}), "
            "sorted(m for m in sys.modules if m.startswith(('envbuilder.resolve', 'envbuilder.project'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"


def test_no_memo_for_no_cache_push_or_verbose(cli, fake_engine, tmp_path):
    """--no-cache must build every time; -v shows the full path; a registry may change under --push."""
    fake_engine.add_image("envbuilder/base-python:3.11-bookworm", env=["PYTHON_VERSION=3.11.9"])
    project = _project(tmp_path)
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\ndependencies = []\n')
    _backdate(project)
    args = ["build", str(project), "--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none",
            "--base-image", "envbuilder/base-python:3.11-bookworm", "--json"]
    memos = tmp_path / "envbuilder-home" / "cache" / "build-memo"
    for extra in (["--no-cache"], ["--no-cache"]):
        result = cli(*args, *extra)
        assert result.exit_code == 0, result.stderr
        assert not list(memos.glob("*.json"))
    result = cli("-v", *args)
    assert result.exit_code == 0 and not list(memos.glob("*.json"))
    _backdate(tmp_path / "envbuilder-home" / "logs")  # the builds above wrote their logs just now
    result = cli(*args)
    assert result.exit_code == 0 and len(list(memos.glob("*.json"))) == 1


# --- the real CLI against Docker -------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> tuple[dict, list[str]]:
    """`envbuilder ARGS` in a fresh interpreter: (its JSON answer, the heavy packages it imported)."""
    code = ("import sys, json; from envbuilder.cli import main; rc = main(sys.argv[1:]); "
            "sys.stderr.write('MODULES ' + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'click', 'pydantic'})) + '\\n'); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    modules = next(json.loads(line[8:]) for line in done.stderr.splitlines() if line.startswith("MODULES "))
    return json.loads(done.stdout), modules


@pytest.mark.docker
def test_the_third_identical_build_skips_the_full_path_and_an_edit_rebuilds(build_env, cpuproj_image, tmp_path,
                                                                             torch_cpu_index):
    project = copy_project("cpuproj", tmp_path)
    _backdate(project)
    env = {**os.environ, "ENVBUILDER_HOME": str(tmp_path / "home")}
    args = ["build", str(project), "--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none",
            "--base-image", build_env.base_image, "--torch-index-url", torch_cpu_index.url,
            "--ca-cert", str(HOST_CA), "--network", "host", "--json"]
    first, _ = _cli(args, env)  # this checkout's first build (Docker's layer cache makes it quick) writes a memo
    assert not first["cached"]
    second, loaded = _cli(args, env)
    assert loaded == [], "the memo's answer must not load click or pydantic"
    assert second["cached"] and second["image_id"] == first["image_id"] and second["log"] == first["log"]
    full, loaded = _cli([*args, "--offline"], env)  # another command line: the full path finds the image
    assert "pydantic" in loaded
    assert {**full, "seconds": 0} == {**second, "seconds": 0}
    third, loaded = _cli(args, env)
    assert loaded == [] and third == {**second, "seconds": third["seconds"]}


    build_env.docker.tag(build_env.base_image, first["tags"][1])  # :latest moved by another build
    moved, loaded = _cli(args, env)
    assert moved["cached"] and "pydantic" in loaded  # the full path, which puts :latest back
    assert build_env.docker.image_inspect(first["tags"][1])["Id"] == first["image_id"]

    (project / "cpuproj" / "__init__.py").write_text(f"VERSION = {time.time_ns()}\n")
    edited, loaded = _cli(args, env)
    assert not edited["cached"] and edited["image_id"] != first["image_id"] and "pydantic" in loaded

"""Unit tests for builds without Docker: keys, tags, ignore rules, context digests, progress parsing, and
build_image's control flow against a fake Docker boundary (the engine is the boundary, not our code)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from envbuilder.build.image import build_image
from envbuilder.build.key import base_images, build_key, slug
from envbuilder.build.progress import BuildProgress, is_step_header
from envbuilder.index.server import wheelhouse_port
from envbuilder.build.context import context_digest, ignore_patterns, ignore_spec, is_ignored, iter_context
from envbuilder.errors import DockerError
from envbuilder.resolve.plan import Plan, Target, TorchChoice, plan_digest
from envbuilder.render import RenderOptions
from envbuilder.settings import Settings
from support.fake_engine import FakeEngine
from support.certs import pem_certificates

CAPTURED = Path(__file__).parent / "support" / "captured"


def make_plan(**changes) -> Plan:
    values = dict(
        status="ok", python="3.11",
        torch=TorchChoice(version="2.13.0", flavor="cpu", local="2.13.0+cpu", index_url="https://download.pytorch.org/whl/cpu"),
        project_name="My Project", target=Target(os="linux", arch="x86_64"),
    )
    values.update(changes)
    return Plan(**values)


# --- names and keys ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, expected", [
    ("cpuproj", "cpuproj"), ("My Project", "my-project"), ("torch_demo.v2", "torch-demo-v2"),
    ("--weird__", "weird"), ("", "project"), ("ÜBER", "ber"), ("a" * 100, "a" * 64),
])
def test_slug_is_a_valid_repository_component(name, expected):
    assert slug(name) == expected


def test_build_key_is_stable_and_changes_with_each_input():
    base = build_key("FROM x\n", "ignore\n", "ctx", {"x": "sha256:1"})
    assert base == build_key("FROM x\n", "ignore\n", "ctx", {"x": "sha256:1"})
    assert len(base) == 64
    variants = [
        build_key("FROM x\nRUN true\n", "ignore\n", "ctx", {"x": "sha256:1"}),
        build_key("FROM x\n", "ignore\n.git\n", "ctx", {"x": "sha256:1"}),
        build_key("FROM x\n", "ignore\n", "ctx2", {"x": "sha256:1"}),
        build_key("FROM x\n", "ignore\n", "ctx", {"x": "sha256:2"}),
        build_key("FROM x\n", "ignore\n", "ctx", {"x": "absent"}),
    ]
    assert len({base, *variants}) == 6


def test_base_images_skips_stage_references_and_flags():
    text = (
        "# FROM commented:1\n"
        "FROM --platform=linux/amd64 python:3.11-slim AS base\n"
        "FROM base AS system\n"
        "from system as torch\n"
        "FROM other/img:2 \\\n  AS extra\n"
        "FROM scratch\n"
    )
    assert base_images(text) == ("python:3.11-slim", "other/img:2")


# --- ignore rules -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("patterns, path, ignored", [
    ([".git"], ".git", True),
    ([".git"], ".git/config", True),  # a matched folder takes everything below it
    ([".git"], "sub/.git", False),  # patterns are anchored at the context root
    (["**/__pycache__"], "a/b/__pycache__/x.pyc", True),
    (["**/__pycache__"], "__pycache__/x.pyc", True),  # "**/" also matches zero folders
    (["*.log"], "build.log", True),
    (["*.log"], "logs/build.log", False),  # "*" stays within one segment
    (["**/*.log"], "logs/deep/build.log", True),
    (["data", "!data/keep.txt"], "data/keep.txt", False),  # the last match wins
    (["data", "!data/keep.txt"], "data/other.txt", True),
    (["!data/keep.txt", "data"], "data/keep.txt", True),
    (["/abs//path/./x"], "abs/path/x", True),  # cleaned like filepath.Clean, leading slash dropped
    (["file?.txt"], "file1.txt", True),
    (["file?.txt"], "file10.txt", False),
    (["[a-c]*.txt"], "b.txt", True),
    (["[!a-c]*.txt"], "b.txt", False),
    (["*.py[cod]"], "x.pyc", True),
    (["[^a-c]*.txt"], "b.txt", False),  # Go's spelling of a negated class
    (["[^a-c]*.txt"], "d.txt", True),
    (["a/**/b"], "a/x/y/b/c.txt", True),
    (["docs/*.md"], "docs/sub/x.md", False),
])
def test_ignore_rules_follow_docker_semantics(patterns, path, ignored):
    assert is_ignored(path, ignore_spec(patterns)) is ignored


def test_ignore_patterns_are_defaults_then_the_projects(tmp_path):
    (tmp_path / ".dockerignore").write_text("# comment\n\ndata/\n!.git/keep\n")
    assert ignore_patterns(tmp_path, (".git", "*.tmp")) == (".git", "*.tmp", "data/", "!.git/keep")


def test_iter_context_prunes_ignored_folders(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "x").write_text("x")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("k")
    (tmp_path / "data" / "big.bin").write_text("b")
    paths = [p for p, _ in iter_context(tmp_path, [".git", "data", "!data/keep.txt"])]
    assert paths == ["data/keep.txt", "src", "src/a.py"]


# --- context digest ---------------------------------------------------------------------------------------
def _project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("x = 1\n")
    (root / "train.py").write_text("print('hi')\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    return root


def test_context_digest_tracks_contents_modes_and_names_but_not_ignored_files(tmp_path):
    root = _project(tmp_path)
    patterns = [".git", "*.tmp"]
    first = context_digest(root, patterns)
    assert context_digest(root, patterns) == first
    (root / ".git" / "HEAD").write_text("other\n")
    (root / "scratch.tmp").write_text("junk")
    assert context_digest(root, patterns) == first, "ignored files must not change the digest"
    (root / "train.py").write_text("print('bye')\n")
    second = context_digest(root, patterns)
    assert second != first
    os.chmod(root / "train.py", 0o755)
    third = context_digest(root, patterns)
    assert third != second
    (root / "train.py").rename(root / "main.py")
    assert context_digest(root, patterns) != third


def test_context_digest_cache_reuses_hashes_and_notices_edits(tmp_path):
    root = _project(tmp_path)
    cache = tmp_path / "cache.json"
    plain = context_digest(root, [".git"])
    assert context_digest(root, [".git"], cache=cache) == plain
    assert cache.is_file()
    assert context_digest(root, [".git"], cache=cache) == plain
    time.sleep(0.01)
    (root / "train.py").write_text("print('changed')\n")  # new size and mtime: rehashed
    assert context_digest(root, [".git"], cache=cache) == context_digest(root, [".git"]) != plain


def test_context_digest_is_fast_for_a_small_project(tmp_path):
    root = _project(tmp_path)
    for i in range(300):
        (root / "pkg" / f"m{i}.py").write_text(f"v = {i}\n" * 50)
    started = time.perf_counter()
    context_digest(root, [".git"], cache=tmp_path / "c.json")
    context_digest(root, [".git"], cache=tmp_path / "c.json")
    assert time.perf_counter() - started < 1.0


# --- progress ---------------------------------------------------------------------------------------------
def _step_titled(progress: BuildProgress, needle: str):
    return next((s for s in progress.steps if needle in s.title), None)


def test_progress_folds_a_captured_buildkit_log():
    progress = BuildProgress()
    for line in (CAPTURED / "buildkit-cpuproj.log").read_text().splitlines():
        progress.feed(line)
    steps = progress.steps
    torch = _step_titled(progress, "torch==2.13.0+cpu")
    assert torch is not None and torch.title.startswith("[torch 1/1] RUN")
    assert torch.status == "done" and torch.seconds == pytest.approx(12.6)
    assert _step_titled(progress, "[base 1/1] FROM").status == "cached"
    assert all(s.status in ("done", "cached") for s in steps)
    assert [s.number for s in steps] == sorted(s.number for s in steps)
    assert steps[-1].title == "exporting to image"


def test_progress_tracks_the_current_step_and_its_output():
    progress = BuildProgress()
    assert progress.feed("#5 [torch 1/1] RUN uv pip install torch") is not None
    progress.feed("#5 sha256:abc")
    progress.feed("#5 1.234 Downloading torch (182.9MiB)")
    assert progress.current.number == 5 and progress.last_output == "Downloading torch (182.9MiB)"
    failed = progress.feed("#5 ERROR: process did not complete successfully: exit code: 1")
    assert failed.status == "error"
    assert progress.feed("#99 DONE 1.0s") is None  # a step never announced is ignored


@pytest.mark.parametrize("line, header", [
    ("#7 [torch 1/1] RUN uv pip install", True), ("#7 DONE 12.6s", True), ("#7 CACHED", True),
    ("#7 ERROR: failed", True), ("#7 12.345 Downloading torch", False), ("#7 sha256:abc", False),
    ("#12 exporting to image", True), ("plain text", False),
])
def test_is_step_header(line, header):
    assert is_step_header(line) is header


# --- build_image against a fake engine --------------------------------------------------------------------
BUILD_LINES = ["#1 [base 1/1] FROM envbuilder/base-python:3.11-bookworm", "#1 CACHED",
               "#2 [torch 1/1] RUN uv pip install torch==2.13.0+cpu"]


def fake_docker(behaviour: str = "ok") -> FakeEngine:
    """The Docker boundary: a base image, and builds that replay lines or fail the way the CLI does."""
    engine = FakeEngine(build_lines=list(BUILD_LINES))
    engine.add_image("envbuilder/base-python:3.11-bookworm", "sha256:base")
    if behaviour == "interrupt":
        engine.build_error = KeyboardInterrupt()
    elif behaviour == "fail":
        engine.build_lines.append("#2 1.0 error: No solution found when resolving dependencies")
        engine.build_error = DockerError("dependency-unresolvable", "docker build failed: No solution found", "check the index")
    else:
        engine.build_lines.append("#2 DONE 3.0s")
    return engine


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.py").write_text("print('hi')\n")
    return root


def _build(project, tmp_path, docker, **kwargs):
    options = kwargs.pop("options", RenderOptions(base_image="envbuilder/base-python:3.11-bookworm"))
    return build_image(make_plan(), options, project_dir=project, settings=Settings(tmp_path / "home"),
                       docker=docker, **kwargs)


def test_second_build_is_cached_without_the_cli(project, tmp_path):
    docker = fake_docker()
    first = _build(project, tmp_path, docker)
    latest = first.image.split(":")[0] + ":latest"
    assert not first.cached and first.image.startswith("envbuilder/my-project-")  # a checkout digest follows
    assert first.image.endswith(first.build_key[:16])
    assert docker.images[latest]["Id"] == first.image_id
    assert first.log.is_file() and "torch==2.13.0+cpu" in first.log.read_text()
    assert first.steps[1].status == "done"
    second = _build(project, tmp_path, docker)
    assert second.cached and second.build_key == first.build_key and len(docker.builds) == 1
    assert second.log == first.log
    (project / "train.py").write_text("print('changed')\n")
    third = _build(project, tmp_path, docker)
    assert not third.cached and third.build_key != first.build_key


def test_the_ca_bundle_and_credentials_do_not_change_the_key(project, tmp_path):
    ca1, ca2 = tmp_path / "ca1.pem", tmp_path / "ca2.pem"
    one, two = pem_certificates(2)  # real PEM (a bundle OpenSSL cannot load is refused); markers outside the blocks
    ca1.write_text(one + "# CA-BYTES-ONE\n"), ca2.write_text(two + "# CA-BYTES-TWO\n")
    docker = fake_docker()
    a = _build(project, tmp_path, docker, ca_cert=ca1, proxies={"HTTPS_PROXY": "http://p:1"})
    b = _build(project, tmp_path, docker, ca_cert=ca2)
    assert b.cached and a.build_key == b.build_key
    request = docker.builds[0]
    assert request.secrets == {"ca": ca1.resolve()}
    assert request.build_args == {"HTTPS_PROXY": "http://p:1", "https_proxy": "http://p:1"}
    assert "CA-BYTES" not in Path(request.dockerfile).read_text()


def test_a_new_base_image_id_changes_the_key(project, tmp_path):
    docker = fake_docker()
    a = _build(project, tmp_path, docker)
    docker.images["envbuilder/base-python:3.11-bookworm"] = {"Id": "sha256:newbase"}
    b = _build(project, tmp_path, docker)
    assert not b.cached and a.build_key != b.build_key


def test_dockerfile_override_is_built_as_given(project, tmp_path):
    edited = tmp_path / "Dockerfile.edited"
    edited.write_text("FROM envbuilder/base-python:3.11-bookworm\nRUN echo edited\n")
    docker = fake_docker()
    built = _build(project, tmp_path, docker, dockerfile_override=edited)
    assert Path(docker.builds[0].dockerfile).read_text() == edited.read_text()
    ignore = Path(docker.builds[0].dockerfile).with_name("Dockerfile.dockerignore").read_text()
    assert ".git" in ignore
    assert _build(project, tmp_path, docker, dockerfile_override=edited).build_key == built.build_key


def test_local_find_links_are_served_and_force_host_network(project, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    docker = fake_docker()
    options = RenderOptions(base_image="envbuilder/base-python:3.11-bookworm", find_links=(str(wheels),))
    built = _build(project, tmp_path, docker, options=options)
    request = docker.builds[0]
    assert request.network == "host"
    text = Path(request.dockerfile).read_text()
    assert f"http://127.0.0.1:{wheelhouse_port(wheels)}/" in text and str(wheels) not in text
    assert _build(project, tmp_path, docker, options=options).build_key == built.build_key


def test_a_failed_build_names_its_log_and_keeps_the_previous_image(project, tmp_path):
    good = _build(project, tmp_path, fake_docker())
    docker = fake_docker("fail")
    latest = good.image.split(":")[0] + ":latest"
    docker.images.update({good.image: {"Id": good.image_id}, latest: {"Id": good.image_id}})
    (project / "train.py").write_text("print('changed')\n")
    with pytest.raises(DockerError) as err:
        _build(project, tmp_path, docker)
    log = Path(err.value.context["log"])
    assert err.value.code == "dependency-unresolvable" and str(log) in err.value.hint
    assert "No solution found" in log.read_text() and "failed" in log.read_text()
    assert docker.images[latest]["Id"] == good.image_id


def test_ctrl_c_keeps_the_log_and_applies_no_tag(project, tmp_path):
    docker = fake_docker("interrupt")
    with pytest.raises(KeyboardInterrupt):
        _build(project, tmp_path, docker)
    logs = list((tmp_path / "home" / "logs").glob("build-*.log"))
    assert len(logs) == 1 and logs[0].read_text().splitlines()[-1].startswith("# envbuilder: interrupted")
    assert not any(ref.startswith("envbuilder/my-project") for ref in docker.images)


def test_proxy_args_must_be_proxy_variables(project, tmp_path):
    from envbuilder.errors import EnvbuilderError

    with pytest.raises(EnvbuilderError) as err:
        _build(project, tmp_path, fake_docker(), proxies={"SECRET_TOKEN": "x"})
    assert err.value.code == "bad-proxy-arg"


def test_build_project_pins_python_to_the_base_images(tmp_path):
    """The API, like the CLI, resolves for the base image's Python when none is asked for (it used not to)."""
    import shutil

    from envbuilder.api import build_project
    from envbuilder.render.network import NetworkOptions
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags

    project = tmp_path / "cpuproj"
    shutil.copytree(Path(__file__).parent / "data" / "projects-build" / "cpuproj", project)
    docker = fake_docker()
    docker.images["py312-base"] = {"Id": "sha256:b312", "Config": {"Labels": {"org.envbuilder.python": "3.12"}}}
    flags = TargetFlags(os="linux", arch="x86_64", gpu="none")
    settings = Settings(tmp_path / "home")
    offline = ResolveRequest(offline=True)  # the dependency check is tested in test_resolve_installs.py
    pinned = build_project(str(project), flags=flags, request=offline, network=NetworkOptions(base_image="py312-base"),
                           settings=settings, engine=docker)
    assert pinned.plan.python == "3.12" and pinned.image.plan_hash == plan_digest(pinned.plan)
    assert "FROM py312-base" in Path(docker.builds[0].dockerfile).read_text()
    asked = build_project(str(project), flags=flags, request=ResolveRequest(python="3.11", offline=True),
                          network=NetworkOptions(base_image="py312-base"), settings=settings, engine=docker)
    assert asked.plan.python == "3.11"  # an explicit Python is the user's: kept, even against the base
    unbased = build_project(str(project), flags=flags, request=offline, settings=settings, engine=docker)
    assert unbased.plan.python not in ("3.11", "3.12")  # the matrix's newest: what a base image must override


# --- base image helpers (pure parts) ----------------------------------------------------------------------
def test_python_in_rootfs_reads_the_python3_link(tmp_path):
    from envbuilder.build.base import python_in_rootfs

    (tmp_path / "usr" / "bin").mkdir(parents=True)
    assert python_in_rootfs(tmp_path) is None
    (tmp_path / "usr" / "bin" / "python3").symlink_to("python3.11")
    assert python_in_rootfs(tmp_path) == "3.11"


def test_base_python_prefers_labels_then_env(tmp_path):
    from envbuilder.build.base import base_python

    images = FakeEngine()
    images.add_image("labelled", labels={"org.envbuilder.python": "3.12"})
    images.add_image("official", env=["PATH=/usr/bin", "PYTHON_VERSION=3.10.14"])

    assert base_python(images, "labelled") == "3.12"
    assert base_python(images, "official") == "3.10"
    with pytest.raises(DockerError) as err:
        base_python(images, "missing")
    assert err.value.code == "image-not-found"


def test_bootstrap_needs_debootstrap(monkeypatch, tmp_path):
    import envbuilder.build.base as base

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without debootstrap
    with pytest.raises(base.EnvbuilderError) as err:
        base.bootstrap_base(FakeEngine())
    assert err.value.code == "debootstrap-missing" and "apt-get install debootstrap" in err.value.hint


# --- CLI --------------------------------------------------------------------------------------------------
def test_build_help_lists_its_options(cli):
    result = cli("build", "--help")
    assert result.exit_code == 0
    for flag in ("--dockerfile", "--no-cache", "--json", "--base-image", "--find-links", "--ca-cert", "--tag"):
        assert flag in result.stdout


def test_base_help(cli):
    result = cli("base", "bootstrap", "--help")
    assert result.exit_code == 0 and "--suite" in result.stdout and "--mirror" in result.stdout


def test_cached_ignore_rules_spare_a_noop_build_importing_pathspec(tmp_path):
    import subprocess
    import sys

    root = _project(tmp_path)
    cache = tmp_path / "cache" / "context.json"
    first = context_digest(root, [".git", "*.tmp"], cache=cache)
    assert context_digest(root, [".git"], cache=cache) == first  # the cached rules follow the patterns
    assert context_digest(root, ["*.tmp"], cache=cache) != first
    context_digest(root, [".git", "*.tmp"], cache=cache)
    code = ("import sys; from pathlib import Path; from envbuilder.build.context import context_digest; "
            f"d = context_digest(Path({str(root)!r}), ['.git', '*.tmp'], cache=Path({str(cache)!r})); "
            "print(d, 'pathspec' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [first, "False"]

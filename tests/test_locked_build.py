"""Locked builds: a requirements lock (`envbuilder lock --format requirements`) installs exactly its files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from support.fixtures import HOST_CA, copy_project, run_in_image

from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.plan import Plan, Target, TorchChoice
from envbuilder.render import RenderOptions
from envbuilder.render.dockerfile import render_dockerfile
from envbuilder.render.lock import check_lock, read_lock, render_lock
from envbuilder.render.network import LockedPackage

GOLDEN = Path(__file__).parent / "golden"
HADOLINT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "hadolint"

PLAN = Plan(status="ok", python="3.11", target=Target(os="linux", arch="x86_64"), project_name="demo",
            torch=TorchChoice(version="2.13.0", flavor="cpu", local="2.13.0+cpu", index_url="https://download.pytorch.org/whl/cpu"),
            dependencies=("numpy>=1.26",))
LOCK = (
    LockedPackage(name="torch", version="2.13.0+cpu", hashes=("sha256:" + "a" * 64,)),
    LockedPackage(name="numpy", version="2.3.4", hashes=("sha256:" + "b" * 64, "sha256:" + "c" * 64)),
)


def test_a_rendered_requirements_lock_reads_back():
    text = render_lock(PLAN, RenderOptions(), LOCK, format="requirements")
    assert read_lock(text) == tuple(sorted(LOCK, key=lambda p: p.name))


def test_the_golden_cu128_lock_reads():
    packages = read_lock((GOLDEN / "cu128.requirements.txt").read_text())
    assert {p.name for p in packages} >= {"torch", "filelock"} and all(p.hashes for p in packages)


@pytest.mark.parametrize("lock,code", [
    ((LockedPackage(name="torch", version="2.13.0+cpu"),), "lock-unhashed"),
    ((LockedPackage(name="torch", version="2.12.1+cpu", hashes=("sha256:" + "a" * 64,)),), "lock-stale"),
    ((LockedPackage(name="numpy", version="2.3.4", hashes=("sha256:" + "a" * 64,)),), "lock-stale"),
    ((), "lock-invalid"),
])
def test_locks_that_do_not_install_the_plan_are_refused(lock, code):
    with pytest.raises(EnvbuilderError) as info:
        check_lock(PLAN, lock)
    assert info.value.code == code


def test_locked_dockerfile_installs_by_hash_without_resolving(tmp_path):
    text = render_dockerfile(PLAN, RenderOptions(base_image="envbuilder/base-python:3.11-bookworm", ca_cert=True), check_lock(PLAN, LOCK))
    torch_stage = text.split("AS torch")[1].split("AS dependencies")[0]
    deps_stage = text.split("AS dependencies")[1].split("AS project")[0]
    assert "--require-hashes --no-deps" in torch_stage and "torch==2.13.0+cpu --hash=sha256:" in torch_stage
    assert "numpy" not in torch_stage
    assert "numpy==2.3.4 --hash=sha256:" + "b" * 64 + " --hash=sha256:" + "c" * 64 in deps_stage
    assert "numpy>=1.26" not in torch_stage + deps_stage  # the lock replaces the project's ranges
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    lint = subprocess.run([str(HADOLINT), "--failure-threshold", "warning", str(dockerfile)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_render_refuses_a_lock_for_scripts(cli, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "d"\nversion = "0"\ndependencies = ["torch"]\n')
    lock = tmp_path / "lock.txt"
    lock.write_text("torch==2.13.0+cpu --hash=sha256:" + "a" * 64 + "\n")
    result = cli("render", str(tmp_path), "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64",
                 "--format", "bash", "--lock", str(lock))
    assert result.exit_code == 2 and "lock-not-for-scripts" in result.stderr


@pytest.mark.docker
def test_lock_then_build_installs_exactly_the_locked_versions(build_env, cli, tmp_path):
    project = copy_project("cpuproj", tmp_path)
    common = ["--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11",
              "--torch-index-url", build_env.torch_index_url, "--ca-cert", str(HOST_CA)]
    lock = tmp_path / "cpuproj.lock.txt"
    made = cli("lock", str(project), *common, "--format", "requirements", "-o", str(lock))
    assert made.exit_code == 0, made.stderr
    locked = {p.name: p.version for p in read_lock(lock.read_text())}
    assert locked["torch"] == "2.13.0+cpu" and "onnxruntime" in locked

    built = cli("build", str(project), *common, "--base-image", build_env.base_image, "--network", "host",
                "--lock", str(lock), "--json")
    assert built.exit_code == 0, built.stderr[-3000:]
    image = json.loads(built.stdout)["image"]
    code, output = run_in_image(build_env.docker, image, ["python", "-c",
        "import json, importlib.metadata as m; print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"])
    assert code == 0, output
    installed = {canonicalize_name(n): v for n, v in json.loads(output.strip().splitlines()[-1]).items()}
    for name, version in locked.items():
        assert installed.get(canonicalize_name(name)) == version, (name, version, installed.get(canonicalize_name(name)))

    (lock.parent / "stale.txt").write_text(lock.read_text().replace("torch==2.13.0+cpu", "torch==2.12.1+cpu"))
    stale = cli("build", str(project), *common, "--base-image", build_env.base_image, "--lock", str(lock.parent / "stale.txt"))
    assert stale.exit_code != 0 and "lock-stale" in stale.stderr and "Traceback" not in stale.stderr


@pytest.mark.parametrize("options", [
    RenderOptions(index_url="https://alice:s3cr3t@pypi.example.com/simple"),
    RenderOptions(torch_index_url="https://token@mirror.example.com/torch/cpu"),
    RenderOptions(extra_index_urls=("https://u:p@extra.example.com/simple",)),
])
def test_urls_with_credentials_never_reach_a_dockerfile_or_a_lock(options):
    for render in (lambda: render_dockerfile(PLAN, options), lambda: render_lock(PLAN, options, LOCK)):
        with pytest.raises(EnvbuilderError) as info:
            render()
        assert info.value.code == "credentials-in-url"
        assert "s3cr3t" not in str(info.value) and "token@" not in str(info.value) and "u:p@" not in str(info.value)


def test_a_git_url_token_is_redacted_in_every_record():
    from envbuilder.redact import redact_url

    assert redact_url("https://alice:ghp_SECRET@github.com/org/repo") == "https://***@github.com/org/repo"
    assert redact_url("https://ghp_TOKEN@github.com/org/repo") == "https://***@github.com/org/repo"
    assert redact_url("git@github.com:org/repo.git") == "git@github.com:org/repo.git"

"""`build --push`, reuse and the registry cache against a REAL registry on loopback (Debian's docker-registry,
tests/support/registry.py): one instance with htpasswd basic auth, one with TLS from a test CA.

Tiny images on the local base (a Dockerfile override: one RUN step and the project's files), so each push moves
a few KB after the first. Docker's credentials go to a DOCKER_CONFIG of the test's own.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest
from support.registry import CERTS_D, LocalRegistry, unavailable

pytestmark = pytest.mark.docker
BASE = "envbuilder/base-python:3.11-bookworm"
TARGET = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11")


@pytest.fixture
def docker_config(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


@pytest.fixture
def auth_registry(tmp_path, base_image):
    why = unavailable(auth=True)
    if why:
        pytest.fail(why)  # a docker test is never skipped silently: scripts/system-deps.sh installs it
    with LocalRegistry(tmp_path / "registry-auth", user="ci", password=f"pw-{uuid.uuid4().hex}") as registry:
        yield registry


@pytest.fixture
def tls_registry(tmp_path, base_image):
    why = unavailable(tls=True)
    if why:
        pytest.fail(why)
    with LocalRegistry(tmp_path / "registry-tls", tls=True) as registry:
        yield registry
        shutil.rmtree(CERTS_D / registry.host, ignore_errors=True)  # what `login --ca-cert` installed


def tiny_project(root: Path) -> tuple[Path, Path]:
    """A project and a Dockerfile with one RUN step unique to this session (nothing cached from earlier runs)."""
    project = root / "tiny"
    project.mkdir(parents=True)
    (project / "requirements.txt").write_text("")
    (project / "train.py").write_text("print('v1')\n")
    dockerfile = root / "Dockerfile.tiny"
    dockerfile.write_text(f"FROM {BASE}\nRUN echo {uuid.uuid4().hex} > /marker && sleep 2\n"
                          "COPY . /workspace/project\nWORKDIR /workspace/project\n")
    return project, dockerfile


def login(cli, monkeypatch, registry: LocalRegistry, *extra: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO((registry.password or "anything") + "\n"))
    return cli("login", registry.host, "-u", registry.user or "anyone", "--password-stdin", *extra)


def forget_images(docker, image_id: str) -> None:
    """Remove the image and every tag it has, as a fresh machine would not have it."""
    docker.remove_image(image_id, force=True)
    assert docker.image_inspect(image_id) is None


def test_push_then_reuse_then_registry_cache(cli, tmp_path, monkeypatch, docker_config, auth_registry, docker_engine):
    project, dockerfile = tiny_project(tmp_path)
    repo = f"{auth_registry.host}/team/tiny"
    build = ("build", str(project), *TARGET, "--dockerfile", str(dockerfile), "--push", repo,
             "--cache-from", f"{repo}:buildcache", "--cache-to", f"{repo}:buildcache", "--json")

    denied = cli(*build)
    assert denied.exit_code == 4 and "registry-auth" in denied.stderr and "envbuilder login" in denied.stderr
    logged_in = login(cli, monkeypatch, auth_registry)
    assert logged_in.exit_code == 0, logged_in.stderr
    assert auth_registry.password not in (docker_config / "config.json").read_text()  # base64, but never plain

    first = cli(*build)
    assert first.exit_code == 0, first.stderr
    built = json.loads(first.stdout)
    tag = f"{repo}:{built['build_key'][:16]}"
    assert built["reused"] is None and built["pushed"] == [tag] and built["digest"].startswith("sha256:")
    assert auth_registry.has_tag("team/tiny", built["build_key"][:16]) and auth_registry.has_tag("team/tiny", "buildcache")
    log = Path(built["log"]).read_text()
    assert auth_registry.password not in log

    forget_images(docker_engine, built["image_id"])
    again = cli(*build)
    assert again.exit_code == 0, again.stderr
    reused = json.loads(again.stdout)
    assert reused["reused"] == tag and reused["log"] is None  # pulled: no build step ran
    assert reused["image_id"] == built["image_id"] and reused["digest"] == built["digest"]
    forget_images(docker_engine, built["image_id"])
    human = cli(*build[:-1])
    assert f"reused {tag} (built elsewhere)" in human.stdout

    # A changed source file: a new key, no image here; the build reads the registry cache and the unchanged
    # RUN layer is not run again. (On this shared engine its local BuildKit cache could serve that layer too:
    # dockerd 20.10 ignores `builder prune --filter id=`, so only a fresh engine isolates the registry's part.)
    (project / "train.py").write_text("print('v2')\n")
    forget_images(docker_engine, built["image_id"])
    changed = cli(*build)
    assert changed.exit_code == 0, changed.stderr
    result = json.loads(changed.stdout)
    assert result["build_key"] != built["build_key"] and result["reused"] is None
    lines = Path(result["log"]).read_text().splitlines()
    assert any("importing cache manifest from" in line and f"{repo}:buildcache" in line for line in lines), lines
    run_step = next(line.split()[0] for line in lines if "RUN echo" in line and line.startswith("#"))
    assert f"{run_step} CACHED" in lines, lines  # the unchanged layer was reused, not run again

    # run --image REGISTRY/REPO@digest pulls what is not here
    forget_images(docker_engine, result["image_id"])
    ran = cli("run", str(project), "--image", f"{repo}@{result['digest']}", "--gpus", "none", "--",
              "python", "train.py")
    assert ran.exit_code == 0, ran.stderr
    assert "v2" in ran.stdout + ran.stderr


def test_a_tls_registry_with_a_private_ca(cli, tmp_path, monkeypatch, docker_config, tls_registry):
    """The registry speaks TLS only, with a certificate from a test CA; `login --ca-cert` installs the CA where
    the engine reads it. (dockerd skips verification for 127.0.0.0/8 registries, which it treats as insecure,
    so an untrusted certificate cannot fail here: registry_errors' hint for that is unit-tested.)"""
    project, dockerfile = tiny_project(tmp_path)
    repo = f"{tls_registry.host}/tiny"
    logged_in = login(cli, monkeypatch, tls_registry, "--ca-cert", str(tls_registry.ca))
    assert logged_in.exit_code == 0, logged_in.stderr
    assert (CERTS_D / tls_registry.host / "ca.crt").read_bytes() == tls_registry.ca.read_bytes()
    pushed = cli("build", str(project), *TARGET, "--dockerfile", str(dockerfile), "--push", repo, "--json")
    assert pushed.exit_code == 0, pushed.stderr
    assert tls_registry.has_tag("tiny", json.loads(pushed.stdout)["build_key"][:16])

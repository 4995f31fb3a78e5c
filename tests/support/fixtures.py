"""pytest fixtures for real builds: the bootstrapped base, a loopback torch index, one shared CPU image.

conftest.py can import these (`from support.fixtures import *`) so every test module can use them; the
build test modules import the ones they use directly.
The first CPU build installs torch (a minute or two); every test that needs an image shares the
session's one build. Machine facts they rely on: /opt/wheels holds torch 2.13.0+cpu for cp311, PyPI is
reachable through an intercepting proxy whose CA is the host bundle, download.pytorch.org is not.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from envbuilder.index.server import IndexServer, stable_port

BUILD_PROJECTS = Path(__file__).resolve().parents[1] / "data" / "projects-build"
CPU_WHEELS = Path(os.environ.get("ENVBUILDER_TEST_WHEELS", "/opt/wheels"))
CUDA_INDEX_ROOT = Path(os.environ.get("ENVBUILDER_TEST_CUDA_INDEX", "/opt/pypi-more"))
HOST_CA = Path(os.environ.get("ENVBUILDER_TEST_CA", "/etc/ssl/certs/ca-certificates.crt"))
CPU_TARGET = dict(os="linux", arch="x86_64", gpu="none")


@dataclass(frozen=True)
class BuildEnv:
    """What a test build needs: where state goes, the base, the torch index and the CA bundle."""

    settings: object  # envbuilder.settings.Settings
    docker: object  # envbuilder.docker.engine.Docker
    base_image: str
    torch_index_url: str
    ca_cert: Path | None

    def options(self, **overrides):
        from envbuilder.render import RenderOptions

        values = dict(base_image=self.base_image, torch_index_url=self.torch_index_url)
        values.update(overrides)
        return RenderOptions(**values)

    def plan(self, project_dir: Path, **request):
        from envbuilder.api import plan_project
        from envbuilder.resolve.plan import ResolveRequest, TargetFlags

        request.setdefault("python", "3.11")
        request.setdefault("offline", True)  # the CLI's default in tests too (conftest's ENVBUILDER_OFFLINE)
        # Planned against the loopback mirror, as `envbuilder build --torch-index-url` plans: the plan names the
        # index it installs from, so the same inputs give the CLI's image key.
        _, plan = plan_project(str(project_dir), flags=TargetFlags(**CPU_TARGET), request=ResolveRequest(**request),
                               settings=self.settings, torch_index=self.torch_index_url)
        return plan

    def build(self, plan, project_dir: Path, **kwargs):
        from envbuilder.build.image import build_image

        options = kwargs.pop("options", None) or self.options()
        kwargs.setdefault("network", "host")
        kwargs.setdefault("ca_cert", self.ca_cert)
        return build_image(plan, options, project_dir=project_dir, settings=self.settings, docker=self.docker, **kwargs)


def copy_project(name: str, dest: Path) -> Path:
    """A writable copy of a fixture project (tests edit sources to check cache behaviour)."""
    target = dest / name
    shutil.copytree(BUILD_PROJECTS / name, target)
    return target


@pytest.fixture(scope="session")
def docker_engine():
    """The Docker wrapper for the session; fails (never skips) when no engine answers.

    The images envbuilder builds during the session (its build-key label) are removed at its end: every session
    builds into new checkouts (temporary folders) and nonce'd sources, about 1 GB of new layers each time, which
    filled a 100 GB disk in a few dozen runs. Images that were there before are kept; so is BuildKit's cache,
    which makes the next session's builds quick. ENVBUILDER_TEST_KEEP_IMAGES=1 keeps them all (to look at one)."""
    from envbuilder.docker.engine import Docker
    from envbuilder.imagelayout import LABEL_BUILD_KEY

    docker = Docker()
    docker.client  # noqa: B018 - connect now, so a missing engine fails here with its diagnosis
    before = {image["Id"] for image in docker.images_labelled(LABEL_BUILD_KEY)}
    yield docker
    if os.environ.get("ENVBUILDER_TEST_KEEP_IMAGES") == "1":
        return
    for image in docker.images_labelled(LABEL_BUILD_KEY):
        if image["Id"] not in before:
            try:
                docker.remove_image(image["Id"], force=True)
            except Exception as exc:  # noqa: BLE001 - in use by another session's container: kept, and said
                print(f"kept {image['Id'][:19]}: {exc}")


@pytest.fixture(scope="session")
def base_image(docker_engine) -> str:
    """The debootstrapped Python 3.11 base (made once per machine: ~1 min, then reused)."""
    from envbuilder.build.base import bootstrap_base

    return bootstrap_base(docker_engine).name


@pytest.fixture(scope="session")
def torch_cpu_index():
    """A loopback PEP 503 index serving /opt/wheels, standing in for download.pytorch.org/whl/cpu.

    The port is derived from the folder, so rendered Dockerfiles (and Docker's layer cache) stay the same
    from one session to the next.
    """
    if not any(CPU_WHEELS.glob("torch-*.whl")):
        pytest.fail(f"no torch wheel in {CPU_WHEELS} (set ENVBUILDER_TEST_WHEELS)")
    with IndexServer([CPU_WHEELS], port=stable_port(str(CPU_WHEELS))) as server:
        yield server


@pytest.fixture(scope="session")
def build_env(tmp_path_factory, docker_engine, base_image, torch_cpu_index) -> BuildEnv:
    from envbuilder.settings import Settings

    home = tmp_path_factory.mktemp("envbuilder-home")
    return BuildEnv(Settings(home), docker_engine, base_image, torch_cpu_index.url,
                    HOST_CA if HOST_CA.is_file() else None)


@pytest.fixture(scope="session")
def cpuproj_dir(tmp_path_factory) -> Path:
    return copy_project("cpuproj", tmp_path_factory.mktemp("projects"))


@pytest.fixture(scope="session")
def cpuproj_plan(build_env, cpuproj_dir):
    return build_env.plan(cpuproj_dir)


@pytest.fixture(scope="session")
def cpuproj_image(build_env, cpuproj_dir, cpuproj_plan):
    """The session's one CPU image of cpuproj (torch 2.13.0+cpu, onnxruntime from PyPI through the CA)."""
    return build_env.build(cpuproj_plan, cpuproj_dir)


def run_in_image(docker, image: str, command: list[str]) -> tuple[int, str]:
    """Run a command in a throwaway container of the image; (exit code, output)."""
    code, lines = docker.run_once(image, command)
    return code, "\n".join(lines)


__all__ = [
    "BuildEnv", "base_image", "build_env", "copy_project", "cpuproj_dir", "cpuproj_image", "cpuproj_plan",
    "docker_engine", "run_in_image", "torch_cpu_index",
]

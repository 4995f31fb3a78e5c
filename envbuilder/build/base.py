"""Base images without a registry: a Python root filesystem from Debian packages, imported into Docker.

Air-gapped hosts (or hosts whose registry is unreachable) cannot pull `python:3.11-slim`. Debian's own
packages can still arrive from a mirror, so `bootstrap_base` runs `debootstrap --variant=minbase` with
Python, venv, pip and CA certificates, and `docker import`s the tree as a labelled image. `base_python`
learns the X.Y Python of any base image, so a user-chosen base pins the plan's Python.
Must not import the CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.docker.engine import Engine
from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.proc import run_command
from envbuilder.imagelayout import LABEL_BASE, LABEL_PROBE, LABEL_PYTHON

if TYPE_CHECKING:
    from envbuilder.resolve.plan import ResolveRequest

DEFAULT_SUITE = "bookworm"
# Debian release -> the python3 it ships (packages.debian.org: python3-defaults).
SUITE_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
# minbase is Essential packages + apt. passwd (useradd) is "required", not Essential, so it is added
# for the image's non-root user; python-is-python3 gives `python`, as the python:X.Y images have.
BASE_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "passwd", "python-is-python3")
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
DEBOOTSTRAP_TIMEOUT_S = 1800

_PYTHON_PROBE = "import sys; print('%d.%d' % sys.version_info[:2])"


@dataclass(frozen=True)
class BaseImage:
    name: str
    python: str  # "3.11"
    created: bool  # False: it already existed and was reused

    def to_json(self) -> dict:
        return {"image": self.name, "python": self.python, "created": self.created}


def default_base_name(suite: str = DEFAULT_SUITE) -> str:
    python = SUITE_PYTHON.get(suite, "3")
    return f"envbuilder/base-python:{python}-{suite}"


def bootstrap_base(
    docker: Engine,
    *,
    suite: str = DEFAULT_SUITE,
    name: str | None = None,
    mirror: str | None = None,
    on_line: Callable[[str], None] | None = None,
) -> BaseImage:
    """Make (once) a local Python base image from Debian packages. Idempotent: an existing one is returned."""
    name = name or default_base_name(suite)
    existing = docker.image_inspect(name)
    if existing is not None:
        labels = (existing.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_BASE):
            return BaseImage(name, labels.get(LABEL_PYTHON) or base_python(docker, name), created=False)
        raise EnvbuilderError(
            "base-name-taken",
            f"{name} exists but was not made by `envbuilder base bootstrap`",
            "pass --name for another image name, or remove that image",
        )
    _check_can_bootstrap()

    say = on_line or (lambda _line: None)
    workdir = Path(tempfile.mkdtemp(prefix="envbuilder-base-"))
    rootfs = workdir / "rootfs"
    try:
        argv = ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", suite, str(rootfs)]
        if mirror:
            argv.append(mirror)
        say(f"$ {' '.join(argv)}")
        result = run_command(argv, timeout=DEBOOTSTRAP_TIMEOUT_S, on_line=say)
        if not result.ok:
            raise EnvbuilderError(
                "debootstrap-failed",
                f"debootstrap {suite} failed: {result.tail(1) or 'no output'}",
                "check that a Debian mirror is reachable (pass --mirror URL) and read "
                f"{rootfs}/debootstrap/debootstrap.log",
                context={"tail": result.tail(30)},
            )
        python = python_in_rootfs(rootfs) or SUITE_PYTHON.get(suite)
        if not python:
            raise EnvbuilderError("base-no-python", f"no python3 found in the {suite} root filesystem")
        _slim(rootfs)
        tarball = workdir / "rootfs.tar"
        say(f"packing {rootfs} into {tarball}")
        # /dev, /proc and /sys are the engine's to provide at run time.
        packed = run_command(
            ["tar", "--numeric-owner", "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
             "-C", str(rootfs), "-cf", str(tarball), "."],
            timeout=600,
        )
        if not packed.ok:
            raise EnvbuilderError("base-pack-failed", f"tar failed: {packed.tail(3)}")
        changes = [f"ENV {key}={value}" for key, value in BASE_ENV.items()]
        changes += [f'LABEL {LABEL_PYTHON}="{python}" {LABEL_BASE}="debootstrap-{suite}"', 'CMD ["python3"]']
        say(f"importing {name}")
        docker.import_image(tarball, name, changes=changes)
        return BaseImage(name, python, created=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def python_in_rootfs(rootfs: Path) -> str | None:
    """X.Y of the root filesystem's python3, read from the /usr/bin/python3 -> python3.X link (no chroot)."""
    link = rootfs / "usr" / "bin" / "python3"
    try:
        target = os.readlink(link)
    except OSError:
        return None
    match = re.fullmatch(r"(?:.*/)?python(\d+\.\d+)", target)
    return match.group(1) if match else None


def base_python(docker: Engine, image: str) -> str:
    """The X.Y Python of a local base image: its label, its PYTHON_VERSION env, else ask python3 inside it."""
    info = docker.image_inspect(image)
    if info is None:
        raise DockerError(
            "image-not-found",
            f"base image {image} is not available locally",
            "build or load it first; without a registry use `envbuilder base bootstrap`",
        )
    config = info.get("Config") or {}
    label = (config.get("Labels") or {}).get(LABEL_PYTHON)
    if label:
        return label
    for item in config.get("Env") or ():
        key, _, value = item.partition("=")
        if key == "PYTHON_VERSION" and re.match(r"\d+\.\d+", value):  # the python:X.Y images set it
            return ".".join(value.split(".")[:2])
    return _ask_python(docker, image)


def pin_base_python(request: ResolveRequest, base_image: str | None, docker: Engine) -> ResolveRequest:
    """With a base image and no Python asked for, the base decides the interpreter: resolve for it rather
    than fail the image's Python check mid-build. A Python the user asked for is kept."""
    if not base_image or request.python is not None:
        return request
    return request.model_copy(update={"python": base_python(docker, base_image)})


def _ask_python(docker: Engine, image: str) -> str:
    code, lines = docker.run_once(image, ["python3", "-c", _PYTHON_PROBE], labels={LABEL_PROBE: "python"})
    version = next((ln.strip() for ln in reversed(lines) if re.fullmatch(r"\d+\.\d+", ln.strip())), None)
    if code != 0 or version is None:
        raise EnvbuilderError(
            "base-no-python",
            f"could not run python3 in {image}: {(lines or ['no output'])[-1]}",
            "a base image needs python3 on PATH; pass --python X.Y to say which one it has",
        )
    return version


def _check_can_bootstrap() -> None:
    if shutil.which("debootstrap") is None:
        raise EnvbuilderError(
            "debootstrap-missing",
            "debootstrap is not installed",
            "install it (`sudo apt-get install debootstrap`), or pass --base-image with a Python image you have",
        )
    if os.geteuid() != 0:
        raise EnvbuilderError(
            "base-needs-root",
            "debootstrap must run as root (it creates device nodes and chroots)",
            "rerun with sudo: `sudo envbuilder base bootstrap`",
        )


def _slim(rootfs: Path) -> None:
    """Drop what only the bootstrap needed: downloaded .debs, apt lists and caches, logs."""
    for sub in ("var/cache/apt/archives", "var/lib/apt/lists", "var/cache/debconf", "var/log"):
        folder = rootfs / sub
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.name in ("partial", "lock"):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            elif sub != "var/cache/debconf" or entry.name.endswith("-old"):
                entry.unlink(missing_ok=True)
    for leftover in rootfs.glob("var/cache/apt/*.bin"):
        leftover.unlink(missing_ok=True)

"""The wheelhouse of a built image: which packages the image's plan installed (read from inside the image), the
platform tags its interpreter accepts, and downloading exactly those wheels with `pip download`.

Why pip and why these pins: uv has no download command, and the wheels a bundle carries must be the versions
the image really holds, not what a fresh resolve would pick today (a release since the build would split the
image from its wheelhouse). So the image reports its own distributions (`inspect_image_packages`), and pip
downloads those exact pins for the image's Python and platform (`--only-binary :all: --no-deps`), through the
same indexes, CA bundle and proxies as the build. With a hashed lock (`envbuilder lock --format requirements`),
pip checks every file against it (`--require-hashes`). Must not import the CLI or api.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.errors import EnvbuilderError
from envbuilder.render.network import LockedPackage
from envbuilder.resolve.served import parse_wheel_filename

if TYPE_CHECKING:
    from envbuilder.docker.engine import Engine

DOWNLOAD_TIMEOUT_S = 3600.0
# What `python -m venv` and the Dockerfile's bootstrap put in the venv with pip, before the plan's installs:
# the installer and its own tools, not packages the plan asked for (a setuptools that torch needs is installed
# by uv, and stays).
BOOTSTRAP = frozenset({"pip", "setuptools", "wheel", "uv"})

# Runs inside the image, offline: the interpreter, its platform, and every installed distribution with the
# tool that installed it (the INSTALLER file, PEP 376) and whether it came from a local folder (PEP 610
# dir_info: the project itself), as one JSON line.
_REPORT_SCRIPT = """\
import json, platform, sys
from importlib import metadata
dists = []
for d in metadata.distributions():
    url = d.read_text("direct_url.json")
    dists.append([d.metadata["Name"], d.version, (d.read_text("INSTALLER") or "").strip(),
                  "dir_info" in json.loads(url) if url else False])
print(json.dumps({"python": "%d.%d" % sys.version_info[:2], "machine": platform.machine(),
                  "libc": list(platform.libc_ver()), "dists": sorted(dists)}))
"""


@dataclass(frozen=True)
class ImagePackages:
    """What an image's interpreter is and what the plan installed into it."""

    python: str  # "3.11"
    machine: str  # "x86_64", "aarch64"
    glibc: str | None  # "2.36"; None on a libc that is not glibc
    packages: tuple[tuple[str, str], ...]  # (name, version) the plan installed, the project itself left out
    installer: str | None  # the uv version the venv's bootstrap installed, when there is one

    def pins(self) -> tuple[str, ...]:
        return tuple(f"{name}=={version}" for name, version in self.packages)


def inspect_image_packages(docker: Engine, image: str) -> ImagePackages:
    """Run the report script in a throwaway container of `image` (no network) and read it."""
    code, lines = docker.run_once(image, ["python", "-c", _REPORT_SCRIPT], network="none")
    report = next((line for line in reversed(lines) if line.startswith("{")), None)
    if code != 0 or report is None:
        tail = " | ".join(lines[-3:]) or "no output"
        raise EnvbuilderError("bundle-image-unreadable", f"could not list the packages in {image}: {tail}",
                              "the image needs `python` on PATH (envbuilder images have it)")
    return parse_image_report(report)


def parse_image_report(text: str) -> ImagePackages:
    """The report script's JSON as ImagePackages: the venv bootstrap and folder installs left out. Pure."""
    data = json.loads(text)
    packages: list[tuple[str, str]] = []
    installer = None
    for name, version, tool, from_folder in data["dists"]:
        if tool == "pip" and _normal(name) in BOOTSTRAP:
            if _normal(name) == "uv":
                installer = version
            continue
        if from_folder:
            continue  # the project itself (or another local folder): it travels in the image, not as a wheel
        packages.append((name, version))
    libc_name, libc_version = (data.get("libc") or ["", ""])[:2]
    return ImagePackages(python=data["python"], machine=data["machine"],
                         glibc=libc_version if libc_name == "glibc" and libc_version else None,
                         packages=tuple(sorted(packages, key=lambda p: _normal(p[0]))), installer=installer)


def platform_tags(machine: str, glibc: str | None) -> tuple[str, ...]:
    """Every platform tag a wheel may carry to install on this Linux machine, newest glibc first. Pure.

    pip's --platform takes tags literally (it widens only the legacy manylinux2014/2010 names), so each
    manylinux_2_N from the image's glibc down to 2_5 is listed, with the legacy aliases (PEP 600)."""
    tags: list[str] = []
    if glibc:
        major, _, minor = glibc.partition(".")
        if major == "2" and minor.isdigit():
            tags += [f"manylinux_2_{n}_{machine}" for n in range(int(minor), 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            tags += [f"{name}_{machine}" for n, name in legacy.items() if int(minor) >= n]
    tags.append(f"linux_{machine}")
    return tuple(tags)


def pip_download_argv(dest: Path, requirements: Path, python: str, tags: Sequence[str], *, hashed: bool,
                      ca_cert: Path | None, pip_python: str | None = None) -> list[str]:
    """`pip download` of exactly the listed files for the image's CPython and platform. Pure."""
    digits = python.replace(".", "")
    argv = [pip_python or sys.executable, "-m", "pip", "download", "--isolated", "--disable-pip-version-check",
            "--no-deps", "--only-binary", ":all:", "--dest", str(dest), "--python-version", python,
            "--implementation", "cp", "--abi", f"cp{digits}"]
    for tag in tags:
        argv += ["--platform", tag]
    if ca_cert is not None:
        argv += ["--cert", str(ca_cert)]
    if hashed:
        argv.append("--require-hashes")
    return [*argv, "-r", str(requirements)]


def download_wheels(dest: Path, requirements_text: str, image: ImagePackages, *, hashed: bool,
                    ca_cert: Path | None = None, proxies: Mapping[str, str] | None = None,
                    timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Download every requirement of `requirements_text` (pins or a hashed lock, with its index lines) into dest."""
    from envbuilder.proc import run_command

    if not image.glibc:
        raise EnvbuilderError("bundle-platform-unsupported", f"the image's C library is not glibc ({image.machine})",
                              "bundles carry manylinux wheels; build on a glibc base image (Debian, Ubuntu)")
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest.parent / f".{dest.name}-requirements.txt"
    listing.write_text(requirements_text, encoding="utf-8")
    try:
        argv = pip_download_argv(dest, listing, image.python, platform_tags(image.machine, image.glibc),
                                 hashed=hashed, ca_cert=ca_cert)
        result = run_command(argv, timeout=timeout, env={**dict(proxies or {}), "PYTHONWARNINGS": "ignore"})
    finally:
        listing.unlink(missing_ok=True)
    if result.missing or (not result.ok and "No module named pip" in result.stderr):
        raise EnvbuilderError("pip-missing", "pip is needed to download the bundle's wheels and was not found",
                              f"install it into envbuilder's environment: {sys.executable} -m ensurepip")
    if result.timed_out:
        raise EnvbuilderError("bundle-download-failed", f"pip download did not finish in {timeout:.0f}s",
                              "check that the indexes are reachable")
    if not result.ok:
        hint = "check --index-url/--torch-index-url (the indexes the image was built from) and --ca-cert"
        raise EnvbuilderError("bundle-download-failed", f"pip download failed: {result.tail(8)}", hint,
                              context={"argv": list(result.argv)})


def locked_from_wheels(wheels: Sequence[Path], pins: Sequence[tuple[str, str]]) -> tuple[LockedPackage, ...]:
    """A hashed lock of the downloaded wheels, one entry per pin: the sha256 of the very file in the wheelhouse."""
    by_name: dict[str, list[Path]] = {}
    for wheel in wheels:
        parsed = parse_wheel_filename(wheel.name)
        if parsed is not None:
            by_name.setdefault(_normal(parsed.name), []).append(wheel)
    locked: list[LockedPackage] = []
    for name, version in pins:
        files = by_name.get(_normal(name), [])
        if not files:
            raise EnvbuilderError("bundle-download-failed", f"pip download brought no wheel for {name}=={version}",
                                  "the index may serve only a source distribution of it for this platform")
        locked.append(LockedPackage(name=name, version=version, hashes=tuple(f"sha256:{file_sha256(f)}" for f in files)))
    return tuple(locked)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")

"""What a torch index or wheelhouse actually serves: a snapshot of its torch-family wheel files.

A mirror (Artifactory, a wheelhouse, a loopback stand-in) rarely holds every release the matrix knows.
Resolving against a snapshot of it makes the plan pick what can really be installed, with the exact
version string the index serves (`2.13.0+cpu`, or a plain `2.14.1` for PyPI-built wheels).
The snapshot is taken here (I/O: HTTP or a folder listing) and handed to the pure resolver as a value.
Must not import docker or the resolver.
"""

from __future__ import annotations

import html
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from envbuilder.errors import EnvbuilderError
from envbuilder.values import Value

TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
_HREF = re.compile(r"""<a\s[^>]*href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_MAX_PAGE = 32 * 1024 * 1024  # download.pytorch.org's torch page is a few MB


class WheelFile(Value):
    name: str  # normalised: "torch"
    version: str  # as served, local part included: "2.13.0+cpu"
    pythons: tuple[str, ...]  # CPython X.Y the wheel installs on; () means any (py3 / abi3 wheels)
    platforms: tuple[str, ...]  # platform tags: "manylinux_2_28_x86_64", "win_amd64", "macosx_11_0_arm64"

    @property
    def public(self) -> str:
        return self.version.split("+", 1)[0]

    @property
    def local(self) -> str | None:
        return self.version.split("+", 1)[1] if "+" in self.version else None


class IndexSnapshot(Value):
    """The torch-family wheels one index or folder serves; packages it has no page for are absent from `listed`."""

    url: str
    listed: tuple[str, ...]  # packages the index has a page for
    wheels: tuple[WheelFile, ...]

    def files(self, name: str) -> tuple[WheelFile, ...]:
        return tuple(w for w in self.wheels if w.name == name)


def parse_wheel_filename(filename: str) -> WheelFile | None:
    m = _WHEEL.match(filename)
    if not m:
        return None
    pythons = []
    for tag in m["py"].split("."):
        if tag.startswith("cp") and tag[2:].isdigit() and m["abi"] != "abi3":
            pythons.append(f"{tag[2]}.{tag[3:]}")
    platforms = tuple(m["plat"].split("."))
    return WheelFile(name=m["name"].lower().replace("_", "-"), version=m["version"], pythons=tuple(pythons), platforms=platforms)


def platform_matches(platforms: tuple[str, ...], os_name: str, arch: str) -> bool:
    """Whether a wheel's platform tags install on the target OS and CPU architecture."""
    for tag in platforms:
        if tag == "any":
            return True
        if os_name == "linux" and ("linux" in tag) and tag.endswith(arch if arch != "arm64" else "aarch64"):
            return True
        if os_name == "windows" and tag == {"x86_64": "win_amd64", "aarch64": "win_arm64", "arm64": "win_arm64"}[arch]:
            return True
        if os_name == "macos" and tag.startswith("macosx_") and (tag.endswith("_" + arch) or tag.endswith("_universal2")):
            return True
    return False


def parse_simple_page(text: str) -> list[str]:
    """Wheel filenames linked from a PEP 503 HTML page or listed in a PEP 691 JSON page."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return [f["filename"] for f in json.loads(stripped).get("files", []) if f.get("filename", "").endswith(".whl")]
        except (ValueError, AttributeError, TypeError):
            return []
    names = []
    for href in _HREF.findall(text):
        path = urllib.parse.urlsplit(html.unescape(href)).path
        name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        if name.endswith(".whl"):
            names.append(name)
    return names


def snapshot_index(url: str, *, packages: tuple[str, ...] = TORCH_PACKAGES, timeout: float = 20.0) -> IndexSnapshot:
    """Read the index's page for each package (a missing page is not an error: the package is not listed)."""
    base = url.rstrip("/")
    listed: list[str] = []
    wheels: list[WheelFile] = []
    for name in packages:
        page_url = f"{base}/{name}/"
        request = urllib.request.Request(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json;q=0.9, text/html;q=0.8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https/http index URLs only
                text = response.read(_MAX_PAGE).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise _unreachable(url, f"HTTP {exc.code} for {page_url}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise _unreachable(url, str(getattr(exc, "reason", exc))) from None
        listed.append(name)
        wheels.extend(w for f in parse_simple_page(text) if (w := parse_wheel_filename(f)) and w.name == name)
    return IndexSnapshot(url=url, listed=tuple(listed), wheels=tuple(wheels))


def snapshot_folder(folder: Path, *, packages: tuple[str, ...] = TORCH_PACKAGES) -> IndexSnapshot:
    """A wheelhouse folder (--find-links DIR) as a snapshot."""
    wheels = [w for p in sorted(folder.glob("*.whl")) if (w := parse_wheel_filename(p.name)) and w.name in packages]
    return IndexSnapshot(url=str(folder), listed=tuple(sorted({w.name for w in wheels})), wheels=tuple(wheels))


def _unreachable(url: str, why: str) -> EnvbuilderError:
    return EnvbuilderError("index-unreachable", f"could not read the torch index {url}: {why}",
                           "check --torch-index-url (and --ca-cert for a TLS-intercepting proxy), or drop it to resolve offline")

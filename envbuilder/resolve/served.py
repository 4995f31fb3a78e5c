"""What a torch index or wheelhouse serves, as pure values: IndexSnapshot, WheelFile, and the parsers that
make them from a simple-index page (PEP 503 HTML or PEP 691 JSON) and from wheel filenames.

Fetching a page is I/O and lives in envbuilder.index.snapshot, which hands the resolver a snapshot built
from these values. Pure: must not import subprocess, socket, urllib.request, http, docker or the fetcher.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit  # string functions only; urllib.request stays out of this module

from packaging.utils import InvalidWheelFilename, parse_wheel_filename as parse_wheel_tags
from packaging.version import Version

from envbuilder.values import Value


class WheelFile(Value):
    name: str  # normalised: "torch"
    version: str  # as served, local part included: "2.13.0+cpu"
    pythons: tuple[str, ...]  # CPython X.Y the wheel installs on; () means any (py3 / abi3 wheels)
    platforms: tuple[str, ...]  # platform tags, sorted: "manylinux_2_28_x86_64", "win_amd64", "macosx_11_0_arm64"

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
    # A --find-links wheelhouse: it limits the plan as a mirror does, but is no index, so never the plan's torch index.
    find_links: bool = False

    def files(self, name: str) -> tuple[WheelFile, ...]:
        return tuple(w for w in self.wheels if w.name == name)


def parse_wheel_filename(filename: str) -> WheelFile | None:
    """A wheel's name, version, CPython versions and platforms (packaging's parser); None for anything else."""
    try:
        name, version, _build, tags = parse_wheel_tags(filename)
    except InvalidWheelFilename:
        return None
    # abi3 wheels install on every CPython from the tagged one on: not a single-Python wheel.
    pythons = {f"{t.interpreter[2]}.{t.interpreter[3:]}" for t in tags
               if t.interpreter.startswith("cp") and t.interpreter[2:].isdigit() and t.abi != "abi3"}
    return WheelFile(name=str(name), version=str(version), pythons=tuple(sorted(pythons, key=Version)),
                     platforms=tuple(sorted({t.platform for t in tags})))


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


class _Links(HTMLParser):
    """The href of every <a> in a page; attribute values arrive with character references already decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [value for key, value in attrs if key == "href" and value]


def url_filename(url: str) -> str:
    """The file name a URL points at, percent-decoded ("torch-2.7.1%2Bcu118-...whl" -> "torch-2.7.1+cu118-...whl")."""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def parse_simple_page(text: str) -> list[str]:
    """Wheel filenames linked from a PEP 503 HTML page or listed in a PEP 691 JSON page."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return [f["filename"] for f in json.loads(stripped).get("files", []) if f.get("filename", "").endswith(".whl")]
        except (ValueError, AttributeError, TypeError):
            return []
    links = _Links()
    links.feed(text)
    links.close()
    return [name for name in map(url_filename, links.hrefs) if name.endswith(".whl")]

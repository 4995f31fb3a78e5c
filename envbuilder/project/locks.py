"""The project's own lock files (uv.lock, poetry.lock, pixi.lock): the versions they pin, and those pins applied.

A lock records what the project's authors installed and tested, so a requirement the lock pins is replaced by
that exact version (`numpy>=1.24` -> `numpy==1.26.4`), under the platform markers the lock gives it. A pin
that falls outside the declared range (a stale lock) is not used, and a note says so. Only requirements the
project declares are pinned: the lock's other packages are what those resolve to, and the installer finds
them again from the pinned set. Sources other than an index (git, path, URL) stay as declared.
Pure: text in, values out (tomllib, yaml.safe_load). Must not import subprocess, urllib, docker, the resolver
or the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.found import as_table, load_toml, str_list, too_deep
from envbuilder.project.spec import ProjectSpec

LOCK_FILES = ("uv.lock", "poetry.lock", "pixi.lock")
# pixi platform -> the PEP 508 marker that selects it.
_PIXI_PLATFORMS = {
    "linux-64": 'sys_platform == "linux" and platform_machine == "x86_64"',
    "linux-aarch64": 'sys_platform == "linux" and platform_machine == "aarch64"',
    "osx-64": 'sys_platform == "darwin" and platform_machine == "x86_64"',
    "osx-arm64": 'sys_platform == "darwin" and platform_machine == "arm64"',
    "win-64": 'sys_platform == "win32"',
}
_CONDA_TO_PYPI = {"pytorch": "torch"}


@dataclass(frozen=True)
class LockedPin:
    name: str  # canonical
    version: str  # as locked, local part included ("2.3.1+cu121")
    marker: str | None = None  # where this pin applies; None: everywhere


def read_lock(name: str, text: str) -> tuple[list[LockedPin], list[Notice]]:
    """The pins of one lock file (by its file name) and notes on what was not pinned."""
    readers = {"uv.lock": _read_uv_lock, "poetry.lock": _read_poetry_lock, "pixi.lock": _read_pixi_lock}
    return readers[name](text, name)


def _read_uv_lock(text: str, origin: str) -> tuple[list[LockedPin], list[Notice]]:
    pins, notes = [], []
    for package in _packages(load_toml(text, origin)):
        source = as_table(package.get("source"))
        if not source.get("registry"):
            if not ({"editable", "virtual"} & set(source)):
                notes.append(Notice("lock-pin-skipped", f"{origin}: {package['name']} comes from a {next(iter(source), 'non-index')} source; left as declared"))
            continue
        markers = str_list(package.get("resolution-markers"))
        pins.append(LockedPin(canonicalize_name(package["name"]), package["version"], _any_of(markers)))
    return pins, notes


def _read_poetry_lock(text: str, origin: str) -> tuple[list[LockedPin], list[Notice]]:
    pins, notes = [], []
    for package in _packages(load_toml(text, origin)):
        kind = as_table(package.get("source")).get("type", "legacy")
        if kind != "legacy":
            notes.append(Notice("lock-pin-skipped", f"{origin}: {package['name']} comes from a {kind} source; left as declared"))
            continue
        marker = package.get("markers") if isinstance(package.get("markers"), str) else None
        pins.append(LockedPin(canonicalize_name(package["name"]), package["version"], marker))
    return pins, notes


def _packages(data: dict[str, Any]) -> list[dict[str, Any]]:
    packages = data.get("package")
    return [p for p in packages if isinstance(p, dict) and isinstance(p.get("name"), str)
            and isinstance(p.get("version"), str)] if isinstance(packages, list) else []


def _read_pixi_lock(text: str, origin: str) -> tuple[list[LockedPin], list[Notice]]:
    import yaml  # ~0.1 s to import: only projects with a pixi.lock pay for it

    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise too_deep(origin, "YAML") from None
    except yaml.YAMLError:
        raise ProjectError("project-invalid-yaml", f"{origin} is not valid YAML",
                           "regenerate it with `pixi lock`, or delete it", context={"file": origin}) from None
    data = data if isinstance(data, dict) else {}
    # Which platforms each package file serves, from the default environment (lock format v5/v6).
    platforms: dict[str, set[str]] = {}
    env = as_table(as_table(data.get("environments")).get("default"))
    for platform, entries in as_table(env.get("packages")).items():
        for entry in entries if isinstance(entries, list) else []:
            for url in (as_table(entry).get("pypi"), as_table(entry).get("conda")):
                if isinstance(url, str):
                    platforms.setdefault(url, set()).add(platform)
    pins = []
    for entry in data.get("packages") or []:
        entry = as_table(entry)
        url = entry.get("pypi") or entry.get("conda") or entry.get("url")
        name, version = entry.get("name"), entry.get("version")
        conda = "conda" in entry or entry.get("kind") == "conda"
        if not isinstance(url, str):
            continue
        if not (isinstance(name, str) and isinstance(version, str)) and conda:
            # v6 conda records carry neither: the file name is name-version-build.conda
            parts = url.rsplit("/", 1)[-1].rsplit("-", 2)
            name, version = (parts[0], parts[1]) if len(parts) == 3 else (None, None)
        if not (isinstance(name, str) and isinstance(version, str)):
            continue
        name = _CONDA_TO_PYPI.get(name, name) if conda else name
        served = platforms.get(url) or ({entry["platform"]} if isinstance(entry.get("platform"), str) else set())
        marker = _any_of([_PIXI_PLATFORMS[p] for p in sorted(served) if p in _PIXI_PLATFORMS]) if served else None
        pins.append(LockedPin(canonicalize_name(name), str(version), marker))
    return pins, []


def _any_of(markers: list[str]) -> str | None:
    if not markers:
        return None
    try:
        return str(Marker(" or ".join(f"({m})" for m in markers))) if len(markers) > 1 else str(Marker(markers[0]))
    except InvalidMarker:
        return None


def pin_to_lock(spec: ProjectSpec, origin: str, pins: list[LockedPin], notes: list[Notice]) -> ProjectSpec:
    """The spec with each requirement the lock pins replaced by the locked version(s), and a note that says so."""
    by_name: dict[str, list[LockedPin]] = {}
    for pin in pins:
        if pin not in by_name.setdefault(pin.name, []):
            by_name[pin.name].append(pin)
    used: list[str] = []

    def pinned(texts: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for text in texts:
            replaced = _pin_one(Requirement(text), by_name, origin, notes)
            if replaced:
                used.extend(r.split(";")[0] for r in replaced)
            out.extend(r for r in replaced or [text] if r not in out)
        return tuple(out)

    requirements = pinned(spec.requirements)
    optional = {extra: pinned(texts) for extra, texts in spec.optional.items()}
    if not used:
        return spec.model_copy(update={"notes": spec.notes + tuple(notes) + (
            Notice("lock-pin-skipped", f"{origin} pins none of the declared requirements; not used"),)})
    shown = ", ".join(dict.fromkeys(used[:4])) + (", ..." if len(set(used)) > 4 else "")
    note = Notice("lock-pins", f"{origin}: the project's lock pins {len(set(used))} declared requirement(s) ({shown}); "
                  "the plan uses those versions")
    return spec.model_copy(update={"requirements": requirements, "optional": optional, "locked_by": origin,
                                   "files": spec.files + (origin,), "notes": spec.notes + tuple(notes) + (note,)})


def _pin_one(req: Requirement, by_name: dict[str, list[LockedPin]], origin: str, notes: list[Notice]) -> list[str] | None:
    """The requirement pinned to each locked version that fits it, or None to keep it as declared."""
    pins = by_name.get(canonicalize_name(req.name), [])
    if req.url or not pins:
        return None
    fitting = [p for p in pins if _fits(req, p.version)]
    if not fitting:
        notes.append(Notice("lock-pin-skipped", f"{origin} pins {req.name} {', '.join(p.version for p in pins)}, outside the declared "
                     f"{req.name}{req.specifier}; the lock is stale there, so the declared range is used"))
        return None
    if len(fitting) > 1 and any(p.marker is None for p in fitting):
        notes.append(Notice("lock-pin-skipped", f"{origin} locks several versions of {req.name} without saying where each applies; not pinned"))
        return None
    head = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "")
    out = []
    for pin in fitting:
        markers = [m for m in (str(req.marker) if req.marker else None, pin.marker) if m]
        marker = " and ".join(f"({m})" for m in markers) if len(markers) > 1 else (markers[0] if markers else "")
        out.append(f"{head}=={pin.version}" + (f"; {marker}" if marker else ""))
    return [str(Requirement(text)) for text in out]


def _fits(req: Requirement, version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return req.specifier.contains(version, prereleases=True)

"""Python fit: whether a project's whole dependency set installs on each candidate Python, and which one to pick.

Owns the values an installability check produces (InstallRequest in, PythonProbe and InstallReport out), the
rule for whether a release's files serve a Python on a platform (a compiled package needs a wheel for it; an
sdist-only or pure-Python package is fine), and the words: "Python 3.11: scipy==1.10.0 has no wheels for 3.12+".
envbuilder.index.installability runs uv and reads index pages to fill these values; the resolver reads them
without importing index/. Pure: stdlib and packaging only; must not import subprocess, socket, urllib, http,
docker or anything of ours outside resolve/.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags, mac_platforms
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

NOT_CHECKED = "the other dependencies were not checked"


@dataclass(frozen=True)
class TargetPlatform:
    """One (os, arch) target as uv names it and as wheel tags name it."""

    uv: str  # uv's --python-platform
    label: str  # in messages: "linux/x86_64"
    tags: tuple[str, ...]  # wheel platform tags the target accepts, most specific first


def _manylinux(arch: str) -> tuple[str, ...]:
    # manylinux_2_28 is what current torch wheels require (render.lock targets the same glibc); a glibc 2.28
    # system also runs every older manylinux tag, including the legacy aliases (PEP 600), and uv accepts
    # plain linux_<arch> wheels for a manylinux target.
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(28, 4, -1)]
    legacy = {"x86_64": ("manylinux2014", "manylinux2010", "manylinux1"), "aarch64": ("manylinux2014",)}
    return (*tags, *(f"{alias}_{arch}" for alias in legacy.get(arch, ())), f"linux_{arch}")


def _macos(arch: str) -> tuple[str, ...]:
    # uv targets macOS 13.0 for an apple-darwin --python-platform unless told otherwise.
    return tuple(mac_platforms((13, 0), arch))


PLATFORMS: dict[tuple[str, str], TargetPlatform] = {
    ("linux", "x86_64"): TargetPlatform("x86_64-manylinux_2_28", "linux/x86_64", _manylinux("x86_64")),
    ("linux", "aarch64"): TargetPlatform("aarch64-manylinux_2_28", "linux/aarch64", _manylinux("aarch64")),
    ("windows", "x86_64"): TargetPlatform("x86_64-pc-windows-msvc", "windows/x86_64", ("win_amd64",)),
    ("windows", "aarch64"): TargetPlatform("aarch64-pc-windows-msvc", "windows/aarch64", ("win_arm64",)),
    ("macos", "x86_64"): TargetPlatform("x86_64-apple-darwin", "macos/x86_64", _macos("x86_64")),
    ("macos", "aarch64"): TargetPlatform("aarch64-apple-darwin", "macos/arm64", _macos("arm64")),
}


def target_platform(os_name: str, arch: str) -> TargetPlatform:
    """The platform for a plan's target; arm64 and aarch64 name the same CPU."""
    key = (os_name, "aarch64" if arch == "arm64" else arch)
    if key not in PLATFORMS:
        raise ValueError(f"no wheel platform known for {os_name}/{arch}")
    return PLATFORMS[key]


@dataclass(frozen=True)
class InstallRequest:
    """What to check: the project's full dependency set on each candidate Python, for one target, from its indexes.

    pins are what the plan imposes on top of the project (e.g. "torch==2.7.1"); they constrain, never override,
    so a package that requires another torch surfaces as a conflict. Index URLs may carry credentials: they are
    passed to uv but never shown.
    """

    requirements: tuple[str, ...]
    pythons: tuple[str, ...]  # highest first
    os: str = "linux"
    arch: str = "x86_64"
    pins: tuple[str, ...] = ()
    index_url: str | None = None  # None: PyPI
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    @property
    def platform(self) -> TargetPlatform:
        return target_platform(self.os, self.arch)


@dataclass(frozen=True)
class Blocker:
    """One reason a Python fails: kind is no-wheel, conflict, requires-python, missing or unresolvable.

    why is the phrase after the package ("has no wheels", "requires torch==2.1.0"); needs is the requirement
    behind a conflict, so that a plan can name what collides with its pins.
    """

    package: str
    version: str
    kind: str
    why: str
    needs: str = ""

    @property
    def subject(self) -> str:
        return f"{self.package}=={self.version}" if self.version else self.package


@dataclass(frozen=True)
class PythonProbe:
    python: str
    installs: bool
    blockers: tuple[Blocker, ...] = ()
    resolved: tuple[str, ...] = ()  # name==version of what uv picked
    raw: str = ""  # uv's own words, kept for the message when parsing found nothing


@dataclass(frozen=True)
class InstallReport:
    """The probes in the order run (highest Python first). checked=False: nothing could be asked (note says why)."""

    checked: bool
    platform: str
    probes: tuple[PythonProbe, ...] = ()
    note: str = ""
    seconds: float = 0.0

    @property
    def warning(self) -> str | None:
        return None if self.checked else f"{NOT_CHECKED} ({self.note})"


def not_checked(platform: str, why: str) -> InstallReport:
    return InstallReport(checked=False, platform=platform, note=why)


# --- which files serve a Python -----------------------------------------------------------------------------
def _python_tuple(python: str) -> tuple[int, int]:
    major, minor = python.split(".")[:2]
    return int(major), int(minor)


@lru_cache(maxsize=64)
def supported_tags(python: str, platform: TargetPlatform) -> frozenset[Tag]:
    """Every wheel tag CPython `python` accepts on the platform (abi3 and py3-none-any included)."""
    version = _python_tuple(python)
    tags = set(cpython_tags(version, platforms=platform.tags))
    tags.update(compatible_tags(version, interpreter=f"cp{version[0]}{version[1]}", platforms=platform.tags))
    return frozenset(tags)


def _interpreter_pairs(python: str) -> frozenset[tuple[str, str]]:
    """(interpreter, abi) pairs of this Python on any platform: tells "not for this Python" from "not for this OS"."""
    return frozenset((t.interpreter, t.abi) for t in supported_tags(python, TargetPlatform("", "", ("any",))))


def wheel_blocker(name: str, version: str, filenames: Iterable[str], python: str,
                  platform: TargetPlatform) -> Blocker | None:
    """Why this release cannot install on `python`, from the names of its files; None when it can.

    A release with no wheels at all is taken as pure Python (its sdist builds anywhere); a release that ships
    wheels but none this Python accepts has compiled code, and building it is the hour-long compile we avoid.
    """
    wheels: list[frozenset[Tag]] = []
    for filename in filenames:
        if not filename.endswith(".whl"):
            continue
        try:
            _, wheel_version, _, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        if wheel_version == Version(version):
            wheels.append(tags)
    accepted = supported_tags(python, platform)
    if not wheels or any(tags & accepted for tags in wheels):
        return None
    pairs = _interpreter_pairs(python)
    if any((t.interpreter, t.abi) in pairs for tags in wheels for t in tags):
        return Blocker(canonicalize_name(name), version, "no-wheel", f"has no {platform.label} wheels")
    return Blocker(canonicalize_name(name), version, "no-wheel", "has no wheels")


# --- the decision and its words -----------------------------------------------------------------------------
def python_ranges(blocked: Iterable[str], candidates: Sequence[str]) -> str:
    """The Pythons in `blocked` as runs of consecutive candidates: "3.12+" when a run reaches the highest
    candidate, "3.10-3.11" or "3.10" otherwise."""
    blocked = set(blocked)
    runs: list[list[str]] = []
    for index, python in enumerate(candidates):
        if python not in blocked:
            continue
        if runs and index > 0 and candidates[index - 1] == runs[-1][-1]:
            runs[-1].append(python)
        else:
            runs.append([python])
    words = []
    for run in runs:
        if run[0] == candidates[0]:
            words.append(f"{run[-1]}+")
        elif len(run) == 1:
            words.append(run[0])
        else:
            words.append(f"{run[-1]}-{run[0]}")
    return ", ".join(words)


def blocker_lines(probes: Sequence[PythonProbe]) -> list[str]:
    """One phrase per distinct blocker, naming the Pythons it blocked; the one that blocks most Pythons first,
    since it is the one that decided how far down the choice had to step."""
    candidates = [p.python for p in probes]
    seen: dict[Blocker, list[str]] = {}
    for probe in probes:
        for blocker in probe.blockers:
            seen.setdefault(blocker, []).append(probe.python)
    lines = []
    for blocker, pythons in sorted(seen.items(), key=lambda item: -len(item[1])):
        where = python_ranges(pythons, candidates)
        if blocker.kind == "no-wheel":
            lines.append(f"{blocker.subject} {blocker.why} for {where}")
        else:
            lines.append(f"{blocker.subject} {blocker.why} (Python {where})")
    for probe in probes:
        if not probe.installs and not probe.blockers:
            first = next((line.strip() for line in probe.raw.splitlines() if line.strip()), "uv gave no reason")
            lines.append(f"uv could not resolve the set for Python {probe.python}: {first}")
    return lines


def choose_python(probes: Sequence[PythonProbe]) -> tuple[str | None, tuple[str, ...]]:
    """The highest probed Python on which everything installs, and the reasons; None when none does."""
    chosen = next((p for p in probes if p.installs), None)
    if chosen is None:
        lines = blocker_lines(probes)
        return None, (f"no candidate Python installs every dependency: {'; '.join(lines)}",) if lines else ()
    above = probes[: probes.index(chosen)]
    if not above:
        count = f" ({len(chosen.resolved)} packages)" if chosen.resolved else ""
        return chosen.python, (f"Python {chosen.python}: the whole dependency set installs{count}",)
    return chosen.python, (f"Python {chosen.python}: {'; '.join(blocker_lines(list(above) + [chosen]))}",)


def describe_conflict(probes: Sequence[PythonProbe], pins: Sequence[str]) -> str | None:
    """The packages that cannot install alongside the plan's pins, e.g. "torchtext==0.16.0 requires
    torch==2.1.0, not torch==2.7.1"; None when no conflict involves a pin."""
    by_name: dict[str, str] = {}
    for pin in pins:
        try:
            by_name[canonicalize_name(Requirement(pin).name)] = pin
        except InvalidRequirement:
            continue
    phrases: dict[str, None] = {}
    for probe in probes:
        for blocker in probe.blockers:
            if blocker.kind != "conflict" or not blocker.needs:
                continue
            try:
                needed = canonicalize_name(Requirement(blocker.needs).name)
            except InvalidRequirement:
                continue
            if needed in by_name and needed != blocker.package:
                phrases[f"{blocker.subject} requires {blocker.needs}, not {by_name[needed]}"] = None
    return "; ".join(phrases) or None


@dataclass(frozen=True)
class PythonFit:
    """What the resolver takes from a report: the chosen Python (None: none fits, or not checked) and why."""

    python: str | None
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    conflict: str | None = None


def fit_from_report(report: InstallReport, pins: Sequence[str] = ()) -> PythonFit:
    """Fold a report into the resolver's terms; an unchecked report leaves the matrix's choice alone, with a warning."""
    if not report.checked:
        return PythonFit(None, warnings=(report.warning or NOT_CHECKED,))
    python, reasons = choose_python(report.probes)
    return PythonFit(python, reasons, conflict=describe_conflict(report.probes, pins) if python is None else None)

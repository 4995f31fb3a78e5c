"""What one reader found in one file (Found), and the checks every reader applies to what it reads.

Readers are pure: text in, a Found out; inspect_project merges them. Errors name the file and line.
Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet

from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.spec import IndexDecl
from envbuilder.tomlparser import tomllib


@dataclass
class Found:
    """What one reader found in one file: partial, merged by inspect_project in a fixed order."""

    formats: list[str] = field(default_factory=list)
    name: str | None = None
    requires_python: str | None = None
    requirements: list[str] = field(default_factory=list)
    optional: dict[str, list[str]] = field(default_factory=dict)
    constraints: list[str] = field(default_factory=list)
    indexes: list[IndexDecl] = field(default_factory=list)
    dynamic: list[str] = field(default_factory=list)
    notes: list[Notice] = field(default_factory=list)
    # Files named by this one, relative to the project root: (path, extra or None, "requirements"|"constraints").
    wants: list[tuple[str, str | None, str]] = field(default_factory=list)
    deps_dynamic: bool = False  # dependencies are computed elsewhere: fall back to requirements files
    build_requires_torch: str | None = None  # why building the project needs torch installed first



def load_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes ProjectError("project-invalid-toml") naming the file and line."""
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise too_deep(origin, "TOML") from None
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{origin}:{match.group(1)}" if match else origin
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc)) or "invalid TOML"
        raise ProjectError(
            "project-invalid-toml",
            f"{where}: {reason}" + (f" (column {match.group(2)})" if match else ""),
            f"fix the TOML syntax in {origin} (a TOML linter such as `taplo check` points at it)",
            context={"file": origin, "line": int(match.group(1)) if match else None},
        ) from None



def checked_requirement(text: str, source: str, origin: str, needle: str | None = None) -> str:
    """A requirement string normalised by packaging, or ProjectError naming the file and line."""
    try:
        return str(Requirement(text.strip()))
    except InvalidRequirement as exc:
        raise_invalid(text, source, origin, first_line(exc), needle=needle)


def checked_specifier(spec: str, source: str, origin: str, what: str) -> str:
    try:
        SpecifierSet(spec.strip())
        return spec.strip()
    except InvalidSpecifier as exc:
        raise_invalid(f"{what} = {spec!r}", source, origin, str(exc), needle=spec)


def raise_invalid(what: str, source: str, origin: str, reason: str, needle: str | None = None,
                   code: str = "project-invalid-requirement"):
    line = line_of(source, needle or what)
    where = f"{origin}:{line}" if line else origin
    raise ProjectError(
        code,
        f"{where}: invalid {'marker' if code.endswith('marker') else 'requirement'} {what!r}: {reason}",
        "fix the version specifier (PEP 440) or marker (PEP 508)",
        context={"file": origin, "line": line},
    ) from None


def line_of(source: str, needle: str) -> int | None:
    for number, line in enumerate(source.splitlines(), start=1):
        if needle.strip() and needle.strip() in line:
            return number
    return None


def first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def as_table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def too_deep(origin: str, what: str) -> ProjectError:
    """The error for a file nested deeper than its parser recurses (a 5000-level TOML array, a setup.py
    expression of 50,000 terms): no real project file comes near the limit, so it is refused, not skipped."""
    return ProjectError("project-too-deep", f"{origin}: the {what} is nested too deeply to read",
                        f"flatten the nesting in {origin}; no real project file nests this deep",
                        context={"file": origin})


def decode_utf8(data: bytes, origin: str) -> str:
    """The text of a file that must be UTF-8 (TOML, setup.cfg), a leading BOM dropped; else ProjectError."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ProjectError("project-not-utf8", f"{origin}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8",
                           f"save {origin} as UTF-8 (TOML files must be UTF-8)",
                           context={"file": origin, "line": line}) from None


def wrong_type(where: str, field_name: str, expected: str, value: Any, example: str, origin: str) -> ProjectError:
    """The error for a metadata field of the wrong type (`dependencies = "torch"`), naming the file and line."""
    got = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
           dict: "a table"}.get(type(value), type(value).__name__)
    return ProjectError("project-invalid-config", f"{where}: {field_name} must be {expected}, not {got}",
                        f"write it as {example}", context={"file": origin, "field": field_name})

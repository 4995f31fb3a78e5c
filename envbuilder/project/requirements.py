"""The requirements-file reader: pip's requirements*.txt syntax, and the tree of files -r/-c pull in.

Pure: text in, values out; the tree walk reads through a `read(relative path)` callable that the caller
confines to the project folder. Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from packaging.requirements import InvalidRequirement, Requirement

from envbuilder.defaults import url_problem
from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.found import Found, first_line
from envbuilder.project.spec import IndexDecl


@dataclass
class RequirementsFile:
    """One requirements file, read: named requirements, index options, and the files it points at."""

    requirements: list[str] = field(default_factory=list)
    indexes: list[IndexDecl] = field(default_factory=list)
    includes: list[tuple[str, str]] = field(default_factory=list)  # (path as written, "requirements"|"constraints")
    notes: list[Notice] = field(default_factory=list)


_NAMED = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\s*(?:\[|[<>=!~]|;|@)")
_PER_REQUIREMENT_OPTION = re.compile(r"\s+--(?:hash|config-settings|global-option|install-option)\b.*$")
_IGNORED_OPTIONS = {
    "--pre", "--prefer-binary", "--only-binary", "--no-binary", "--require-hashes", "--use-feature",
    "--no-index", "--trusted-host",
}
_VALUE_OPTIONS = {
    "-r": "requirement", "--requirement": "requirement", "-c": "constraint", "--constraint": "constraint",
    "-i": "index-url", "--index-url": "index-url", "--extra-index-url": "extra-index-url",
    "-f": "find-links", "--find-links": "find-links", "-e": "editable", "--editable": "editable",
    "--trusted-host": "trusted-host", "--only-binary": "ignored", "--no-binary": "ignored", "--use-feature": "ignored",
}


def read_requirements(text: str, origin: str = "requirements.txt") -> RequirementsFile:
    """Read pip's requirements-file syntax. Lines pip would reject become notes; a broken specifier is an error."""
    out = RequirementsFile()
    hashes_seen = False
    for lineno, line in _logical_lines(text):
        if line.startswith("-"):
            _requirements_option(out, line, lineno, origin)
            continue
        stripped = _PER_REQUIREMENT_OPTION.sub("", line)
        hashes_seen = hashes_seen or stripped != line
        if re.search(r"\$\{\w+\}", stripped):
            out.notes.append(Notice("entry-skipped", f"{origin}:{lineno}: {stripped!r} uses an environment variable; skipped"))
            continue
        if re.search(r"\.(whl|tar\.gz|zip)$", stripped.split(";")[0].strip()) and "@" not in stripped:
            out.notes.append(Notice("entry-skipped", f"{origin}:{lineno}: local archive {stripped!r} skipped (not a named requirement)"))
            continue
        try:
            out.requirements.append(str(Requirement(stripped)))
        except InvalidRequirement as exc:
            if _NAMED.match(stripped):
                raise ProjectError(
                    "project-invalid-requirement",
                    f"{origin}:{lineno}: invalid requirement {stripped!r}: {first_line(exc)}",
                    "fix the version specifier (PEP 440) or marker (PEP 508)",
                    context={"file": origin, "line": lineno},
                ) from None
            out.notes.append(Notice("entry-skipped", f"{origin}:{lineno}: {stripped!r} is not a named requirement; skipped"))
    if hashes_seen:
        out.notes.append(Notice("option-ignored", f"{origin}: --hash options ignored (the plan pins its own versions)"))
    return out


def _logical_lines(text: str):
    """(first line number, text) for each logical line: continuations joined, comments and blanks dropped."""
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not buffer:
            start = number
        if raw.endswith("\\"):
            buffer += raw[:-1]
            continue
        line = re.sub(r"(^|\s)#.*$", "", buffer + raw).strip()
        buffer = ""
        if line:
            yield start, line
    if buffer.strip():
        line = re.sub(r"(^|\s)#.*$", "", buffer).strip()
        if line:
            yield start, line


def _requirements_option(out: RequirementsFile, line: str, lineno: int, origin: str) -> None:
    match = re.match(r"^(--?[A-Za-z][\w-]*)(?:=|\s+)?(.*)$", line)
    option, value = (match.group(1), match.group(2).strip()) if match else (line, "")
    if option not in _VALUE_OPTIONS and re.match(r"^-[rcief]\S", line):
        option, value = line[:2], line[2:].strip()  # pip accepts -rfile.txt
    kind = _VALUE_OPTIONS.get(option)
    if kind in ("requirement", "constraint") and value:
        out.includes.append((value, "requirements" if kind == "requirement" else "constraints"))
    elif kind in ("index-url", "extra-index-url", "find-links") and value:
        problem = url_problem(value, folder_ok=kind == "find-links")
        if problem:
            raise ProjectError("project-invalid-url", f"{origin}:{lineno}: {option} {value!r}: {problem}",
                               "name an http(s) index, e.g. --extra-index-url https://download.pytorch.org/whl/cu128",
                               context={"file": origin, "line": lineno, "url": value})
        out.indexes.append(IndexDecl(url=value, kind=kind, origin=origin))
    elif kind == "editable":
        what = "the project itself" if value in (".", "./") else value
        out.notes.append(Notice("entry-skipped", f"{origin}:{lineno}: editable install of {what} skipped (the image installs the project)"))
    elif kind == "trusted-host" or option == "--trusted-host":
        out.notes.append(Notice("option-ignored", f"{origin}:{lineno}: --trusted-host {value} ignored (TLS is verified; use --ca-cert for a proxy)"))
    elif option in _IGNORED_OPTIONS or kind == "ignored":
        out.notes.append(Notice("option-ignored", f"{origin}:{lineno}: option {option} ignored"))
    else:
        out.notes.append(Notice("entry-skipped", f"{origin}:{lineno}: unrecognised line {line!r} skipped"))


def read_requirements_tree(rel: str, extra: str | None, kind: str, visited: set[tuple[str, str]],
                           read: Callable[[str], str | None]) -> Found:
    """Read a requirements file and everything it includes with -r/-c, each file once (cycles end there)."""
    found = Found()
    if extra is not None:
        found.optional[extra] = []
    queue: list[tuple[str, str, str]] = [(rel, kind, "")]
    while queue:
        name, file_kind, parent = queue.pop(0)
        where = parent or "project"
        if re.match(r"^[a-z][a-z0-9+.-]*://", name, re.I):
            found.notes.append(Notice("file-not-read", f"{where}: {name} is a URL; not fetched"))
            continue
        norm = _normalise(PurePosixPath(parent).parent / name if parent else PurePosixPath(name))
        if norm is None:
            found.notes.append(Notice("file-not-read", f"{where}: {name} is outside the project; not read"))
            continue
        if (file_kind, norm) in visited:
            continue
        visited.add((file_kind, norm))
        text = read(norm)
        if text is None and parent:
            # pip stops at a -r/-c file it cannot open; reading on would build an image that lacks its packages.
            raise ProjectError("project-file-missing", f"{parent}: {'-c' if file_kind == 'constraints' else '-r'} "
                               f"{name}: no such file in the project",
                               f"create {norm}, or remove the line from {parent}", context={"file": parent, "missing": norm})
        if text is None:
            found.notes.append(Notice("file-not-read", f"{where}: {name} not found in the project; skipped"))
            continue
        reqs = read_requirements(text, norm)
        if "requirements" not in found.formats:
            found.formats.append("requirements")
        if file_kind == "constraints":
            found.constraints += reqs.requirements
        elif extra is not None:
            found.optional[extra] += reqs.requirements
        else:
            found.requirements += reqs.requirements
        found.indexes += reqs.indexes
        found.notes += reqs.notes
        for inc, inc_kind in reqs.includes:
            # Everything a constraints file pulls in is a constraint too (pip reads it the same way).
            queue.append((inc, "constraints" if file_kind == "constraints" else inc_kind, norm))
    return found


def _normalise(path: PurePosixPath) -> str | None:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in (".", "/"):
            parts.append(part)
    return "/".join(parts) if parts else None

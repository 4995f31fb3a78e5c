"""Read a project's own constraints without executing any of its code.

Owns ProjectSpec and IndexDecl, and the readers for PEP 621, Poetry, requirements*.txt, setup.cfg and
setup.py (parsed with ast, never run). Marker evaluation for a *target* platform lives here too
(target_environment / requirements_for). Must not import docker, the resolver or the CLI.
"""

from __future__ import annotations

from typing import Literal

from envbuilder.values import Value


class IndexDecl(Value):
    """A package index or wheel location the project declares."""

    url: str
    kind: Literal["index-url", "extra-index-url", "find-links", "uv-index", "poetry-source"]
    name: str | None = None
    packages: tuple[str, ...] = ()  # packages pinned to this index (uv sources, poetry source=); empty: any
    marker: str | None = None  # PEP 508 marker under which the index applies (uv sources), None: always
    explicit: bool = False  # uv `explicit = true` / poetry priority explicit: only for the packages named
    origin: str = ""  # file it came from, for explanations


class ProjectSource(Value):
    """Where the project came from: a local folder, or a git URL at a resolved commit."""

    path: str  # local folder the project was read from (a checkout for git sources)
    git_url: str | None = None
    ref: str | None = None
    commit: str | None = None


class ProjectSpec(Value):
    """What the project itself asks for. Requirements keep their markers; evaluate them per target."""

    source: ProjectSource
    name: str | None = None
    formats: tuple[str, ...] = ()  # "pep621", "poetry", "requirements", "setup.cfg", "setup.py"
    files: tuple[str, ...] = ()  # files read, relative to the project root
    requires_python: str | None = None  # a PEP 440 specifier set, "" or None when not declared
    requirements: tuple[str, ...] = ()  # PEP 508 strings (name, extras, specifier or URL, marker)
    optional: dict[str, tuple[str, ...]] = {}  # extra -> PEP 508 strings
    indexes: tuple[IndexDecl, ...] = ()
    dynamic: tuple[str, ...] = ()  # PEP 621 fields declared dynamic
    system_packages: tuple[str, ...] = ()  # from [tool.envbuilder] system-packages
    import_roots: tuple[str, ...] = (".",)  # folders to put on PYTHONPATH ("src" for src layouts)
    notes: tuple[str, ...] = ()  # what the reader noticed (dynamic metadata fallbacks, skipped lines)

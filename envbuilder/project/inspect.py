"""Read a project folder into a ProjectSpec without executing any of its code.

Owns the walk (which files, in which order) and the merge of what each reader found. The readers are
pure (envbuilder.project.pyproject, .setuptools, .requirements); this module is the only one that touches
the file system, and it reads nothing outside the project folder, because a project fetched from a git URL
is untrusted input. System packages come from the validated config (envbuilder.project.config), the one
reader of [tool.envbuilder]. Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import re
from pathlib import Path

from envbuilder.errors import ProjectError
from envbuilder.project.config import load_config
from envbuilder.project.found import Found
from envbuilder.project.pyproject import read_pyproject
from envbuilder.project.requirements import read_requirements_tree
from envbuilder.project.setuptools import read_setup_cfg, read_setup_py
from envbuilder.project.spec import ProjectSource, ProjectSpec


def inspect_project(path: Path) -> ProjectSpec:
    """Read the project folder at `path` (never executing any of its code) into a ProjectSpec."""
    path = Path(path)
    if not path.exists():
        raise ProjectError("project-not-found", f"no such folder: {path}", "pass the project folder or a git URL",
                           context={"path": str(path)})
    if not path.is_dir():
        raise ProjectError("project-not-found", f"{path} is a file, not a project folder",
                           f"pass the folder that holds it ({path.parent})", context={"path": str(path)})
    root = path.resolve()
    files: list[str] = []
    parts: list[Found] = []

    def read(rel: str) -> str | None:
        text = _read_inside(root, rel)
        if text is not None and rel not in files:
            files.append(rel)
        return text

    pyproject = read("pyproject.toml")
    pyfound = read_pyproject(pyproject, "pyproject.toml") if pyproject is not None else Found()
    parts.append(pyfound)
    setup_cfg = read("setup.cfg")
    if setup_cfg is not None:
        parts.append(read_setup_cfg(setup_cfg, "setup.cfg"))
    setup_py = read("setup.py")
    if setup_py is not None:
        parts.append(read_setup_py(setup_py, "setup.py"))

    visited: set[tuple[str, str]] = set()  # (kind, path) pairs read; a cycle of -r ends at the second visit
    for part in list(parts):
        for rel, extra, kind in part.wants:
            parts.append(read_requirements_tree(rel, extra, kind, visited, read))

    general = Found()
    parts.append(general)
    if (root / "requirements.txt").is_file() and ("requirements", "requirements.txt") not in visited:
        parts.append(read_requirements_tree("requirements.txt", None, "requirements", visited, read))
    read_names = {name for _, name in visited}
    others = sorted(p.name for p in root.glob("requirements*.txt") if p.is_file() and p.name not in read_names)
    dynamic = any(p.deps_dynamic for p in parts)
    if dynamic and "requirements.txt" in read_names:
        general.notes.append("dependencies are computed at build time; read requirements.txt in their place")
    elif dynamic:
        # Without requirements.txt, the non-development requirements*.txt files are the best static evidence.
        fallback = [n for n in others if not re.search(r"dev|test|lint|doc", n)]
        for rel in fallback:
            parts.append(read_requirements_tree(rel, None, "requirements", visited, read))
        others = [n for n in others if n not in fallback]
        general.notes.append("dependencies are computed at build time; "
                             + (f"read {', '.join(fallback)} in their place" if fallback else "no requirements file to read instead"))
    if others:
        general.notes.append(f"also found {', '.join(others)}: not read (name one with -r in requirements.txt to use it)")

    spec = _merge(parts, ProjectSource(path=str(root)), files)
    if not spec.formats:
        spec = spec.model_copy(update={"notes": spec.notes + (
            "no pyproject.toml, setup.cfg, setup.py or requirements.txt found; the project declares no dependencies",)})
    # [tool.envbuilder] (or envbuilder.toml) has one reader, the validated config: a package name it refuses
    # for `run` is refused here too, and envbuilder.toml counts as much as pyproject.toml.
    config = load_config(root)
    if config.source and config.source not in spec.files:
        spec = spec.model_copy(update={"files": spec.files + (config.source,)})
    return spec.model_copy(update={"import_roots": _import_roots(root),
                                   "system_packages": tuple(dict.fromkeys(config.system_packages)),
                                   "notes": spec.notes + config.notes})


def _merge(parts: list[Found], source: ProjectSource, files: list[str]) -> ProjectSpec:
    formats: list[str] = []
    requirements: list[str] = []
    constraints: list[str] = []
    optional: dict[str, list[str]] = {}
    name = requires_python = None
    for part in parts:
        formats += [f for f in part.formats if f not in formats]
        name = name or part.name
        requires_python = requires_python if requires_python is not None else part.requires_python
        requirements += [r for r in part.requirements if r not in requirements]
        constraints += [r for r in part.constraints if r not in constraints]
        for extra, reqs in part.optional.items():
            bucket = optional.setdefault(extra, [])
            bucket += [r for r in reqs if r not in bucket]
    return ProjectSpec(
        source=source,
        name=name,
        formats=tuple(formats),
        files=tuple(files),
        requires_python=requires_python,
        requirements=tuple(requirements),
        optional={k: tuple(v) for k, v in optional.items()},
        constraints=tuple(constraints),
        indexes=tuple(i for p in parts for i in p.indexes),
        dynamic=tuple(d for p in parts for d in p.dynamic),
        notes=tuple(dict.fromkeys(n for p in parts for n in p.notes)),
    )


def _read_inside(root: Path, rel: str) -> str | None:
    """The text of root/rel, or None when it is missing or (through `..` or a symlink) outside the project."""
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target.read_text(encoding="utf-8-sig", errors="replace")


def _import_roots(root: Path) -> tuple[str, ...]:
    src = root / "src"
    if src.is_dir() and any(
        (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.is_file()) for p in src.iterdir()
    ):
        return ("src",)
    return (".",)

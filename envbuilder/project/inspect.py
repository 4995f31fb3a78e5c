"""Read a project folder into a ProjectSpec without executing any of its code.

Owns the walk (which files, in which order) and the merge of what each reader found. The readers are
pure (envbuilder.project.pyproject, .setuptools, .requirements); this module is the only one that touches
the file system, and it reads nothing outside the project folder, because a project fetched from a git URL
is untrusted input. System packages come from the validated config (envbuilder.project.config), the one
reader of [tool.envbuilder]. Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from envbuilder.errors import ProjectError, UsageError
from envbuilder.notices import Notice
from envbuilder.project.conda import read_environment_yml
from envbuilder.project.config import load_config
from envbuilder.project.found import Found, decode_utf8, first_line
from envbuilder.project.install import read_install
from envbuilder.project.locks import LOCK_FILES, pin_to_lock, read_lock
from envbuilder.project.pyproject import read_pyproject
from envbuilder.project.requirements import read_requirements_tree
from envbuilder.project.setuptools import read_setup_cfg, read_setup_py
from envbuilder.project.spec import ProjectSource, ProjectSpec


def inspect_project(path: Path) -> ProjectSpec:
    """Read the project folder at `path` (never executing any of its code) into a ProjectSpec."""
    root = _project_root(Path(path))
    files: list[str] = []

    def read(rel: str) -> str | None:
        text = _read_inside(root, rel)
        if text is not None and rel not in files:
            files.append(rel)
        return text

    metadata = {name: read(name) for name in ("pyproject.toml", "setup.cfg", "setup.py")}
    parts = [read_pyproject(metadata["pyproject.toml"], "pyproject.toml") if metadata["pyproject.toml"] is not None
             else Found()]
    if metadata["setup.cfg"] is not None:
        parts.append(read_setup_cfg(metadata["setup.cfg"], "setup.cfg"))
    if metadata["setup.py"] is not None:
        parts.append(read_setup_py(metadata["setup.py"], "setup.py"))
    for name in ("environment.yml", "environment.yaml"):
        metadata[name] = read(name)
        if metadata[name] is not None:
            parts.append(read_environment_yml(metadata[name], name))
            break
    visited: set[tuple[str, str]] = set()  # (kind, path) pairs read; a cycle of -r ends at the second visit
    for part in list(parts):
        for rel, extra, kind in part.wants:
            parts.append(read_requirements_tree(rel, extra, kind, visited, read))
    parts += _requirements_files(root, parts, visited, read)
    spec = _merge(parts, ProjectSource(path=str(root)), files)
    if all(text is None for text in metadata.values()) and not spec.formats and not any(root.glob("requirements*.txt")):
        spec = spec.model_copy(update={"bare": True, "notes": spec.notes + (Notice(
            "no-metadata", "no pyproject.toml, setup.cfg, setup.py, requirements*.txt or environment.yml found; "
            "the project declares no dependencies"),)})
    return _completed(spec, root, metadata["pyproject.toml"], metadata["setup.py"])


def _project_root(path: Path) -> Path:
    if not path.exists():
        raise ProjectError("project-not-found", f"no such folder: {path}", "pass the project folder or a git URL",
                           context={"path": str(path)})
    if not path.is_dir():
        raise ProjectError("project-not-found", f"{path} is a file, not a project folder",
                           f"pass the folder that holds it ({path.parent})", context={"path": str(path)})
    return path.resolve()


def _requirements_files(root: Path, parts: list[Found], visited: set[tuple[str, str]], read) -> list[Found]:
    """requirements*.txt files no metadata file named: requirements.txt, and with dynamic (or no) metadata the
    non-development ones; the first Found carries the notes that say what was read in their place."""
    general = Found()
    found = [general]
    # lexists, not is_file: a requirements.txt that is a FIFO or a broken link is reported, not passed over.
    if os.path.lexists(root / "requirements.txt") and ("requirements", "requirements.txt") not in visited:
        found.append(read_requirements_tree("requirements.txt", None, "requirements", visited, read))
    read_names = {name for _, name in visited}
    others = sorted(p.name for p in root.glob("requirements*.txt") if p.is_file() and p.name not in read_names)
    # Without any metadata file, the non-development requirements*.txt files are all there is to read.
    dynamic = any(p.deps_dynamic for p in parts + found) or not any(p.formats for p in parts + found)
    if dynamic and "requirements.txt" in read_names:
        general.notes.append(Notice("dynamic-metadata", "dependencies are computed at build time; read requirements.txt in their place"))
    elif dynamic:
        # Without requirements.txt, the non-development requirements*.txt files are the best static evidence.
        fallback = [n for n in others if not re.search(r"dev|test|lint|doc", n)]
        found += [read_requirements_tree(rel, None, "requirements", visited, read) for rel in fallback]
        others = [n for n in others if n not in fallback]
        if any(p.formats for p in parts + found if p is not general):
            general.notes.append(Notice("dynamic-metadata", "dependencies are computed at build time; "
                                 + (f"read {', '.join(fallback)} in their place" if fallback else "no requirements file to read instead")))
        elif fallback:
            general.notes.append(Notice("metadata-fallback", f"no project metadata besides {', '.join(fallback)}; read as the requirements"))
    if others:
        general.notes.append(Notice("file-not-read", f"also found {', '.join(others)}: not read (name one with -r in requirements.txt to use it)"))
    return found


def _completed(spec: ProjectSpec, root: Path, pyproject: str | None, setup_py: str | None) -> ProjectSpec:
    """The merged spec with what the files beside the metadata say: a lock's pins, the config's system packages,
    whether the project is a package to install, and the import roots."""
    for name in LOCK_FILES:
        text = _read_inside(root, name)
        if text is not None:
            spec = pin_to_lock(spec, name, *read_lock(name, text))
            break
    # [tool.envbuilder] (or envbuilder.toml) has one reader, the validated config: a package name it refuses
    # for `run` is refused here too, and envbuilder.toml counts as much as pyproject.toml.
    config = load_config(root)
    if config.source and config.source not in spec.files:
        spec = spec.model_copy(update={"files": spec.files + (config.source,)})
    install, install_notes = read_install(pyproject, setup_py)
    return spec.model_copy(update={"import_roots": _import_roots(root),
                                   "system_packages": tuple(dict.fromkeys(config.system_packages)),
                                   "install": install,
                                   "notes": spec.notes + config.notes + install_notes})


def read_with(packages: tuple[str, ...], files: tuple[str, ...]) -> tuple[str, ...]:
    """--with PKG and --with-requirements FILE as PEP 508 strings, in order, each once. Raises UsageError.

    They add what the project imports but does not declare; index and constraint options belong to the
    network flags and the project, so a file that carries them is refused rather than half-read.
    """
    out: list[str] = []
    for text in packages:
        try:
            out.append(str(Requirement(text.strip())))
        except InvalidRequirement as exc:
            raise UsageError("request-invalid", f"--with {text!r} is not a requirement: {first_line(exc)}",
                             "pass a PEP 508 requirement, e.g. --with einops or --with 'timm>=1.0'") from None
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise UsageError("request-invalid", f"--with-requirements {name}: no such file",
                             "pass a requirements file (one requirement a line), e.g. --with-requirements extra.txt")
        folder = path.resolve().parent
        found = read_requirements_tree(path.name, None, "requirements", set(), lambda rel, at=folder: _read_inside(at, rel))
        if found.indexes or found.constraints:
            what = "an index option" if found.indexes else "a -c constraints file"
            raise UsageError("request-invalid", f"--with-requirements {name} has {what}, which --with cannot carry",
                             "keep only requirements in it; pass mirrors with --index-url/--extra-index-url")
        out += found.requirements
    return tuple(dict.fromkeys(out))


def _merge(parts: list[Found], source: ProjectSource, files: list[str]) -> ProjectSpec:
    formats: list[str] = []
    requirements: list[str] = []
    constraints: list[str] = []
    optional: dict[str, list[str]] = {}
    name = requires_python = None
    build_torch = None
    for part in parts:
        formats += [f for f in part.formats if f not in formats]
        name = name or part.name
        requires_python = requires_python if requires_python is not None else part.requires_python
        build_torch = build_torch or part.build_requires_torch
        requirements += part.requirements
        constraints += part.constraints
        for extra, reqs in part.optional.items():
            optional.setdefault(extra, []).extend(reqs)
    notes: list[Notice] = []
    return ProjectSpec(
        source=source,
        name=name,
        formats=tuple(formats),
        files=tuple(files),
        requires_python=requires_python,
        requirements=combine_requirements(requirements, notes),
        optional={k: combine_requirements(v, notes) for k, v in optional.items()},
        constraints=combine_requirements(constraints, notes),
        indexes=tuple(i for p in parts for i in p.indexes),
        dynamic=tuple(d for p in parts for d in p.dynamic),
        notes=tuple(dict.fromkeys([n for p in parts for n in p.notes] + notes)),
        build_requires_torch=build_torch,
    )


def combine_requirements(texts: list[str], notes: list[Notice]) -> tuple[str, ...]:
    """One requirement per package and marker: `numpy>=1.24` (pyproject.toml) and `numpy==1.26.4`
    (requirements.txt) become `numpy==1.26.4,>=1.24`, which is what installing both would enforce."""
    groups: dict[tuple[str, str], list[Requirement]] = {}
    for text in texts:
        req = Requirement(text)
        key = (canonicalize_name(req.name), str(req.marker or ""))
        groups.setdefault(key if not req.url else (*key, req.url), []).append(req)
    out: list[str] = []
    for reqs in groups.values():
        first = reqs[0]
        if len(reqs) > 1 and len({str(r) for r in reqs}) > 1:
            first = Requirement(str(first))
            for other in reqs[1:]:
                first.extras |= other.extras
                first.specifier &= other.specifier
            notes.append(Notice("duplicate-requirement", f"{first.name} is declared more than once ({'; '.join(dict.fromkeys(str(r) for r in reqs))}); "
                         f"combined into {first}"))
        out.append(str(first))
    return tuple(out)


def _read_inside(root: Path, rel: str) -> str | None:
    """The text of root/rel, or None when it is missing or (through `..` or a symlink) outside the project.

    A file that is there but cannot be read (a symlink loop or to nothing, a FIFO that would block the read, a
    folder, no permission) is an error: skipping it would build an image without what it declares."""
    path = root / rel
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        if not path.is_symlink():
            return None
        raise _unreadable(rel, "it is a symlink to a file that does not exist") from None
    except (RuntimeError, OSError) as exc:  # ELOOP: Python 3.11 raises RuntimeError, later ones OSError
        raise _unreadable(rel, "it is a symlink loop" if "loop" in str(exc).lower() or getattr(exc, "errno", 0) == errno.ELOOP
                          else exc.strerror or str(exc)) from None
    if not target.is_relative_to(root):
        return None
    mode = target.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise _unreadable(rel, f"it is {kind}")
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise _unreadable(rel, exc.strerror or str(exc)) from None
    if rel.endswith((".toml", ".lock", ".cfg")):  # TOML is UTF-8 by its spec; setuptools reads setup.cfg as UTF-8
        return decode_utf8(data, rel)
    return data.decode("utf-8-sig", errors="replace")


def _unreadable(rel: str, why: str) -> ProjectError:
    return ProjectError("project-file-unreadable", f"{rel} cannot be read: {why}",
                        f"make {rel} a readable file in the project, or remove it", context={"file": rel})


def _import_roots(root: Path) -> tuple[str, ...]:
    src = root / "src"
    if src.is_dir() and any(
        (p.is_dir() and (p / "__init__.py").is_file()) or (p.suffix == ".py" and p.is_file()) for p in src.iterdir()
    ):
        return ("src",)
    return (".",)

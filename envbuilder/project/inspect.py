"""Read a project's own constraints without executing any of its code.

Owns ProjectSpec and IndexDecl, and the readers for PEP 621, Poetry, uv, requirements*.txt, setup.cfg and
setup.py (parsed with ast, never run). Marker evaluation for a *target* platform lives here too
(target_environment / ProjectSpec.requirements_for). Must not import docker, the resolver or the CLI.

The readers are pure (text in, values out); only inspect_project() touches the file system, and it reads
nothing outside the project folder, because a project fetched from a git URL is untrusted input.
"""

from __future__ import annotations

import ast
import configparser
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envbuilder.errors import ProjectError
from envbuilder.values import Value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    formats: tuple[str, ...] = ()  # "pep621", "poetry", "uv", "requirements", "setup.cfg", "setup.py"
    files: tuple[str, ...] = ()  # files read, relative to the project root
    requires_python: str | None = None  # a PEP 440 specifier set, "" or None when not declared
    requirements: tuple[str, ...] = ()  # PEP 508 strings (name, extras, specifier or URL, marker)
    optional: dict[str, tuple[str, ...]] = {}  # extra -> PEP 508 strings
    constraints: tuple[str, ...] = ()  # PEP 508 strings from `-c` files: bound versions, install nothing
    indexes: tuple[IndexDecl, ...] = ()
    dynamic: tuple[str, ...] = ()  # PEP 621 fields declared dynamic
    system_packages: tuple[str, ...] = ()  # from [tool.envbuilder] system-packages
    import_roots: tuple[str, ...] = (".",)  # folders to put on PYTHONPATH ("src" for src layouts)
    notes: tuple[str, ...] = ()  # what the reader noticed (dynamic metadata fallbacks, skipped lines)

    def requirements_for(self, env: dict[str, str], extras: tuple[str, ...] = ()) -> tuple[Requirement, ...]:
        """The requirements that apply on the target `env` with `extras` selected, markers evaluated and removed.

        A requirement on the project itself (`all = ["myproj[onnx,vision]"]`) expands to those extras.
        Raises ProjectError("unknown-extra") for an extra the project does not declare.
        """
        known = {canonicalize_name(e): e for e in self.optional}
        wanted: list[str] = []
        for extra in extras:
            key = canonicalize_name(extra)
            if key not in known:
                listed = ", ".join(sorted(self.optional)) or "none"
                raise ProjectError(
                    "unknown-extra",
                    f"the project has no extra {extra!r} (known: {listed})",
                    "pick one of the known extras, or drop --extra",
                    context={"extra": extra, "known": sorted(self.optional)},
                )
            wanted.append(key)
        own = canonicalize_name(self.name) if self.name else None
        selected: list[str] = []
        out: list[Requirement] = []
        seen: set[str] = set()

        def add(text: str, extra: str) -> None:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                return
            if own and canonicalize_name(req.name) == own and not req.url:
                for sub in sorted(req.extras):
                    select(canonicalize_name(sub))
                return
            req.marker = None
            key = str(req)
            if key not in seen:
                seen.add(key)
                out.append(req)

        def select(key: str) -> None:
            if key in selected or key not in known:
                return
            selected.append(key)
            for text in self.optional[known[key]]:
                add(text, key)

        for text in self.requirements:
            # A base requirement may itself carry `extra == "x"` (requirements.txt written from metadata).
            for extra in ("", *wanted):
                add(text, extra)
        for key in wanted:
            select(key)
        return tuple(out)

    def constraints_for(self, env: dict[str, str]) -> tuple[Requirement, ...]:
        """The `-c` constraints that apply on the target, markers evaluated and removed."""
        out = []
        for text in self.constraints:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                req.marker = None
                out.append(req)
        return tuple(out)

    def indexes_for(self, env: dict[str, str]) -> tuple[IndexDecl, ...]:
        """The declared indexes whose marker holds on the target."""
        return tuple(i for i in self.indexes if i.marker is None or Marker(i.marker).evaluate({**env, "extra": ""}))


# --------------------------------------------------------------------------------------------------------------
# Target marker environments

_SYS_PLATFORM = {"linux": "linux", "windows": "win32", "win32": "win32", "macos": "darwin", "darwin": "darwin"}
_PLATFORM_SYSTEM = {"linux": "Linux", "win32": "Windows", "darwin": "Darwin"}
# platform.machine() spelling per OS: Windows reports AMD64/ARM64, macOS arm64, Linux aarch64.
_MACHINE = {
    ("linux", "x86_64"): "x86_64", ("linux", "aarch64"): "aarch64", ("linux", "arm64"): "aarch64",
    ("win32", "x86_64"): "AMD64", ("win32", "aarch64"): "ARM64", ("win32", "arm64"): "ARM64",
    ("darwin", "x86_64"): "x86_64", ("darwin", "aarch64"): "arm64", ("darwin", "arm64"): "arm64",
}


def target_environment(os: str, arch: str, python: str) -> dict[str, str]:
    """PEP 508 marker variables for a target platform (not the host): os linux|windows|macos, arch, python "3.11"."""
    platform = _SYS_PLATFORM.get(os.lower())
    if platform is None:
        raise ProjectError("unknown-target-os", f"unknown target OS {os!r}", "use linux, windows or macos")
    machine = _MACHINE.get((platform, arch.lower() if arch.lower() != "amd64" else "x86_64"))
    if machine is None:
        raise ProjectError("unknown-target-arch", f"unknown target architecture {arch!r}", "use x86_64, aarch64 or arm64")
    parts = python.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        raise ProjectError("invalid-python-version", f"invalid Python version {python!r}", "pass X.Y, e.g. 3.11")
    full = ".".join((parts + ["0"])[:3])
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "nt" if platform == "win32" else "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_system": _PLATFORM_SYSTEM[platform],
        "platform_version": "",
        "platform_python_implementation": "CPython",
        "python_full_version": full,
        "python_version": ".".join(parts[:2]),
        "sys_platform": platform,
    }


# --------------------------------------------------------------------------------------------------------------
# The torch family, summarised for `inspect`

TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "onnxruntime", "onnxruntime-gpu")


def torch_family(spec: ProjectSpec) -> dict[str, dict[str, Any]]:
    """For each torch-family package the project names: its requirements, per-extra additions, constraints, indexes."""
    summary: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return summary.setdefault(name, {"requirements": [], "extras": {}, "constraints": [], "indexes": []})

    for text in spec.requirements:
        name = canonicalize_name(Requirement(text).name)
        if name in TORCH_FAMILY:
            entry(name)["requirements"].append(text)
    for extra, texts in spec.optional.items():
        for text in texts:
            name = canonicalize_name(Requirement(text).name)
            if name in TORCH_FAMILY:
                entry(name)["extras"].setdefault(extra, []).append(text)
    for text in spec.constraints:
        name = canonicalize_name(Requirement(text).name)
        if name in TORCH_FAMILY:
            entry(name)["constraints"].append(text)
    for index in spec.indexes:
        for pkg in index.packages:
            name = canonicalize_name(pkg)
            if name in TORCH_FAMILY:
                entry(name)["indexes"].append(index.name or index.url)
    return {name: summary[name] for name in TORCH_FAMILY if name in summary}


# --------------------------------------------------------------------------------------------------------------
# Reading a folder


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
    system_packages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Files named by this one, relative to the project root: (path, extra or None, "requirements"|"constraints").
    wants: list[tuple[str, str | None, str]] = field(default_factory=list)
    deps_dynamic: bool = False  # dependencies are computed elsewhere: fall back to requirements files


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
            parts.append(_read_requirements_tree(root, rel, extra, kind, visited, read))

    general = Found()
    parts.append(general)
    if (root / "requirements.txt").is_file() and ("requirements", "requirements.txt") not in visited:
        parts.append(_read_requirements_tree(root, "requirements.txt", None, "requirements", visited, read))
    read_names = {name for _, name in visited}
    others = sorted(p.name for p in root.glob("requirements*.txt") if p.is_file() and p.name not in read_names)
    dynamic = any(p.deps_dynamic for p in parts)
    if dynamic and "requirements.txt" in read_names:
        general.notes.append("dependencies are computed at build time; read requirements.txt in their place")
    elif dynamic:
        # Without requirements.txt, the non-development requirements*.txt files are the best static evidence.
        fallback = [n for n in others if not re.search(r"dev|test|lint|doc", n)]
        for rel in fallback:
            parts.append(_read_requirements_tree(root, rel, None, "requirements", visited, read))
        others = [n for n in others if n not in fallback]
        general.notes.append("dependencies are computed at build time; "
                             + (f"read {', '.join(fallback)} in their place" if fallback else "no requirements file to read instead"))
    if others:
        general.notes.append(f"also found {', '.join(others)}: not read (name one with -r in requirements.txt to use it)")

    spec = _merge(parts, ProjectSource(path=str(root)), files)
    roots = _import_roots(root)
    if not spec.formats:
        spec = spec.model_copy(update={"notes": spec.notes + (
            "no pyproject.toml, setup.cfg, setup.py or requirements.txt found; the project declares no dependencies",)})
    return spec.model_copy(update={"import_roots": roots})


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
        system_packages=tuple(dict.fromkeys(s for p in parts for s in p.system_packages)),
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


# --------------------------------------------------------------------------------------------------------------
# pyproject.toml: PEP 621, Poetry, uv, setuptools dynamic metadata, [tool.envbuilder]


def load_toml(text: str, origin: str) -> dict[str, Any]:
    """Parse TOML; a syntax error becomes ProjectError("project-invalid-toml") naming the file and line."""
    try:
        return tomllib.loads(text)
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


def read_pyproject(text: str, origin: str = "pyproject.toml") -> Found:
    """Read PEP 621 [project], [tool.poetry], [tool.uv], [tool.setuptools.dynamic] and [tool.envbuilder]."""
    data = load_toml(text, origin)
    found = Found()
    tool = _table(data.get("tool"))
    project = data.get("project")
    pep621_static_deps = False
    if isinstance(project, dict):
        found.formats.append("pep621")
        found.name = _str_or_none(project.get("name"))
        if isinstance(project.get("requires-python"), str):
            found.requires_python = _checked_specifier(project["requires-python"], text, origin, "requires-python")
        found.dynamic = [str(d) for d in project.get("dynamic", []) if isinstance(d, str)]
        for req in _str_list(project.get("dependencies")):
            found.requirements.append(_checked(req, text, origin))
        pep621_static_deps = "dependencies" in project
        for extra, reqs in _table(project.get("optional-dependencies")).items():
            found.optional[extra] = [_checked(r, text, origin) for r in _str_list(reqs)]
        _setuptools_dynamic(found, _table(_table(tool.get("setuptools")).get("dynamic")), origin)

    poetry = tool.get("poetry")
    if isinstance(poetry, dict):
        _read_poetry(found, poetry, text, origin, supplement_only=pep621_static_deps)
    uv = tool.get("uv")
    if isinstance(uv, dict):
        _read_uv(found, uv, origin)
    envb = tool.get("envbuilder")
    if isinstance(envb, dict) and "system-packages" in envb:
        packages = envb["system-packages"]
        if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
            found.notes.append(f"{origin}: [tool.envbuilder] system-packages is not a list of strings; ignored")
        else:
            found.system_packages = [p.strip() for p in packages if p.strip()]
    return found


def _setuptools_dynamic(found: Found, dyn: dict[str, Any], origin: str) -> None:
    if "dependencies" in found.dynamic:
        named = _named_files(dyn.get("dependencies"))
        if named:
            found.notes.append(f"{origin}: dependencies are dynamic; read from {', '.join(named)}")
            found.wants += [(n, None, "requirements") for n in named]
        else:
            found.deps_dynamic = True
            found.notes.append(f"{origin}: dependencies are dynamic and [tool.setuptools.dynamic] names no file; "
                               "falling back to requirements files and setup.py")
    if "optional-dependencies" in found.dynamic:
        extras = _table(dyn.get("optional-dependencies"))
        for extra, spec in extras.items():
            found.wants += [(n, extra, "requirements") for n in _named_files(spec)]
            found.optional.setdefault(extra, [])
        if not extras:
            found.notes.append(f"{origin}: optional-dependencies are dynamic and name no file; extras unknown")


def _named_files(spec: Any) -> list[str]:
    """The files of a setuptools `{file = ...}` directive (a string or a list)."""
    named = _table(spec).get("file")
    return [named] if isinstance(named, str) else _str_list(named)


# --- Poetry -----------------------------------------------------------------------------------------------------

_DEV_GROUPS = {"dev", "develop", "development", "test", "tests", "testing", "lint", "linting", "docs", "doc", "typing"}


def _read_poetry(found: Found, poetry: dict[str, Any], text: str, origin: str, *, supplement_only: bool) -> None:
    found.formats.append("poetry")
    found.name = found.name or _str_or_none(poetry.get("name"))
    deps = _table(poetry.get("dependencies"))
    if "python" in deps and found.requires_python is None and isinstance(deps["python"], str):
        found.requires_python = _poetry_constraint(deps["python"], text, origin, "python", found.notes)
    by_source: dict[str, list[tuple[str, str | None]]] = {}
    optional_reqs: dict[str, list[str]] = {}
    if supplement_only and deps:
        found.notes.append(f"{origin}: [project] lists the dependencies; [tool.poetry.dependencies] read for sources only")
    for name, value in deps.items():
        if name == "python":
            continue
        for req, source, optional in _poetry_entries(name, value, text, origin, found.notes):
            if source:
                by_source.setdefault(source, []).append((name, Requirement(req).marker and str(Requirement(req).marker)))
            if supplement_only:
                continue
            if optional:
                optional_reqs.setdefault(canonicalize_name(name), []).append(req)
            else:
                found.requirements.append(req)
    if not supplement_only:
        for extra, names in _table(poetry.get("extras")).items():
            bucket = found.optional.setdefault(extra, [])
            for pkg in _str_list(names):
                pkg_name = re.split(r"[\[<>=!~;\s]", pkg, maxsplit=1)[0]
                bucket += optional_reqs.get(canonicalize_name(pkg_name), [])
        in_extras = {canonicalize_name(Requirement(r).name) for reqs in found.optional.values() for r in reqs}
        for pkg in sorted(set(optional_reqs) - in_extras):
            found.notes.append(f"{origin}: optional dependency {pkg} is in no [tool.poetry.extras]; skipped")
    if "dev-dependencies" in poetry:
        found.notes.append(f"{origin}: [tool.poetry.dev-dependencies] ignored (development only)")
    for group, table in _table(poetry.get("group")).items():
        group_deps = _table(_table(table).get("dependencies"))
        if group.lower() in _DEV_GROUPS or _table(table).get("optional") is True:
            found.notes.append(f"{origin}: poetry group {group!r} ignored ({len(group_deps)} dependencies)")
            continue
        found.notes.append(f"{origin}: poetry group {group!r} included (poetry installs it by default)")
        for name, value in group_deps.items():
            for req, source, optional in _poetry_entries(name, value, text, origin, found.notes):
                if source:
                    by_source.setdefault(source, []).append((name, Requirement(req).marker and str(Requirement(req).marker)))
                if not optional:
                    found.requirements.append(req)
    sources = poetry.get("source", [])
    for src in sources if isinstance(sources, list) else []:
        if not isinstance(src, dict) or not isinstance(src.get("name"), str):
            continue
        url = src.get("url")
        if not isinstance(url, str) or not url:
            if src["name"].lower() != "pypi":
                found.notes.append(f"{origin}: poetry source {src['name']!r} has no url; ignored")
            continue
        priority = src.get("priority") or ("default" if src.get("default") else "secondary" if src.get("secondary") else "primary")
        uses = by_source.get(src["name"], [])
        found.indexes.append(IndexDecl(
            url=url, kind="poetry-source", name=src["name"], packages=tuple(dict.fromkeys(n for n, _ in uses)),
            marker=_any_marker(m for _, m in uses), explicit=priority == "explicit", origin=origin))
    for source in sorted(set(by_source) - {s.get("name") for s in sources if isinstance(s, dict)}):
        found.notes.append(f"{origin}: dependencies name poetry source {source!r}, which is not declared")


def _poetry_entries(name: str, value: Any, text: str, origin: str, notes: list[str]) -> list[tuple[str, str | None, bool]]:
    """One poetry dependency (string, table or list of tables) as (PEP 508 string, source, optional) tuples."""
    entries = value if isinstance(value, list) else [value]
    out = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"version": entry}
        if not isinstance(entry, dict):
            notes.append(f"{origin}: poetry dependency {name} has an unreadable value; skipped")
            continue
        extras = _str_list(entry.get("extras"))
        head = name + (f"[{','.join(extras)}]" if extras else "")
        markers = []
        if isinstance(entry.get("markers"), str) and entry["markers"].strip():
            markers.append(entry["markers"].strip())
        if isinstance(entry.get("python"), str):
            py = _poetry_constraint(entry["python"], text, origin, name, notes)
            markers += [_python_marker(s) for s in SpecifierSet(py)]
        if isinstance(entry.get("platform"), str):
            markers.append(f'sys_platform == "{entry["platform"]}"')
        if "git" in entry:
            rev = entry.get("rev") or entry.get("tag") or entry.get("branch")
            body = f"{head} @ git+{entry['git']}" + (f"@{rev}" if rev else "")
            if entry.get("subdirectory"):
                body += f"#subdirectory={entry['subdirectory']}"
        elif "url" in entry:
            body = f"{head} @ {entry['url']}"
        elif "path" in entry:
            notes.append(f"{origin}: poetry path dependency {name} ({entry['path']}) skipped; install it with the project")
            continue
        else:
            body = head + _poetry_constraint(str(entry.get("version", "*")), text, origin, name, notes)
        req = body + ("; " + " and ".join(f"({m})" if len(markers) > 1 else m for m in markers) if markers else "")
        source = entry.get("source") if isinstance(entry.get("source"), str) else None
        out.append((_checked(req, text, origin, needle=name), source, entry.get("optional") is True))
    return out


def _poetry_constraint(constraint: str, text: str, origin: str, what: str, notes: list[str]) -> str:
    """Poetry's version syntax (^1.2, ~1.2, *, `>=1,<2`, `>=1 <2`) as a PEP 440 specifier set string."""
    raw = constraint.strip()
    if raw in ("", "*"):
        return ""
    if "|" in raw:
        # `||` alternatives have no PEP 440 spelling; the only honest single bound is none.
        notes.append(f"{origin}: {what} = {constraint!r} uses `||`, which PEP 440 cannot express; read as any version")
        return ""
    pieces = re.split(r"\s*,\s*|\s+", re.sub(r"(===|>=|<=|!=|==|~=|[<>=^~])\s+", r"\1", raw))
    out = []
    for piece in filter(None, pieces):
        try:
            if piece.startswith("^"):
                out += _caret(piece[1:])
            elif piece.startswith("~") and not piece.startswith("~="):
                out += _tilde(piece[1:])
            elif piece[0] in "<>!~" or piece.startswith("=="):
                out.append(piece)
            elif piece.startswith("="):
                out.append("=" + piece)
            elif piece != "*":
                out.append("==" + piece)
        except InvalidVersion:
            _raise_invalid(f"{what} = {constraint!r}", text, origin, "not a poetry version constraint", needle=constraint)
    result = ",".join(out)
    try:
        SpecifierSet(result)
    except InvalidSpecifier as exc:
        _raise_invalid(f"{what} = {constraint!r}", text, origin, str(exc), needle=constraint)
    return result


def _release(version: str) -> list[int]:
    Version(version.replace("*", "0"))
    return [int(p) for p in re.match(r"^\d+(?:\.\d+)*", version).group(0).split(".")]


def _caret(version: str) -> list[str]:
    given = _release(version)
    nonzero = next((i for i, p in enumerate(given) if p), len(given) - 1)
    upper = given[:nonzero] + [given[nonzero] + 1] + [0] * (len(given) - nonzero - 1)
    return [f">={version}", "<" + ".".join(map(str, upper))]


def _tilde(version: str) -> list[str]:
    given = _release(version)
    at = 0 if len(given) == 1 else 1
    upper = given[:at] + [given[at] + 1] + [0] * (len(given) - at - 1)
    return [f">={version}", "<" + ".".join(map(str, upper))]


def _python_marker(spec) -> str:
    var = "python_full_version" if spec.version.count(".") >= 2 and not spec.version.endswith("*") else "python_version"
    return f'{var} {spec.operator} "{spec.version}"'


# --- uv ---------------------------------------------------------------------------------------------------------


def _read_uv(found: Found, uv: dict[str, Any], origin: str) -> None:
    indexes = [i for i in uv.get("index", []) if isinstance(i, dict)] if isinstance(uv.get("index"), list) else []
    sources = _table(uv.get("sources"))
    if indexes or sources:
        found.formats.append("uv")
    uses: dict[str, list[tuple[str, str | None]]] = {}
    for pkg, value in sources.items():
        for entry in value if isinstance(value, list) else [value]:
            if not isinstance(entry, dict):
                continue
            marker = entry.get("marker") if isinstance(entry.get("marker"), str) else None
            if marker is not None:
                try:
                    marker = str(Marker(marker))
                except InvalidMarker as exc:
                    _raise_invalid(f"{pkg} marker {marker!r}", "", origin, _first_line(exc), code="project-invalid-marker")
            if isinstance(entry.get("index"), str):
                uses.setdefault(entry["index"], []).append((pkg, marker))
            elif entry.get("workspace"):
                continue
            else:
                kind = next((k for k in ("git", "url", "path") if k in entry), "unknown")
                found.notes.append(f"{origin}: uv source for {pkg} is a {kind} source; not an index, left to uv")
    names = set()
    for index in indexes:
        name, url = index.get("name"), index.get("url")
        if not isinstance(url, str):
            found.notes.append(f"{origin}: [[tool.uv.index]] {name!r} has no url; ignored")
            continue
        names.add(name)
        used = uses.get(name, []) if isinstance(name, str) else []
        found.indexes.append(IndexDecl(
            url=url, kind="uv-index", name=name if isinstance(name, str) else None,
            packages=tuple(dict.fromkeys(p for p, _ in used)), marker=_any_marker(m for _, m in used),
            explicit=index.get("explicit") is True, origin=origin))
    for name in sorted(set(uses) - names):
        found.notes.append(f"{origin}: [tool.uv.sources] names index {name!r}, which is not declared")
    for key, kind in (("index-url", "index-url"), ("extra-index-url", "extra-index-url"), ("find-links", "find-links")):
        value = uv.get(key)
        for url in [value] if isinstance(value, str) else _str_list(value):
            found.indexes.append(IndexDecl(url=url, kind=kind, origin=origin))


def _any_marker(markers) -> str | None:
    """The marker under which an index applies, given the markers of each use: None when any use is unconditional."""
    markers = list(markers)
    if not markers or any(m is None for m in markers):
        return None
    unique = list(dict.fromkeys(markers))
    combined = unique[0] if len(unique) == 1 else " or ".join(f"({m})" for m in unique)
    try:
        return str(Marker(combined))
    except InvalidMarker:
        return combined


# --------------------------------------------------------------------------------------------------------------
# setup.cfg and setup.py


def read_setup_cfg(text: str, origin: str = "setup.cfg") -> Found:
    """Read [metadata] name, [options] install_requires/python_requires and [options.extras_require]."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=origin)
    except configparser.Error as exc:
        raise ProjectError("project-invalid-config", f"{origin}: {str(exc).splitlines()[0]}",
                           f"fix the INI syntax in {origin}", context={"file": origin}) from None
    found = Found()
    if not (parser.has_section("options") or parser.has_section("options.extras_require")):
        if parser.has_option("metadata", "name"):
            found.name = parser.get("metadata", "name").strip() or None
        return found
    found.formats.append("setup.cfg")
    found.name = parser.get("metadata", "name", fallback="").strip() or None
    python = parser.get("options", "python_requires", fallback="").strip()
    if python:
        found.requires_python = _checked_specifier(python, text, origin, "python_requires")
    found.requirements = _cfg_list(found, parser.get("options", "install_requires", fallback=""), text, origin, None)
    if parser.has_section("options.extras_require"):
        for extra, value in parser.items("options.extras_require"):
            found.optional[extra] = _cfg_list(found, value, text, origin, extra)
    return found


def _cfg_list(found: Found, value: str, text: str, origin: str, extra: str | None) -> list[str]:
    value = value.strip()
    if value.startswith("file:"):
        named = [n.strip() for n in value[5:].split(",") if n.strip()]
        found.wants += [(n, extra, "requirements") for n in named]
        found.notes.append(f"{origin}: {'extra ' + extra if extra else 'install_requires'} read from {', '.join(named)}")
        return []
    lines = [ln.split(" #")[0].strip() for ln in value.splitlines()]
    return [_checked(ln, text, origin) for ln in lines if ln and not ln.startswith("#")]


_SETUP_KEYS = ("name", "install_requires", "python_requires", "extras_require")


def read_setup_py(text: str, origin: str = "setup.py") -> Found:
    """Read literal setup() arguments with ast; the file is untrusted code and is never executed."""
    found = Found(formats=["setup.py"])
    try:
        tree = ast.parse(text, filename=origin)
    except (SyntaxError, ValueError) as exc:
        found.notes.append(f"{origin} could not be parsed ({type(exc).__name__}: {exc}); not executed, ignored")
        return found
    bound: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            bound[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            bound[node.target.id] = node.value
    # A name changed after binding (`reqs += [...]`, `reqs.append(...)`, or bound in a loop) is not a literal.
    for node in ast.walk(tree):
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            bound.pop(node.target.id, None)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and node.func.attr in ("append", "extend", "insert", "update", "remove", "pop", "clear")):
            bound.pop(node.func.value.id, None)
        elif (isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del))
              and isinstance(node.value, ast.Name)):
            bound.pop(node.value.id, None)
        elif isinstance(node, (ast.For, ast.With)) or (isinstance(node, ast.Assign) and node not in tree.body):
            for target in ast.walk(node.target if isinstance(node, ast.For) else node):
                if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                    bound.pop(target.id, None)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _called_name(n.func) == "setup"]
    if not calls:
        found.notes.append(f"{origin} has no setup() call; ignored")
        return found
    call = calls[0]
    if any(kw.arg is None for kw in call.keywords):
        found.notes.append(f"{origin} passes **kwargs to setup(); only the literal keywords were read")
    for kw in call.keywords:
        if kw.arg not in _SETUP_KEYS:
            continue
        try:
            value = _literal(kw.value, bound)
        except ValueError:
            found.notes.append(f"{origin} computes {kw.arg} dynamically; not executed")
            if kw.arg == "install_requires":
                found.deps_dynamic = True
            continue
        _apply_setup_value(found, kw.arg, value, text, origin)
    return found


def _apply_setup_value(found: Found, key: str, value: Any, text: str, origin: str) -> None:
    def as_list(v: Any) -> list[str]:
        if isinstance(v, str):
            v = v.splitlines()
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise ValueError
        return [x.strip() for x in v if x.strip() and not x.strip().startswith("#")]

    try:
        if key == "name" and isinstance(value, str):
            found.name = value
        elif key == "python_requires" and isinstance(value, str):
            found.requires_python = _checked_specifier(value, text, origin, "python_requires")
        elif key == "install_requires":
            found.requirements = [_checked(r, text, origin) for r in as_list(value)]
        elif key == "extras_require":
            if not isinstance(value, dict):
                raise ValueError
            found.optional = {str(k): [_checked(r, text, origin) for r in as_list(v)] for k, v in value.items()}
    except ValueError:
        found.notes.append(f"{origin} passes {key} in a shape setuptools would not read; ignored")


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal(node: ast.expr, bound: dict[str, ast.expr], depth: int = 0) -> Any:
    """ast.literal_eval, plus names bound to literals at module level, `+` of lists and dict(a=...)."""
    if depth > 10:
        raise ValueError("too deep")
    if isinstance(node, ast.Name) and node.id in bound:
        return _literal(bound[node.id], bound, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left, bound, depth + 1), _literal(node.right, bound, depth + 1)
        if type(left) is type(right) and isinstance(left, (list, tuple, str)):
            return left + right
        raise ValueError("not a literal")
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, bound, depth + 1) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("dict unpacking")
        return {_literal(k, bound, depth + 1): _literal(v, bound, depth + 1) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and _called_name(node.func) == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise ValueError("dict unpacking")
        return {kw.arg: _literal(kw.value, bound, depth + 1) for kw in node.keywords}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a literal") from None


# --------------------------------------------------------------------------------------------------------------
# requirements*.txt


@dataclass
class RequirementsFile:
    """One requirements file, read: named requirements, index options, and the files it points at."""

    requirements: list[str] = field(default_factory=list)
    indexes: list[IndexDecl] = field(default_factory=list)
    includes: list[tuple[str, str]] = field(default_factory=list)  # (path as written, "requirements"|"constraints")
    notes: list[str] = field(default_factory=list)


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
            out.notes.append(f"{origin}:{lineno}: {stripped!r} uses an environment variable; skipped")
            continue
        if re.search(r"\.(whl|tar\.gz|zip)$", stripped.split(";")[0].strip()) and "@" not in stripped:
            out.notes.append(f"{origin}:{lineno}: local archive {stripped!r} skipped (not a named requirement)")
            continue
        try:
            out.requirements.append(str(Requirement(stripped)))
        except InvalidRequirement as exc:
            if _NAMED.match(stripped):
                raise ProjectError(
                    "project-invalid-requirement",
                    f"{origin}:{lineno}: invalid requirement {stripped!r}: {_first_line(exc)}",
                    "fix the version specifier (PEP 440) or marker (PEP 508)",
                    context={"file": origin, "line": lineno},
                ) from None
            out.notes.append(f"{origin}:{lineno}: {stripped!r} is not a named requirement; skipped")
    if hashes_seen:
        out.notes.append(f"{origin}: --hash options ignored (the plan pins its own versions)")
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
        out.indexes.append(IndexDecl(url=value, kind=kind, origin=origin))
    elif kind == "editable":
        what = "the project itself" if value in (".", "./") else value
        out.notes.append(f"{origin}:{lineno}: editable install of {what} skipped (the image installs the project)")
    elif kind == "trusted-host" or option == "--trusted-host":
        out.notes.append(f"{origin}:{lineno}: --trusted-host {value} ignored (TLS is verified; use --ca-cert for a proxy)")
    elif option in _IGNORED_OPTIONS or kind == "ignored":
        out.notes.append(f"{origin}:{lineno}: option {option} ignored")
    else:
        out.notes.append(f"{origin}:{lineno}: unrecognised line {line!r} skipped")


def _read_requirements_tree(root: Path, rel: str, extra: str | None, kind: str,
                            visited: set[tuple[str, str]], read) -> Found:
    """Read a requirements file and everything it includes with -r/-c, each file once (cycles end there)."""
    found = Found()
    if extra is not None:
        found.optional[extra] = []
    queue: list[tuple[str, str, str]] = [(rel, kind, "")]
    while queue:
        name, file_kind, parent = queue.pop(0)
        where = parent or "project"
        if re.match(r"^[a-z][a-z0-9+.-]*://", name, re.I):
            found.notes.append(f"{where}: {name} is a URL; not fetched")
            continue
        norm = _normalise(PurePosixPath(parent).parent / name if parent else PurePosixPath(name))
        if norm is None:
            found.notes.append(f"{where}: {name} is outside the project; not read")
            continue
        if (file_kind, norm) in visited:
            continue
        visited.add((file_kind, norm))
        text = read(norm)
        if text is None:
            found.notes.append(f"{where}: {name} not found in the project; skipped")
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


# --------------------------------------------------------------------------------------------------------------
# Shared checks


def _checked(text: str, source: str, origin: str, needle: str | None = None) -> str:
    """A requirement string normalised by packaging, or ProjectError naming the file and line."""
    try:
        return str(Requirement(text.strip()))
    except InvalidRequirement as exc:
        _raise_invalid(text, source, origin, _first_line(exc), needle=needle)


def _checked_specifier(spec: str, source: str, origin: str, what: str) -> str:
    try:
        SpecifierSet(spec.strip())
        return spec.strip()
    except InvalidSpecifier as exc:
        _raise_invalid(f"{what} = {spec!r}", source, origin, str(exc), needle=spec)


def _raise_invalid(what: str, source: str, origin: str, reason: str, needle: str | None = None,
                   code: str = "project-invalid-requirement"):
    line = _line_of(source, needle or what)
    where = f"{origin}:{line}" if line else origin
    raise ProjectError(
        code,
        f"{where}: invalid {'marker' if code.endswith('marker') else 'requirement'} {what!r}: {reason}",
        "fix the version specifier (PEP 440) or marker (PEP 508)",
        context={"file": origin, "line": line},
    ) from None


def _line_of(source: str, needle: str) -> int | None:
    for number, line in enumerate(source.splitlines(), start=1):
        if needle.strip() and needle.strip() in line:
            return number
    return None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


__all__ = [
    "IndexDecl", "ProjectSource", "ProjectSpec", "Found", "RequirementsFile", "TORCH_FAMILY",
    "inspect_project", "target_environment", "torch_family", "read_pyproject", "read_requirements",
    "read_setup_cfg", "read_setup_py", "load_toml",
]

"""The pyproject.toml reader: PEP 621 [project], [tool.poetry], [tool.uv] and [tool.setuptools.dynamic].

[tool.envbuilder] is not read here: envbuilder.project.config is its only reader (it validates it).
Pure: text in, a Found out. Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import re
from typing import Any

from packaging.markers import InvalidMarker, Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from envbuilder.defaults import url_problem
from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.found import (Found, as_table, checked_requirement, checked_specifier, first_line, line_of,
                                      load_toml, raise_invalid, str_list, str_or_none, wrong_type)
from envbuilder.project.spec import IndexDecl


def read_pyproject(text: str, origin: str = "pyproject.toml") -> Found:
    """Read PEP 621 [project], [tool.poetry], [tool.uv] and [tool.setuptools.dynamic]."""
    data = load_toml(text, origin)
    check_types(data, text, origin)
    found = Found()
    tool = as_table(data.get("tool"))
    project = data.get("project")
    pep621_static_deps = False
    if isinstance(project, dict):
        found.formats.append("pep621")
        found.name = str_or_none(project.get("name"))
        if isinstance(project.get("requires-python"), str):
            found.requires_python = checked_specifier(project["requires-python"], text, origin, "requires-python")
        found.dynamic = [str(d) for d in project.get("dynamic", []) if isinstance(d, str)]
        for req in str_list(project.get("dependencies")):
            found.requirements.append(checked_requirement(req, text, origin))
        pep621_static_deps = "dependencies" in project
        for extra, reqs in as_table(project.get("optional-dependencies")).items():
            found.optional[extra] = [checked_requirement(r, text, origin) for r in str_list(reqs)]
        _setuptools_dynamic(found, as_table(as_table(tool.get("setuptools")).get("dynamic")), origin)

    poetry = tool.get("poetry")
    if isinstance(poetry, dict):
        _read_poetry(found, poetry, text, origin, supplement_only=pep621_static_deps)
    uv = tool.get("uv")
    if isinstance(uv, dict):
        _read_uv(found, uv, origin)
    found.build_requires_torch = _build_requires_torch(as_table(data.get("build-system")), origin)
    return found


def _build_requires_torch(build_system: dict[str, Any], origin: str) -> str | None:
    """Why the build backend needs torch (an extension compiled against it), or None."""
    for text in str_list(build_system.get("requires")):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue  # the build front end reports a broken build requirement; it says nothing about torch
        if canonicalize_name(req.name) == "torch":
            return f"{origin} [build-system] requires {req}"
    return None


def _setuptools_dynamic(found: Found, dyn: dict[str, Any], origin: str) -> None:
    if "dependencies" in found.dynamic:
        named = _named_files(dyn.get("dependencies"))
        if named:
            found.notes.append(Notice("dynamic-metadata", f"{origin}: dependencies are dynamic; read from {', '.join(named)}"))
            found.wants += [(n, None, "requirements") for n in named]
        else:
            found.deps_dynamic = True
            found.notes.append(Notice("dynamic-metadata", f"{origin}: dependencies are dynamic and [tool.setuptools.dynamic] names no file; "
                               "falling back to requirements files and setup.py"))
    if "optional-dependencies" in found.dynamic:
        extras = as_table(dyn.get("optional-dependencies"))
        for extra, spec in extras.items():
            found.wants += [(n, extra, "requirements") for n in _named_files(spec)]
            found.optional.setdefault(extra, [])
        if not extras:
            found.notes.append(Notice("dynamic-metadata", f"{origin}: optional-dependencies are dynamic and name no file; extras unknown"))


def _named_files(spec: Any) -> list[str]:
    """The files of a setuptools `{file = ...}` directive (a string or a list)."""
    named = as_table(spec).get("file")
    return [named] if isinstance(named, str) else str_list(named)


# --- Poetry -----------------------------------------------------------------------------------------------------

_DEV_GROUPS = {"dev", "develop", "development", "test", "tests", "testing", "lint", "linting", "docs", "doc", "typing"}


def _read_poetry(found: Found, poetry: dict[str, Any], text: str, origin: str, *, supplement_only: bool) -> None:
    found.formats.append("poetry")
    found.name = found.name or str_or_none(poetry.get("name"))
    deps = as_table(poetry.get("dependencies"))
    if "python" in deps and found.requires_python is None and isinstance(deps["python"], str):
        found.requires_python = _poetry_constraint(deps["python"], text, origin, "python", found.notes)
    by_source: dict[str, list[tuple[str, str | None]]] = {}
    optional_reqs: dict[str, list[str]] = {}
    if supplement_only and deps:
        found.notes.append(Notice("poetry-scope", f"{origin}: [project] lists the dependencies; [tool.poetry.dependencies] read for sources only"))
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
        for extra, names in as_table(poetry.get("extras")).items():
            bucket = found.optional.setdefault(extra, [])
            for pkg in str_list(names):
                pkg_name = re.split(r"[\[<>=!~;\s]", pkg, maxsplit=1)[0]
                bucket += optional_reqs.get(canonicalize_name(pkg_name), [])
        in_extras = {canonicalize_name(Requirement(r).name) for reqs in found.optional.values() for r in reqs}
        for pkg in sorted(set(optional_reqs) - in_extras):
            found.notes.append(Notice("entry-skipped", f"{origin}: optional dependency {pkg} is in no [tool.poetry.extras]; skipped"))
    if "dev-dependencies" in poetry:
        found.notes.append(Notice("poetry-scope", f"{origin}: [tool.poetry.dev-dependencies] ignored (development only)"))
    for group, table in as_table(poetry.get("group")).items():
        group_deps = as_table(as_table(table).get("dependencies"))
        if group.lower() in _DEV_GROUPS or as_table(table).get("optional") is True:
            found.notes.append(Notice("poetry-scope", f"{origin}: poetry group {group!r} ignored ({len(group_deps)} dependencies)"))
            continue
        found.notes.append(Notice("poetry-scope", f"{origin}: poetry group {group!r} included (poetry installs it by default)"))
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
                found.notes.append(Notice("index-ignored", f"{origin}: poetry source {src['name']!r} has no url; ignored"))
            continue
        priority = src.get("priority") or ("default" if src.get("default") else "secondary" if src.get("secondary") else "primary")
        uses = by_source.get(src["name"], [])
        found.indexes.append(IndexDecl(
            url=url, kind="poetry-source", name=src["name"], packages=tuple(dict.fromkeys(n for n, _ in uses)),
            marker=_any_marker(m for _, m in uses), explicit=priority == "explicit", origin=origin))
    for source in sorted(set(by_source) - {s.get("name") for s in sources if isinstance(s, dict)}):
        found.notes.append(Notice("index-ignored", f"{origin}: dependencies name poetry source {source!r}, which is not declared"))


def _poetry_entries(name: str, value: Any, text: str, origin: str, notes: list[Notice]) -> list[tuple[str, str | None, bool]]:
    """One poetry dependency (string, table or list of tables) as (PEP 508 string, source, optional) tuples."""
    entries = value if isinstance(value, list) else [value]
    out = []
    for entry in entries:
        if isinstance(entry, str):
            entry = {"version": entry}
        if not isinstance(entry, dict):
            notes.append(Notice("entry-skipped", f"{origin}: poetry dependency {name} has an unreadable value; skipped"))
            continue
        extras = str_list(entry.get("extras"))
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
            notes.append(Notice("entry-skipped", f"{origin}: poetry path dependency {name} ({entry['path']}) skipped; install it with the project"))
            continue
        else:
            body = head + _poetry_constraint(str(entry.get("version", "*")), text, origin, name, notes)
        req = body + ("; " + " and ".join(f"({m})" if len(markers) > 1 else m for m in markers) if markers else "")
        source = entry.get("source") if isinstance(entry.get("source"), str) else None
        out.append((checked_requirement(req, text, origin, needle=name), source, entry.get("optional") is True))
    return out


def _poetry_constraint(constraint: str, text: str, origin: str, what: str, notes: list[Notice]) -> str:
    """Poetry's version syntax (^1.2, ~1.2, *, `>=1,<2`, `>=1 <2`) as a PEP 440 specifier set string."""
    raw = constraint.strip()
    if raw in ("", "*"):
        return ""
    if "|" in raw:
        # `||` alternatives have no PEP 440 spelling; the only honest single bound is none.
        notes.append(Notice("range-widened", f"{origin}: {what} = {constraint!r} uses `||`, which PEP 440 cannot express; read as any version"))
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
            raise_invalid(f"{what} = {constraint!r}", text, origin, "not a poetry version constraint", needle=constraint)
    result = ",".join(out)
    try:
        SpecifierSet(result)
    except InvalidSpecifier as exc:
        raise_invalid(f"{what} = {constraint!r}", text, origin, str(exc), needle=constraint)
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
    sources = as_table(uv.get("sources"))
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
                    raise_invalid(f"{pkg} marker {marker!r}", "", origin, first_line(exc), code="project-invalid-marker")
            if isinstance(entry.get("index"), str):
                uses.setdefault(entry["index"], []).append((pkg, marker))
            elif entry.get("workspace"):
                continue
            else:
                kind = next((k for k in ("git", "url", "path") if k in entry), "unknown")
                found.notes.append(Notice("index-ignored", f"{origin}: uv source for {pkg} is a {kind} source; not an index, left to uv"))
    names = set()
    for index in indexes:
        name, url = index.get("name"), index.get("url")
        if not isinstance(url, str):
            found.notes.append(Notice("index-ignored", f"{origin}: [[tool.uv.index]] {name!r} has no url; ignored"))
            continue
        names.add(name)
        used = uses.get(name, []) if isinstance(name, str) else []
        found.indexes.append(IndexDecl(
            url=url, kind="uv-index", name=name if isinstance(name, str) else None,
            packages=tuple(dict.fromkeys(p for p, _ in used)), marker=_any_marker(m for _, m in used),
            explicit=index.get("explicit") is True, origin=origin))
    for name in sorted(set(uses) - names):
        found.notes.append(Notice("index-ignored", f"{origin}: [tool.uv.sources] names index {name!r}, which is not declared"))
    for key, kind in (("index-url", "index-url"), ("extra-index-url", "extra-index-url"), ("find-links", "find-links")):
        value = uv.get(key)
        for url in [value] if isinstance(value, str) else str_list(value):
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


# --- types ------------------------------------------------------------------------------------------------------

# The fields envbuilder reads, by dotted path: the type each must have (PEP 621, PEP 518, uv's and poetry's
# documented schemas) and an example of the right spelling. A wrong type is refused, never dropped silently:
# `dependencies = "torch"` would otherwise build an image without torch.
_TABLE, _STR, _STRS = "a table", "a string", "an array of strings"
_FIELDS: dict[str, tuple[str, str]] = {
    "project": (_TABLE, '[project] with name = "demo" and dependencies = ["torch"]'),
    "project.name": (_STR, 'name = "demo"'),
    "project.version": (_STR, 'version = "0.1.0"'),
    "project.requires-python": (_STR, 'requires-python = ">=3.10"'),
    "project.dependencies": (_STRS, 'dependencies = ["torch>=2.4"]'),
    "project.optional-dependencies": (_TABLE, '[project.optional-dependencies] with onnx = ["onnxruntime"]'),
    "project.dynamic": (_STRS, 'dynamic = ["version"]'),
    "build-system": (_TABLE, '[build-system] with requires = ["setuptools"]'),
    "build-system.requires": (_STRS, 'requires = ["setuptools>=61"]'),
    "tool": (_TABLE, "[tool.NAME] tables"),
    "tool.uv": (_TABLE, "[tool.uv]"),
    "tool.uv.index": ("an array of tables", '[[tool.uv.index]] with name = "pytorch" and url = "https://..."'),
    "tool.uv.sources": (_TABLE, '[tool.uv.sources] with torch = { index = "pytorch" }'),
    "tool.poetry": (_TABLE, "[tool.poetry]"),
    "tool.poetry.name": (_STR, 'name = "demo"'),
    "tool.poetry.dependencies": (_TABLE, '[tool.poetry.dependencies] with torch = "^2.4"'),
    "tool.poetry.dependencies.python": (_STR, 'python = "^3.10"'),
    "tool.poetry.source": ("an array of tables", '[[tool.poetry.source]] with name = "pytorch" and url = "https://..."'),
}


def _has_type(value: Any, expected: str) -> bool:
    if expected == _TABLE:
        return isinstance(value, dict)
    if expected == _STR:
        return isinstance(value, str)
    item = str if expected == _STRS else dict
    return isinstance(value, list) and all(isinstance(v, item) for v in value)


def check_types(data: dict[str, Any], text: str, origin: str) -> None:
    """Refuse a field envbuilder reads when it has the wrong type, and an index whose URL is not one."""
    for path, (expected, example) in _FIELDS.items():
        parent, _, key = path.rpartition(".")
        holder = _get(data, parent) if parent else data
        if not isinstance(holder, dict) or key not in holder:
            continue
        value = holder[key]
        if not _has_type(value, expected):
            raise wrong_type(_where(text, origin, key), f"[{parent}] {key}" if parent else key, expected, value,
                             example, origin)
    for extra, reqs in as_table(_get(data, "project.optional-dependencies")).items():
        if not isinstance(reqs, list) or not all(isinstance(r, str) for r in reqs):
            raise wrong_type(_where(text, origin, extra), f"[project.optional-dependencies] {extra}", _STRS, reqs,
                             f'{extra} = ["onnxruntime"]', origin)
    for package, source in as_table(_get(data, "tool.uv.sources")).items():
        if not _has_type(source, _TABLE) and not _has_type(source, "an array of tables"):
            raise wrong_type(_where(text, origin, package), f"[tool.uv.sources] {package}", "a table or an array of tables",
                             source, f'{package} = {{ index = "pytorch" }}', origin)
    uv = as_table(_get(data, "tool.uv"))
    urls = [("[[tool.uv.index]] url", i.get("url"), False) for i in uv.get("index", [])]
    urls += [("[[tool.poetry.source]] url", s.get("url"), False) for s in _get(data, "tool.poetry.source") or []]
    for key, folder_ok in (("index-url", False), ("extra-index-url", False), ("find-links", True)):
        value = uv.get(key)
        urls += [(f"[tool.uv] {key}", v, folder_ok) for v in ([value] if isinstance(value, str) else str_list(value))]
    for what, url, folder_ok in urls:
        if url is None:
            continue  # reported as an index without a URL (index-ignored)
        problem = url_problem(url, folder_ok=folder_ok) if isinstance(url, str) else "it is not a string"
        if problem:
            raise ProjectError("project-invalid-url", f"{_where(text, origin, str(url))}: {what} {url!r}: {problem}",
                               "write an http(s) index URL, e.g. url = \"https://download.pytorch.org/whl/cu128\"",
                               context={"file": origin, "url": str(url)})


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for key in dotted.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _where(text: str, origin: str, needle: str) -> str:
    line = line_of(text, f"{needle} =") or line_of(text, needle)
    return f"{origin}:{line}" if line else origin

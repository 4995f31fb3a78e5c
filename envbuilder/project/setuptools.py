"""The setuptools readers: setup.cfg (configparser) and setup.py (ast, literal arguments only, never run).

setup.py is untrusted code, so only literal setup() keywords are read. Pure: text in, a Found out.
Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import ast
import configparser
from typing import Any

from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.found import Found, checked_requirement, checked_specifier, too_deep


def read_setup_cfg(text: str, origin: str = "setup.cfg") -> Found:
    """Read [metadata] name, [options] install_requires/python_requires and [options.extras_require]."""
    # strict, as setuptools reads it: a section or option given twice fails its build, so it is refused here.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
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
        found.requires_python = checked_specifier(python, text, origin, "python_requires")
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
        found.notes.append(Notice("dynamic-metadata", f"{origin}: {'extra ' + extra if extra else 'install_requires'} read from {', '.join(named)}"))
        return []
    lines = [ln.split(" #")[0].strip() for ln in value.splitlines()]
    return [checked_requirement(ln, text, origin) for ln in lines if ln and not ln.startswith("#")]


_SETUP_KEYS = ("name", "install_requires", "python_requires", "extras_require")


def read_setup_py(text: str, origin: str = "setup.py") -> Found:
    """Read literal setup() arguments with ast; the file is untrusted code and is never executed."""
    found = Found(formats=["setup.py"])
    try:
        tree = ast.parse(text, filename=origin)
    except (RecursionError, MemoryError):
        raise too_deep(origin, "Python code") from None  # Python itself could not compile it to run it
    except (SyntaxError, ValueError) as exc:
        found.notes.append(Notice("dynamic-metadata", f"{origin} could not be parsed ({type(exc).__name__}: {exc}); not executed, ignored"))
        return found
    found.build_requires_torch = _imports_torch(tree, origin)
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
        found.notes.append(Notice("dynamic-metadata", f"{origin} has no setup() call; ignored"))
        return found
    call = calls[0]
    if any(kw.arg is None for kw in call.keywords):
        found.notes.append(Notice("dynamic-metadata", f"{origin} passes **kwargs to setup(); only the literal keywords were read"))
    for kw in call.keywords:
        if kw.arg not in _SETUP_KEYS:
            continue
        try:
            value = _literal(kw.value, bound)
        except ValueError:
            found.notes.append(Notice("dynamic-metadata", f"{origin} computes {kw.arg} dynamically; not executed"))
            if kw.arg == "install_requires":
                found.deps_dynamic = True
            continue
        _apply_setup_value(found, kw.arg, value, text, origin)
    return found


def _imports_torch(tree: ast.AST, origin: str) -> str | None:
    """Why setup.py needs torch at build time (it imports torch, usually torch.utils.cpp_extension), or None."""
    imported = [name for node in ast.walk(tree)
                for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
                if name == "torch" or name.startswith("torch.")]
    extension = [name for name in imported if name.startswith("torch.utils.cpp_extension")]
    if extension:
        return f"{origin} imports {extension[0]} (a CUDA/C++ extension)"
    return f"{origin} imports {imported[0]}" if imported else None


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
            found.requires_python = checked_specifier(value, text, origin, "python_requires")
        elif key == "install_requires":
            found.requirements = [checked_requirement(r, text, origin) for r in as_list(value)]
        elif key == "extras_require":
            if not isinstance(value, dict):
                raise ValueError
            found.optional = {str(k): [checked_requirement(r, text, origin) for r in as_list(v)] for k, v in value.items()}
    except ValueError:
        found.notes.append(Notice("dynamic-metadata", f"{origin} passes {key} in a shape setuptools would not read; ignored"))


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

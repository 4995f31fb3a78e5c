"""Whether and how the project itself installs (a package with a build backend), and whether that build compiles.

`read_install` decides from pyproject.toml and setup.py text whether the project is a package the image can
install (editable, without dependencies), with which build backend and build requirements, and whether its
build compiles C/C++ (so the image needs a compiler). uv's rule decides what counts as a package: a
[build-system] table or a setup.py makes one; a pyproject.toml with a [project] table and no [build-system]
is a "virtual" project whose dependencies are installed but not the project itself (uv: `tool.uv.package`),
unless it configures setuptools ([tool.setuptools]) or sets `tool.uv.package = true`.
Pure: text in, a value out (ProjectInstall, in project.spec). Must not import subprocess, urllib, docker, the resolver or the CLI.
"""

from __future__ import annotations

import ast
from typing import Any

from envbuilder.notices import Notice
from envbuilder.project.found import as_table, load_toml, str_list
from envbuilder.project.spec import ProjectInstall

# PEP 517's fallback when a project has no [build-system] (pip and uv build it with setuptools' legacy backend).
LEGACY_BACKEND = "setuptools.build_meta:__legacy__"
LEGACY_REQUIRES = ("setuptools>=40.8.0",)
# Build backends that compile C/C++ sources by design (CMake, Meson).
COMPILING_BACKENDS = {"scikit_build_core.build": "scikit-build-core (CMake)", "mesonpy": "meson-python"}
# setup.py calls that declare compiled modules (setuptools, torch.utils.cpp_extension, pybind11, Cython).
EXTENSION_CALLS = ("Extension", "CppExtension", "CUDAExtension", "Pybind11Extension", "cythonize")


def read_install(pyproject: str | None, setup_py: str | None) -> tuple[ProjectInstall | None, tuple[Notice, ...]]:
    """The project's install (None: not a package) and notes for the user (why an entry point won't exist)."""
    data = load_toml(pyproject, "pyproject.toml") if pyproject is not None else {}
    build_system = as_table(data.get("build-system"))
    tool = as_table(data.get("tool"))
    project = data.get("project")
    compiles = _setup_py_compiles(setup_py) if setup_py is not None else None
    compiles = compiles or _pyproject_compiles(build_system, tool)
    uv_package = as_table(tool.get("uv")).get("package")
    if uv_package is False:
        return None, (Notice("project-not-installed", "pyproject.toml sets [tool.uv] package = false: the project's "
                             "dependencies are installed, not the project itself"),)
    if build_system:
        backend = build_system.get("build-backend")
        return ProjectInstall(backend=backend if isinstance(backend, str) and backend else LEGACY_BACKEND,
                              requires=tuple(str_list(build_system.get("requires"))) or LEGACY_REQUIRES,
                              why="pyproject.toml [build-system]", compiles=compiles), ()
    if setup_py is not None:
        return ProjectInstall(backend=LEGACY_BACKEND, requires=LEGACY_REQUIRES, why="setup.py", compiles=compiles), ()
    if isinstance(project, dict) and (uv_package is True or "setuptools" in tool):
        why = "[tool.uv] package = true" if uv_package is True else "[project] with [tool.setuptools]"
        return ProjectInstall(backend=LEGACY_BACKEND, requires=LEGACY_REQUIRES, why=f"pyproject.toml {why}",
                              compiles=compiles), ()
    if isinstance(project, dict) and as_table(project.get("scripts")):
        return None, (Notice("project-not-installed", "pyproject.toml has [project.scripts] but no [build-system]: the "
                             "project is not installed, so its entry points will not exist; declare a [build-system] "
                             "(e.g. setuptools) to install it", "add [build-system] requires = [\"setuptools\"] to "
                             "pyproject.toml"),)
    return None, ()


def _setup_py_compiles(text: str) -> str | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None  # the setup.py reader reports an unparsable file; it is never executed
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "ext_modules":
            return "setup.py declares ext_modules"
        if isinstance(node, ast.Call) and _name(node.func) in EXTENSION_CALLS:
            return f"setup.py calls {_name(node.func)}()"
    return None


def _pyproject_compiles(build_system: dict[str, Any], tool: dict[str, Any]) -> str | None:
    backend = build_system.get("build-backend")
    if isinstance(backend, str) and backend in COMPILING_BACKENDS:
        return f"pyproject.toml's build backend is {COMPILING_BACKENDS[backend]}"
    if as_table(tool.get("setuptools")).get("ext-modules"):
        return "pyproject.toml declares [tool.setuptools] ext-modules"
    return None


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None

"""The project as an installed package: which projects are packages (project.install), and how the Dockerfile
installs them (editable, no dependencies, extensions kept, a compiler when the build compiles, torch first
when the build needs it), plus a torch wheel named by URL."""

from __future__ import annotations

import pytest
from golden.cases import cpu_plan, package_plan, torch_extension_plan

from envbuilder.project.inspect import inspect_project
from envbuilder.project.install import LEGACY_BACKEND, read_install
from envbuilder.render import RenderOptions
from envbuilder.render.dockerfile import render_dockerfile
from envbuilder.render.network import install_steps, project_steps
from envbuilder.render.scripts import render_bash

BUILD_SYSTEM = '[build-system]\nrequires = ["setuptools>=64", "wheel"]\nbuild-backend = "setuptools.build_meta"\n'
PROJECT = '[project]\nname = "p"\nversion = "1"\n'

# (pyproject.toml, setup.py) -> (backend or None when not a package, requires, compiles?, a note mentioning)
CASES = {
    "build-system": (BUILD_SYSTEM + PROJECT, None, ("setuptools.build_meta", ("setuptools>=64", "wheel"), False, None)),
    "setup.py only": (None, "from setuptools import setup\nsetup(name='p')\n", (LEGACY_BACKEND, ("setuptools>=40.8.0",), False, None)),
    "setup.py ext_modules": (None, "from setuptools import setup, Extension\nsetup(ext_modules=[Extension('p._c', ['c.c'])])\n",
                             (LEGACY_BACKEND, ("setuptools>=40.8.0",), True, None)),
    "cpp_extension": (BUILD_SYSTEM, "from torch.utils.cpp_extension import CUDAExtension\nexts = [CUDAExtension('k', ['k.cu'])]\n",
                      ("setuptools.build_meta", ("setuptools>=64", "wheel"), True, None)),
    "scikit-build-core": ('[build-system]\nrequires = ["scikit-build-core"]\nbuild-backend = "scikit_build_core.build"\n', None,
                          ("scikit_build_core.build", ("scikit-build-core",), True, None)),
    "[project] only: uv's virtual project": (PROJECT + 'dependencies = ["numpy"]\n', None, (None, (), False, None)),
    "[project.scripts] without a build system": (PROJECT + '[project.scripts]\np-train = "p:main"\n', None,
                                                 (None, (), False, "entry points")),
    "[tool.setuptools] config": (PROJECT + '[tool.setuptools]\npackages = ["p"]\n', None, (LEGACY_BACKEND, ("setuptools>=40.8.0",), False, None)),
    "tool.uv package = false": (BUILD_SYSTEM + PROJECT + "[tool.uv]\npackage = false\n", None, (None, (), False, "package = false")),
    "requirements only": (None, None, (None, (), False, None)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_which_projects_are_packages(case):
    pyproject, setup_py, (backend, requires, compiles, note) = CASES[case]
    install, notes = read_install(pyproject, setup_py)
    if backend is None:
        assert install is None
    else:
        assert (install.backend, install.requires, bool(install.compiles)) == (backend, requires, compiles)
    assert (note is None and not notes) or (note is not None and note in " ".join(map(str, notes)))


def test_the_build_fixture_is_a_package_that_compiles(data_dir):
    spec = inspect_project(data_dir / "projects-build" / "mypkg")
    assert spec.install is not None and spec.install.compiles == "setup.py declares ext_modules"
    assert spec.install.why == "pyproject.toml [build-system]"


def _stage(text: str, name: str) -> str:
    start = text.index(f" AS {name}\n")
    end = text.find("\nFROM ", start)
    return text[start:] if end < 0 else text[start:end]


def test_a_package_is_installed_editable_without_dependencies_in_a_throwaway_mount():
    text = render_dockerfile(package_plan(), RenderOptions())
    project = _stage(text, "project")
    assert "--mount=type=bind,target=/workspace/project,readwrite" in project
    assert "--no-deps" in project and "--editable /workspace/project" in project
    assert "--no-build-isolation" not in project  # its build backend comes from the index, isolated
    assert project.index("COPY") < project.index("uv pip install") < project.index("USER envbuilder")
    # extensions: copied out of the project folder into the venv, and served from there by a .pth finder
    assert "/opt/venv/envbuilder-extensions" in project and "_envbuilder_extensions.pth" in project
    assert "build-essential" in _stage(text, "system") and "python3-dev" in _stage(text, "system")


def test_a_project_that_is_no_package_keeps_pythonpath_only():
    text = render_dockerfile(cpu_plan(), RenderOptions())
    project = _stage(text, "project")
    assert 'PYTHONPATH="/workspace/project"' in project
    assert "uv pip install" not in project and "--mount=type=bind" not in project
    assert "build-essential" not in text


def test_a_pure_python_package_needs_no_compiler_and_no_extension_finder():
    plan = package_plan()
    plan = plan.model_copy(update={"install": plan.install.model_copy(update={"compiles": None})})
    text = render_dockerfile(plan, RenderOptions())
    assert "--editable /workspace/project" in text
    assert "build-essential" not in text and "envbuilder-extensions" not in text


def test_a_build_that_needs_torch_installs_its_build_requirements_then_builds_without_isolation():
    plan = torch_extension_plan()
    steps = {s.name: s for s in project_steps(plan, RenderOptions(), "/workspace/project")}
    # torch itself is never a build requirement installed again: the torch pins ride along instead
    assert steps["build"].requirements[:3] == ("setuptools>=64", "wheel", "ninja")
    assert steps["build"].requirements[3] == f"torch @ {plan.torch.url}"
    text = render_dockerfile(plan, RenderOptions())
    deps = _stage(text, "dependencies")
    assert deps.count("uv pip install") == 2 and "'setuptools>=64'" in deps
    project = _stage(text, "project")
    assert "--no-build-isolation" in project and "build-essential" in _stage(text, "system")


def test_a_torch_wheel_named_by_url_is_installed_from_that_url_everywhere():
    plan = torch_extension_plan()
    torch_step = install_steps(plan, RenderOptions())[0]
    assert torch_step.requirements[0] == f"torch @ {plan.torch.url}"
    assert "torch==2.13.0+cu128" not in render_dockerfile(plan, RenderOptions())
    assert f"'torch @ {plan.torch.url}'" in render_bash(plan, RenderOptions())

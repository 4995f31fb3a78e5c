"""Project readers on the fixture projects in tests/data/projects, and marker evaluation for a target."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from envbuilder.errors import ProjectError
from envbuilder.project.inspect import inspect_project
from envbuilder.project.markers import target_environment
from envbuilder.project.pyproject import read_pyproject
from envbuilder.project.requirements import read_requirements
from envbuilder.project.setuptools import read_setup_py
from envbuilder.project.spec import ProjectSource, ProjectSpec, torch_family

PROJECTS = Path(__file__).parent / "data" / "projects"
LINUX = target_environment("linux", "x86_64", "3.11")
WINDOWS = target_environment("windows", "x86_64", "3.11")
MAC = target_environment("macos", "arm64", "3.12")


def names(reqs) -> list[str]:
    return [str(r) for r in reqs]


# --- fixture projects -----------------------------------------------------------------------------------------


def test_poetry_era_caret_tilde_and_explicit_source():
    spec = inspect_project(PROJECTS / "poetry-era")
    assert spec.formats == ("poetry",)
    assert spec.name == "poetry-era"
    assert spec.requires_python == ">=3.9,<4.0"
    assert "torch<3.0.0,>=2.0.1" in spec.requirements  # ^2.0.1
    assert "torchvision<0.16.0,>=0.15.2" in spec.requirements  # ~0.15.2
    assert "numpy<1.25,>=1.24" in spec.requirements  # ~1.24
    assert "tqdm" in spec.requirements  # *
    assert 'pywin32>=305; sys_platform == "win32"' in spec.requirements
    assert not any(r.startswith("pytest") or r.startswith("black") for r in spec.requirements)
    assert spec.optional == {"export": ('onnxruntime-gpu<2.0,>=1.15; sys_platform == "linux"',)}
    (index,) = spec.indexes
    assert index.kind == "poetry-source" and index.name == "pytorch-cu118" and index.explicit
    assert index.url == "https://download.pytorch.org/whl/cu118"
    assert index.packages == ("torch", "torchvision")
    assert any("group 'dev' ignored" in n for n in map(str, spec.notes))


def test_poetry_python_and_list_constraints_become_markers():
    spec = inspect_project(PROJECTS / "poetry-era")
    scipy = [r for r in spec.requirements if r.startswith("scipy")]
    assert len(scipy) == 2
    assert names(r for r in spec.requirements_for(LINUX) if r.name == "scipy") == ["scipy<2.0,>=1.10"]
    py312 = target_environment("linux", "x86_64", "3.12")
    assert names(r for r in spec.requirements_for(py312) if r.name == "scipy") == ["scipy<2.0,>=1.11"]
    assert not any(r.name == "dataclasses" for r in spec.requirements_for(LINUX))  # python = "<3.7"
    assert any(r.name == "pywin32" for r in spec.requirements_for(WINDOWS))
    assert not any(r.name == "pywin32" for r in spec.requirements_for(LINUX))


@pytest.mark.parametrize(
    "constraint, expected",
    [
        ("^1.2.3", ">=1.2.3,<2.0.0"), ("^0.2.3", ">=0.2.3,<0.3.0"), ("^0.0.3", ">=0.0.3,<0.0.4"),
        ("^1.2", ">=1.2,<2.0"), ("^1", ">=1,<2"), ("^0", ">=0,<1"), ("~1.2.3", ">=1.2.3,<1.3.0"),
        ("~1.2", ">=1.2,<1.3"), ("~1", ">=1,<2"), ("~=1.2", "~=1.2"), ("*", ""), ("1.2.3", "==1.2.3"),
        (">=1.2, <2.0", ">=1.2,<2.0"), (">= 1.2 < 2.0", ">=1.2,<2.0"), ("1.2.*", "==1.2.*"),
    ],
)
def test_poetry_constraints(constraint, expected):
    text = f'[tool.poetry]\nname = "x"\n[tool.poetry.dependencies]\nfoo = "{constraint}"\n'
    (req,) = read_pyproject(text).requirements
    assert Requirement(req).specifier == SpecifierSet(expected)


def test_poetry_or_constraint_is_noted_not_guessed():
    found = read_pyproject('[tool.poetry.dependencies]\nfoo = "^1.0 || ^2.0"\n')
    assert found.requirements == ["foo"]
    assert any("||" in n for n in map(str, found.notes))


def test_requirements_only_options_includes_and_constraints():
    spec = inspect_project(PROJECTS / "requirements-only")
    assert spec.formats == ("requirements",)
    assert spec.files == ("requirements.txt", "requirements-base.txt", "constraints.txt")
    assert "torch==2.1.2+cu121" in spec.requirements
    assert 'torchaudio==2.1.2+cu121; sys_platform == "linux"' in spec.requirements
    assert "transformers<5,>=4.36" in spec.requirements  # line continuation
    assert "numpy<2,>=1.24" in spec.requirements and "pandas" in spec.requirements  # via -r
    assert spec.constraints == ("urllib3<2",)
    kinds = [(i.kind, i.url) for i in spec.indexes]
    assert kinds == [
        ("index-url", "https://download.pytorch.org/whl/cu121"),
        ("extra-index-url", "https://pypi.org/simple"),
        ("find-links", "https://data.pyg.org/whl/torch-2.1.0+cu121.html"),
    ]
    notes = "\n".join(map(str, spec.notes))
    assert "--trusted-host pypi.org ignored" in notes
    assert "editable install of the project itself" in notes
    assert "./vendor/some_pkg" in notes
    assert "requirements-dev.txt" in notes  # listed, not read
    assert not any(r.startswith("pytest") for r in spec.requirements)


def test_requirements_markers_for_target():
    spec = inspect_project(PROJECTS / "requirements-only")
    linux = {r.name for r in spec.requirements_for(LINUX)}
    mac = {r.name for r in spec.requirements_for(MAC)}
    assert {"torchaudio", "triton"} <= linux
    assert not {"torchaudio", "triton"} & mac
    arm_linux = {r.name for r in spec.requirements_for(target_environment("linux", "aarch64", "3.11"))}
    assert "torchaudio" in arm_linux and "triton" not in arm_linux


def test_read_requirements_syntax():
    text = "\n".join([
        "# comment",
        "--requirement=other.txt",
        "-rthird.txt",
        "--constraint c.txt",
        "-i https://example.org/simple",
        "--extra-index-url=https://example.org/extra",
        "foo==1.0  # inline comment",
        "bar @ https://example.org/bar-1.0.tar.gz#sha256=abc",
        "baz>=1; python_version < '3.12' --hash=sha256:abc",
        "--pre",
        "--weird-option",
        "https://example.org/pkg-1.0-py3-none-any.whl",
    ])
    out = read_requirements(text, "r.txt")
    assert out.includes == [("other.txt", "requirements"), ("third.txt", "requirements"), ("c.txt", "constraints")]
    assert out.requirements == [
        "foo==1.0", "bar @ https://example.org/bar-1.0.tar.gz#sha256=abc", 'baz>=1; python_version < "3.12"',
    ]
    assert [i.kind for i in out.indexes] == ["index-url", "extra-index-url"]
    notes = "\n".join(map(str, out.notes))
    assert "--pre ignored" in notes and "--weird-option" in notes and "--hash options ignored" in notes
    assert "pkg-1.0-py3-none-any.whl" in notes


def test_direct_url_and_local_version_pins():
    spec = inspect_project(PROJECTS / "direct-url")
    linux = spec.requirements_for(LINUX)
    (torch,) = [r for r in linux if r.name == "torch"]
    assert torch.url == "https://download.pytorch.org/whl/cu128/torch-2.7.0%2Bcu128-cp311-cp311-manylinux_2_28_x86_64.whl"
    (torch_win,) = [r for r in spec.requirements_for(WINDOWS) if r.name == "torch"]
    assert str(torch_win.specifier) == "==2.7.0+cpu"
    assert any(r.name == "safetensors" for r in linux)


def test_setuptools_dynamic_reads_named_files():
    spec = inspect_project(PROJECTS / "setuptools-dynamic")
    assert spec.dynamic == ("dependencies", "optional-dependencies")
    assert spec.requirements == ("numpy>=1.26", "torch>=2.2")
    assert spec.optional == {"cuda": ("nvidia-ml-py>=12",)}
    assert "requirements/base.txt" in spec.files
    assert any("dependencies are dynamic" in n for n in map(str, spec.notes))


def test_uv_sources_with_markers_and_system_packages():
    spec = inspect_project(PROJECTS / "uv-markers")
    assert spec.formats == ("pep621", "uv")
    assert spec.system_packages == ("ffmpeg", "git-lfs", "libgl1")
    assert spec.import_roots == ("src",)
    cu, cpu = spec.indexes
    assert (cu.name, cu.kind, cu.explicit, cu.packages) == ("pytorch-cu128", "uv-index", True, ("torch", "torchvision"))
    assert cu.marker == 'sys_platform == "linux"' and cpu.marker == 'sys_platform != "linux"'
    assert [i.name for i in spec.indexes_for(LINUX)] == ["pytorch-cu128"]
    assert [i.name for i in spec.indexes_for(WINDOWS)] == ["pytorch-cpu"]
    assert [i.name for i in spec.indexes_for(MAC)] == ["pytorch-cpu"]


def test_uv_single_table_source():
    found = read_pyproject(
        '[project]\nname = "a"\ndependencies = ["torch"]\n'
        '[tool.uv.sources]\ntorch = { index = "cpu" }\n'
        '[[tool.uv.index]]\nname = "cpu"\nurl = "https://download.pytorch.org/whl/cpu"\n'
    )
    (index,) = found.indexes
    assert index.packages == ("torch",) and index.marker is None and not index.explicit


def test_setup_py_literal_names_bound_at_module_level():
    spec = inspect_project(PROJECTS / "setup-py-literal")
    assert spec.formats == ("setup.py",)
    assert spec.name == "legacy-detector"
    assert spec.requires_python == ">=3.8"
    assert spec.requirements == ("torch<2.1,>=1.13", "torchvision", "opencv-python-headless>=4.7")
    assert spec.optional == {"onnx": ("onnx>=1.14", "onnxruntime>=1.15")}
    assert not spec.notes


def test_setup_py_dynamic_is_noted_and_falls_back_to_requirements():
    spec = inspect_project(PROJECTS / "setup-py-dynamic")
    assert spec.formats == ("setup.py", "requirements")
    assert spec.requirements == ("torch>=2.0", "einops")
    assert spec.optional == {}  # extras mutated under an `if`: not a literal
    notes = "\n".join(map(str, spec.notes))
    assert "setup.py computes install_requires dynamically; not executed" in notes
    assert "setup.py computes extras_require dynamically; not executed" in notes


def test_setup_py_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\nfrom setuptools import setup\nsetup(name='x')\n"
    (tmp_path / "setup.py").write_text(source)
    spec = inspect_project(tmp_path)
    assert spec.name == "x" and not marker.exists()


def test_setup_py_syntax_error_is_a_note():
    found = read_setup_py("setup(name='x'\n")
    assert found.requirements == [] and "could not be parsed" in found.notes[0].message


def test_setup_cfg():
    spec = inspect_project(PROJECTS / "setup-cfg")
    assert spec.name == "cfg-project"
    assert spec.requires_python == ">=3.9, <3.13"
    assert spec.requirements == ("torch>=2.1", "torchaudio>=2.1", 'soundfile; sys_platform != "win32"')
    assert spec.optional == {"onnx": ("onnxruntime>=1.16",)}
    assert "soundfile" not in {r.name for r in spec.requirements_for(WINDOWS)}


def test_pep621_dotted_keys_and_extras():
    spec = inspect_project(PROJECTS / "pep621-dotted")
    assert spec.formats == ("pep621",)
    assert spec.name == "dotted-keys"
    assert spec.requires_python == ">=3.10,<3.14"
    assert set(spec.optional) == {"onnx", "vision", "all"}
    base = {r.name for r in spec.requirements_for(LINUX)}
    assert base == {"torch", "numpy"}
    assert {r.name for r in spec.requirements_for(LINUX, ("onnx",))} == base | {"onnxruntime", "onnx"}
    assert {r.name for r in spec.requirements_for(LINUX, ("vision",))} == base | {"torchvision"}
    # `all = ["dotted-keys[onnx,vision]"]` refers to the project itself: it expands, it is not installed.
    assert {r.name for r in spec.requirements_for(WINDOWS, ("all",))} == base | {"pywin32", "onnxruntime", "onnx", "torchvision"}
    assert all(r.marker is None for r in spec.requirements_for(WINDOWS))


def test_unknown_extra_lists_known_ones():
    spec = inspect_project(PROJECTS / "pep621-dotted")
    with pytest.raises(ProjectError) as err:
        spec.requirements_for(LINUX, ("gpu",))
    assert err.value.code == "unknown-extra"
    assert "all, onnx, vision" in err.value.message


def test_extra_markers_on_base_requirements():
    spec = ProjectSpec(source=ProjectSource(path="."), requirements=("a", 'b; extra == "gpu"'), optional={"gpu": ()})
    assert names(spec.requirements_for(LINUX)) == ["a"]
    assert names(spec.requirements_for(LINUX, ("gpu",))) == ["a", "b"]


def test_torch_family_summary():
    family = torch_family(inspect_project(PROJECTS / "pep621-dotted"))
    assert family["torch"]["requirements"] == ["torch>=2.4"]
    assert family["torchvision"]["extras"] == {"vision": ["torchvision>=0.19"]}
    assert family["onnxruntime"]["extras"] == {"onnx": ["onnxruntime>=1.18"]}
    assert list(family) == ["torch", "torchvision", "onnxruntime"]


# --- errors and edge cases ------------------------------------------------------------------------------------


def test_malformed_toml_names_file_and_line():
    with pytest.raises(ProjectError) as err:
        inspect_project(PROJECTS / "malformed-toml")
    assert err.value.code == "project-invalid-toml"
    assert "pyproject.toml:6" in err.value.message
    assert err.value.hint and err.value.context["line"] == 6


def test_invalid_requirement_names_file_and_line():
    with pytest.raises(ProjectError) as err:
        inspect_project(PROJECTS / "bad-requirement")
    assert err.value.code == "project-invalid-requirement"
    assert "requirements.txt:2" in err.value.message and "torch>=2.0,,<" in err.value.message


def test_invalid_requirement_in_pyproject_names_line():
    text = '[project]\nname = "x"\ndependencies = [\n  "numpy",\n  "torch>=2.0,,<",\n]\n'
    with pytest.raises(ProjectError) as err:
        read_pyproject(text)
    assert err.value.code == "project-invalid-requirement" and "pyproject.toml:5" in err.value.message


def test_missing_folder_and_file():
    with pytest.raises(ProjectError) as err:
        inspect_project(PROJECTS / "does-not-exist")
    assert err.value.code == "project-not-found"
    with pytest.raises(ProjectError) as err:
        inspect_project(PROJECTS / "setup-cfg" / "setup.cfg")
    assert err.value.code == "project-not-found"


def test_folder_without_metadata_is_a_note_not_an_error():
    spec = inspect_project(PROJECTS / "no-metadata")
    assert spec.formats == () and spec.requirements == ()
    assert "declares no dependencies" in spec.notes[0].message


def test_requirement_cycles_and_escapes_are_guarded(tmp_path):
    (tmp_path / "requirements.txt").write_text("-r a.txt\nfoo\n")
    (tmp_path / "a.txt").write_text("-r requirements.txt\n-r ../outside.txt\nbar\n")
    (tmp_path.parent / "outside.txt").write_text("secret-package\n")
    spec = inspect_project(tmp_path)
    assert spec.requirements == ("foo", "bar")
    assert any("outside the project" in n for n in map(str, spec.notes))


def test_symlink_out_of_the_project_is_not_read(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "requirements.txt").write_text("secret-package\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "requirements.txt").symlink_to(outside / "requirements.txt")
    spec = inspect_project(project)
    assert spec.requirements == ()


def test_dynamic_dependencies_without_files_fall_back_to_requirements_files(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "d"\ndynamic = ["dependencies"]\n')
    (tmp_path / "requirements-gpu.txt").write_text("torch==2.5.1\n")
    (tmp_path / "requirements-dev.txt").write_text("pytest\n")
    spec = inspect_project(tmp_path)
    assert spec.requirements == ("torch==2.5.1",)
    assert any("requirements-dev.txt" in n and "not read" in n for n in map(str, spec.notes))


def test_import_roots_flat_layout():
    assert inspect_project(PROJECTS / "setup-cfg").import_roots == (".",)


# --- target environments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "os_name, arch, platform, system, machine, os_env",
    [
        ("linux", "x86_64", "linux", "Linux", "x86_64", "posix"),
        ("linux", "aarch64", "linux", "Linux", "aarch64", "posix"),
        ("windows", "x86_64", "win32", "Windows", "AMD64", "nt"),
        ("windows", "arm64", "win32", "Windows", "ARM64", "nt"),
        ("macos", "arm64", "darwin", "Darwin", "arm64", "posix"),
        ("macos", "x86_64", "darwin", "Darwin", "x86_64", "posix"),
    ],
)
def test_target_environment(os_name, arch, platform, system, machine, os_env):
    env = target_environment(os_name, arch, "3.12")
    assert (env["sys_platform"], env["platform_system"], env["platform_machine"], env["os_name"]) == (
        platform, system, machine, os_env)
    assert env["python_version"] == "3.12" and env["python_full_version"] == "3.12.0"
    assert env["implementation_name"] == "cpython" and env["platform_python_implementation"] == "CPython"
    assert env["platform_release"] == ""


def test_target_environment_rejects_unknown_values():
    for args in (("beos", "x86_64", "3.11"), ("linux", "sparc", "3.11"), ("linux", "x86_64", "three")):
        with pytest.raises(ProjectError):
            target_environment(*args)

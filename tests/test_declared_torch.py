"""Every way a project declares torch (issue #8, item 6), through `envbuilder resolve --json` and `inspect`.

Cases are data: a fixture project under tests/data/projects (written for these tests in the shapes real
repositories use), target flags, and what the plan must say. The readers' finer points (conda match specs,
lock markers, setup.py imports) are table-driven unit tests at the end.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from envbuilder.project.conda import read_environment_yml
from envbuilder.project.inspect import inspect_project
from envbuilder.project.locks import read_lock
from envbuilder.project.pyproject import read_pyproject
from envbuilder.project.setuptools import read_setup_py

PROJECTS = Path(__file__).parent / "data" / "projects"
LINUX = ["--target-os", "linux", "--target-arch", "x86_64"]
CPU = [*LINUX, "--gpu", "none"]
RTX_3090 = [*LINUX, "--gpu", "nvidia", "--cuda-driver", "550.54.14", "--compute-capability", "8.6"]
MAC = ["--target-os", "macos", "--target-arch", "arm64", "--gpu", "apple"]


def plan_of(cli, project, *flags):
    result = cli("resolve", str(project), *flags, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def joined(plan) -> str:
    return "\n".join(plan["reasons"] + [w["message"] for w in plan["warnings"]])


# (fixture, flags, expected torch.local, python, companions, dependencies, words in reasons/warnings)
CASES = [
    ("poetry-torch-source", CPU, None, "3.12", {"torchaudio"}, None, ["restricted to cpu", "whl/cpu"]),
    ("uv-torch-source", CPU, None, "3.12", {"torchaudio"}, None, ["restricted to cpu", "whl/cpu"]),
    ("wheel-url-outside-matrix", CPU, "1.12.0+cu113", "3.9", {"torchvision": "0.13.0+cu113"},
     ["numpy<2", "opencv-python-headless==4.6.0.66"], ["names by URL", "runs on the CPU"]),
    ("direct-url", RTX_3090, "2.7.0+cu128", "3.11", {}, ["safetensors>=0.4"], ["pins +cu128"]),
    ("conda-env", RTX_3090, "2.1.2+cu118", "3.10", {"torchaudio": "2.1.2+cu118"},
     ["numpy<2,>=1.24", "sentencepiece==0.1.99", "jiwer>=3.0", "einops"], ["environment.yml (pytorch-cuda=11.8)"]),
    ("uv-lock", RTX_3090, "2.3.1+cu121", None, {"torchvision": "0.18.1+cu121"},
     ["numpy==1.26.4", "pillow==10.3.0", "timm==0.6.13"], ["uv.lock"]),
    ("uv-lock", MAC, "2.3.1", None, {"torchvision": "0.18.1"}, None, ["uv.lock"]),
    ("poetry-lock", RTX_3090, None, None, {}, ["scikit-learn==1.3.2"], ["poetry.lock"]),
    ("pixi-lock", RTX_3090, None, None, {}, ["gymnasium==0.29.1"], ["pixi.lock"]),
    ("pyproject-and-requirements", CPU, "2.4.1+cpu", None, {}, ["numpy==1.26.4,>=1.24", "pyyaml>=6.0", "tqdm"], []),
]


@pytest.mark.parametrize("fixture, flags, local, python, companions, deps, words", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_declaration_shape_gives_its_plan(cli, fixture, flags, local, python, companions, deps, words):
    plan = plan_of(cli, PROJECTS / fixture, *flags)
    if local:
        assert plan["torch"]["local"] == local
    if python:
        assert plan["python"] == python
    if isinstance(companions, dict):
        assert {n: c["version"] for n, c in plan["companions"].items() if n in companions} == companions
        assert set(plan["companions"]) <= set(companions) | {"onnxruntime", "onnxruntime-gpu"}
    else:
        assert set(plan["companions"]) == companions
    if deps is not None:
        assert list(plan["dependencies"]) == deps
    for word in words:
        assert word in joined(plan)


@pytest.mark.parametrize("flags", [CPU, RTX_3090], ids=["cpu", "nvidia"])
def test_a_poetry_source_restricts_the_flavour_exactly_as_uv_sources_do(cli, flags):
    poetry = plan_of(cli, PROJECTS / "poetry-torch-source", *flags)
    uv = plan_of(cli, PROJECTS / "uv-torch-source", *flags)
    for key in ("status", "python", "torch", "companions"):
        assert poetry[key] == uv[key], key
    if flags is RTX_3090:
        # The index says cpu, the hardware says CUDA: the same override, explained the same way, for both.
        assert poetry["status"] == "potential-incompatibility"
        assert "the project's PyTorch index" in joined(poetry) and "the project's PyTorch index" in joined(uv)


# --- torch named by a wheel URL ---------------------------------------------------------------------------------


def url_project(tmp_path, wheel: str) -> Path:
    (tmp_path / "requirements.txt").write_text(f"torch @ https://download.pytorch.org/whl/{wheel}\n")
    return tmp_path


@pytest.mark.parametrize("wheel, flags, status, words", [
    # cu116 is a toolkit the matrix knows: its driver floor is checked, though 1.12.1 is not listed.
    ("cu116/torch-1.12.1%2Bcu116-cp310-cp310-linux_x86_64.whl",
     [*LINUX, "--gpu", "nvidia", "--cuda-driver", "450.80.02", "--compute-capability", "8.0"],
     "potential-incompatibility", ["Update the driver to >= 510.39.01", "kernels for sm_80 are not checked"]),
    ("cu116/torch-1.12.1%2Bcu116-cp310-cp310-linux_x86_64.whl",
     [*LINUX, "--gpu", "nvidia", "--cuda-driver", "550.54.14", "--compute-capability", "8.0"],
     "ok", ["kernels for sm_80 are not checked"]),
    # Hopper needs CUDA 11.8: a cu116 wheel has no kernels for it, whatever the matrix lists.
    ("cu116/torch-1.12.1%2Bcu116-cp310-cp310-linux_x86_64.whl",
     [*LINUX, "--gpu", "nvidia", "--cuda-driver", "550.54.14", "--compute-capability", "9.0"],
     "potential-incompatibility", ["need CUDA >= 11.8"]),
    ("cu116/torch-1.12.1%2Bcu116-cp310-cp310-linux_x86_64.whl",
     [*LINUX, "--gpu", "nvidia", "--cuda-driver", "470.82.01", "--compute-capability", "8.0", "--cuda-compat", "minor"],
     "minor-version-compat", ["minor-version compatibility"]),
    # cu113 is a toolkit the matrix does not know: said, not guessed.
    ("cu113/torch-1.12.0%2Bcu113-cp39-cp39-linux_x86_64.whl",
     [*LINUX, "--gpu", "nvidia", "--cuda-driver", "550.54.14", "--compute-capability", "8.6"],
     "ok", ["no driver floor for CUDA 11.3"]),
    ("cpu/torch-1.12.0%2Bcpu-cp39-cp39-linux_x86_64.whl", RTX_3090, "potential-incompatibility", ["cannot use"]),
])
def test_a_wheel_url_outside_the_matrix_is_planned_from_its_file_name(cli, tmp_path, wheel, flags, status, words):
    plan = plan_of(cli, url_project(tmp_path, wheel), *flags)
    url = f"https://download.pytorch.org/whl/{wheel}"
    assert plan["status"] == status
    assert plan["torch"]["url"] == url
    assert plan["torch"]["index_url"] == url.rsplit("/", 1)[0]
    assert plan["torch"]["local"] == wheel.split("/")[1].split("-")[1].replace("%2B", "+")
    for word in words:
        assert word in joined(plan)


@pytest.mark.parametrize("flags, code, needle", [
    (["--target-os", "windows", "--target-arch", "x86_64", "--gpu", "none"], "direct-wheel-platform", "linux_x86_64"),
    ([*CPU, "--python", "3.11"], "conflict", "built for Python 3.9"),
])
def test_a_wheel_url_that_cannot_serve_the_target_is_one_clear_error(cli, flags, code, needle):
    result = cli("resolve", str(PROJECTS / "wheel-url-outside-matrix"), *flags)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and f"{code}:" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


# --- conda, locks, build-time torch, requirements.txt next to [project] ------------------------------------------


def test_inspect_shows_what_conda_skipped_and_the_lock_and_build_needs(cli):
    conda = cli("inspect", str(PROJECTS / "conda-env"))
    assert conda.exit_code == 0, conda.stderr
    assert "formats:         conda, requirements" in conda.stdout
    assert "conda package ffmpeg is not a Python package" in conda.stdout
    assert "requires-python: ==3.10.*" in conda.stdout
    locked = cli("inspect", str(PROJECTS / "uv-lock"))
    assert "locked by:       uv.lock" in locked.stdout
    built = cli("inspect", str(PROJECTS / "cuda-extension"), "--json")
    assert json.loads(built.stdout)["build_requires_torch"] == "setup.py imports torch.utils.cpp_extension (a CUDA/C++ extension)"


@pytest.mark.parametrize("fixture, why", [
    ("cuda-extension", "setup.py imports torch.utils.cpp_extension"),
    ("build-system-torch", "pyproject.toml [build-system] requires torch>=2.2"),
    ("pyproject-and-requirements", None),
])
def test_torch_needed_at_build_time_reaches_the_plan(cli, fixture, why):
    plan = plan_of(cli, PROJECTS / fixture, *CPU)
    if why is None:
        assert plan["build_requires_torch"] is None
        assert "without build isolation" not in joined(plan)
    else:
        assert why in plan["build_requires_torch"]
        assert "without build isolation" in joined(plan)


def test_requirements_txt_next_to_a_static_project_table_is_merged_once():
    spec = inspect_project(PROJECTS / "pyproject-and-requirements")
    names = [r.split("=")[0].split(">")[0].split("<")[0] for r in spec.requirements]
    assert sorted(names) == ["numpy", "pyyaml", "torch", "tqdm"]
    assert "torch==2.4.1,>=2.1" in spec.requirements and "numpy==1.26.4,>=1.24" in spec.requirements
    assert any("combined into numpy==1.26.4,>=1.24" in n for n in map(str, spec.notes))


def test_a_stale_lock_pin_is_not_used_and_says_so(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = ["numpy>=2", "tqdm"]\n')
    (tmp_path / "uv.lock").write_text(textwrap.dedent("""
        version = 1
        [[package]]
        name = "numpy"
        version = "1.26.4"
        source = { registry = "https://pypi.org/simple" }
        [[package]]
        name = "tqdm"
        version = "4.66.4"
        source = { registry = "https://pypi.org/simple" }
    """))
    spec = inspect_project(tmp_path)
    assert spec.requirements == ("numpy>=2", "tqdm==4.66.4")
    assert any("outside the declared numpy>=2" in n and "stale" in n for n in map(str, spec.notes))
    assert spec.locked_by == "uv.lock"


@pytest.mark.parametrize("spec, requirement", [
    ("pytorch=2.1", "torch==2.1.*"),
    ("pytorch==2.1.0", "torch==2.1.0"),
    ("pytorch 2.1.0 py3.10_cuda11.8_cudnn8.7.0_0", "torch==2.1.0.*"),
    ("pytorch::torchvision=0.16.*", "torchvision==0.16.*"),
    ("numpy>=1.24,<2", "numpy<2,>=1.24"),
    ("scipy", "scipy"),
    ("conda-forge::tqdm>=4.6", "tqdm>=4.6"),
    ("py-opencv=4.8", "opencv-python==4.8.*"),
    ("pandas[version='>=2.0']", "pandas>=2.0"),
])
def test_conda_match_specs_become_pep508(spec, requirement):
    found = read_environment_yml(f"dependencies:\n  - {spec!s}\n")
    assert found.requirements == [requirement]


@pytest.mark.parametrize("specs, flavor", [
    (["pytorch=2.1", "pytorch-cuda=12.1"], "cu121"),
    (["pytorch=2.1", "cpuonly"], "cpu"),
    (["pytorch=2.1.0=py3.10_cuda11.8_cudnn8.7.0_0"], "cu118"),
    (["pytorch=2.1", "cudatoolkit=11.3"], None),
])
def test_a_conda_cuda_pin_declares_the_flavour(specs, flavor):
    found = read_environment_yml("dependencies:\n" + "".join(f"  - {s}\n" for s in specs))
    urls = [i.url for i in found.indexes]
    assert urls == ([f"https://download.pytorch.org/whl/{flavor}"] if flavor else [])


def test_conda_python_with_a_patch_is_read_as_its_minor_and_bad_yaml_names_the_line():
    assert read_environment_yml("dependencies:\n  - python=3.10.12\n").requires_python == "==3.10.*"
    with pytest.raises(Exception) as err:
        read_environment_yml("dependencies:\n  - [unclosed\n")
    assert err.value.code == "project-invalid-yaml" and "environment.yml:" in err.value.message


@pytest.mark.parametrize("name, text, pins", [
    ("uv.lock", 'version = 1\n[[package]]\nname = "Torch"\nversion = "2.3.1+cu121"\n'
                'source = { registry = "https://download.pytorch.org/whl/cu121" }\n'
                '[[package]]\nname = "mylib"\nversion = "0.1"\nsource = { git = "https://example.com/mylib.git" }\n',
     [("torch", "2.3.1+cu121", None)]),
    ("poetry.lock", '[[package]]\nname = "numpy"\nversion = "1.26.4"\n'
                    '[[package]]\nname = "local-pkg"\nversion = "0.1"\n[package.source]\ntype = "directory"\nurl = "../x"\n',
     [("numpy", "1.26.4", None)]),
    ("pixi.lock", "version: 5\npackages:\n- kind: pypi\n  name: einops\n  version: 0.8.0\n"
                  "  url: https://files.pythonhosted.org/e/einops-0.8.0-py3-none-any.whl\n",
     [("einops", "0.8.0", None)]),
])
def test_lock_readers_keep_index_pins_and_leave_other_sources(name, text, pins):
    found, notes = read_lock(name, text)
    assert [(p.name, p.version, p.marker) for p in found] == pins
    assert all("left as declared" in str(n) for n in notes)


@pytest.mark.parametrize("source, why", [
    ("from torch.utils.cpp_extension import CUDAExtension\nsetup(name='x')\n",
     "setup.py imports torch.utils.cpp_extension (a CUDA/C++ extension)"),
    ("import torch\nfrom setuptools import setup\nsetup(name='x')\n", "setup.py imports torch"),
    ("def ext():\n    import torch.utils.cpp_extension as c\n    return c\nsetup(name='x')\n",
     "setup.py imports torch.utils.cpp_extension (a CUDA/C++ extension)"),
    ("from setuptools import setup\nsetup(name='x', install_requires=['torch'])\n", None),
    ("from .torch import helpers\nsetup(name='x')\n", None),
])
def test_setup_py_that_imports_torch_needs_it_at_build_time(source, why):
    assert read_setup_py(source).build_requires_torch == why


def test_torch_in_build_system_requires_is_read_and_others_are_not():
    assert read_pyproject('[build-system]\nrequires = ["setuptools", "torch==2.4.*"]\n').build_requires_torch == \
        "pyproject.toml [build-system] requires torch==2.4.*"
    assert read_pyproject('[build-system]\nrequires = ["setuptools", "torchmetrics"]\n').build_requires_torch is None

"""Hand-made plans and helpers shared by the render tests (golden files live next to this module).

ENVBUILDER_UPDATE_GOLDEN=1 rewrites the golden files from the current renderers instead of comparing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zipfile
from pathlib import Path

from envbuilder.resolve.plan import PackageChoice, Plan, Target, TorchChoice
from envbuilder.project.spec import IndexDecl, ProjectInstall, ProjectSource

GOLDEN = Path(__file__).parent
TORCH_INDEX = "https://download.pytorch.org/whl"


def cpu_plan(**changes) -> Plan:
    plan = Plan(
        status="ok",
        python="3.11",
        torch=TorchChoice(version="2.13.0", flavor="cpu", local="2.13.0+cpu", index_url=f"{TORCH_INDEX}/cpu"),
        dependencies=("numpy>=1.26", "tqdm", "pyyaml>=6; python_version >= '3.8'"),
        system_packages=("libgl1", "git"),
        project_name="demo",
        target=Target(os="linux", arch="x86_64"),
    )
    return plan.model_copy(update=changes)


def cu128_plan(**changes) -> Plan:
    plan = Plan(
        status="ok",
        python="3.12",
        torch=TorchChoice(version="2.13.0", flavor="cu128", local="2.13.0+cu128", index_url=f"{TORCH_INDEX}/cu128",
                          cuda="12.8"),
        companions={
            "torchvision": PackageChoice(name="torchvision", version="0.28.0+cu128", index_url=f"{TORCH_INDEX}/cu128"),
            "torchaudio": PackageChoice(name="torchaudio", version="2.13.0+cu128", index_url=f"{TORCH_INDEX}/cu128"),
            "onnxruntime-gpu": PackageChoice(name="onnxruntime-gpu", version="1.23.2"),
        },
        dependencies=("transformers>=4.40", "datasets"),
        indexes=(IndexDecl(url="https://pkgs.example.com/simple", kind="extra-index-url", origin="requirements.txt"),
                 IndexDecl(url="https://wheels.example.com/", kind="find-links", origin="requirements.txt")),
        project_name="vision",
        project=ProjectSource(path="/src/vision", git_url="https://github.com/example/vision.git", ref="main",
                              commit="0123456789abcdef0123456789abcdef01234567"),
        import_roots=("src", "."),
        target=Target(os="linux", arch="x86_64", gpu="nvidia", cuda_driver="570.86.10", compute_capabilities=("9.0",)),
    )
    return plan.model_copy(update=changes)


def package_plan(**changes) -> Plan:
    """A package with a C extension (setup.py ext_modules) and a console script: installed editable."""
    return cpu_plan(project_name="mypkg", system_packages=(), install=ProjectInstall(
        backend="setuptools.build_meta", requires=("setuptools>=61",), why="pyproject.toml [build-system]",
        compiles="setup.py declares ext_modules"), **changes)


def torch_extension_plan(**changes) -> Plan:
    """A CUDA/C++ extension built against torch, which the project names by wheel URL."""
    url = f"{TORCH_INDEX}/cu128/torch-2.13.0%2Bcu128-cp312-cp312-manylinux_2_28_x86_64.whl#sha256={'ab' * 32}"
    return cu128_plan(
        torch=TorchChoice(version="2.13.0", flavor="cu128", local="2.13.0+cu128", index_url=f"{TORCH_INDEX}/cu128",
                          cuda="12.8", url=url),
        build_requires_torch="setup.py imports torch.utils.cpp_extension (a CUDA/C++ extension)",
        install=ProjectInstall(backend="setuptools.build_meta", requires=("setuptools>=64", "wheel", "torch>=2.4", "ninja"),
                               why="pyproject.toml [build-system]"), **changes)


def rocm_plan(**changes) -> Plan:
    plan = Plan(
        status="ok",
        python="3.11",
        torch=TorchChoice(version="2.9.1", flavor="rocm6.3", local="2.9.1+rocm6.3", index_url=f"{TORCH_INDEX}/rocm6.3",
                          rocm="6.3"),
        companions={"torchvision": PackageChoice(name="torchvision", version="0.24.1+rocm6.3",
                                                 index_url=f"{TORCH_INDEX}/rocm6.3")},
        project_name="amd-demo",
        target=Target(os="linux", arch="x86_64", gpu="amd", gpu_archs=("gfx942",)),
    )
    return plan.model_copy(update=changes)


def macos_plan(**changes) -> Plan:
    plan = Plan(
        status="ok",
        python="3.12",
        torch=TorchChoice(version="2.13.0", flavor="default", local="2.13.0", index_url="https://pypi.org/simple"),
        companions={"torchvision": PackageChoice(name="torchvision", version="0.28.0")},
        dependencies=("lightning>=2.4",),
        project_name="mac-demo",
        target=Target(os="macos", arch="arm64", gpu="apple"),
    )
    return plan.model_copy(update=changes)


def windows_plan(**changes) -> Plan:
    return cu128_plan(target=Target(os="windows", arch="x86_64", gpu="nvidia", cuda_driver="572.16",
                                    compute_capabilities=("8.9",)), **changes)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("ENVBUILDER_UPDATE_GOLDEN") == "1":
        path.write_bytes(text.encode("utf-8"))
        return
    assert path.exists(), f"missing golden file {path}; run with ENVBUILDER_UPDATE_GOLDEN=1"
    expected = path.read_bytes().decode("utf-8")
    assert text == expected, f"{name} differs from its golden file; rerun with ENVBUILDER_UPDATE_GOLDEN=1 if intended"


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel whose module records its version (torch.__version__ == version)."""
    folder.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    dist = f"{module}-{version}"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: envbuilder-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, content in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(content.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(content.encode())}")
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, content in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), content)
    return wheel


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

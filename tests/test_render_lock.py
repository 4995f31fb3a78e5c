"""render_lock (pure: TOML and requirements), the uv output parser, and build.lockfile.resolve_lock against a loopback index."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from envbuilder.resolve.plan import PackageChoice, plan_digest
from envbuilder.render import RenderOptions
from envbuilder.build.lockfile import resolve_lock
from envbuilder.render.lock import LockedPackage, parse_compile_output, python_platform, render_lock
from golden.cases import check_golden, cpu_plan, cu128_plan, macos_plan, make_wheel, sha256_of, windows_plan
from envbuilder.index.server import IndexServer

UV = str(Path(sys.executable).parent / "uv")

RESOLVED = (
    LockedPackage(name="torch", version="2.13.0+cu128", index_url="https://download.pytorch.org/whl/cu128",
                  hashes=("sha256:" + "a" * 64, "sha256:" + "b" * 64), required_by=("-r -",)),
    LockedPackage(name="filelock", version="3.20.0", index_url="https://download.pytorch.org/whl/cu128",
                  hashes=("sha256:" + "c" * 64,), required_by=("torch",)),
    LockedPackage(name="transformers", version="4.57.1", index_url="https://pypi.org/simple",
                  hashes=("sha256:" + "d" * 64,)),
)

UV_SAMPLE = """\
dep==1.0 \\
    --hash=sha256:51f55afb9097d1cd82100d582d043d4a140e9bd4c7a4788e10c06a502bad3a1c
    # from http://127.0.0.1:8765/
filelock==3.20.0 \\
    --hash=sha256:1111111111111111111111111111111111111111111111111111111111111111 \\
    --hash=sha256:2222222222222222222222222222222222222222222222222222222222222222
    # via
    #   torch
    #   dep
    # from https://download.pytorch.org/whl/cu128
torch==2.13.0+cpu \\
    --hash=sha256:5d79089d0923ee5f12c3cc310a8dfbbe0437680355a5c47ea046eb2fade2c7d3
    # via dep
    # from http://127.0.0.1:8765/
"""


def test_golden_toml_unresolved():
    check_golden("cpu.lock.toml", render_lock(cpu_plan(), RenderOptions()))


def test_golden_toml_resolved():
    check_golden("cu128.lock.toml", render_lock(cu128_plan(), RenderOptions(), RESOLVED))


def test_golden_requirements_resolved():
    check_golden("cu128.requirements.txt", render_lock(cu128_plan(), RenderOptions(), RESOLVED, format="requirements"))


def test_toml_document():
    plan = cu128_plan()
    doc = tomllib.loads(render_lock(plan, RenderOptions(), RESOLVED))
    head = doc["envbuilder-lock"]
    assert head["version"] == 1 and head["plan-hash"] == plan_digest(plan) and head["resolved"] is True
    assert head["python"] == "3.12" and head["extra-index-urls"][0] == "https://download.pytorch.org/whl/cu128"
    assert doc["torch"]["local"] == "2.13.0+cu128" and doc["torch"]["cuda"] == "12.8"
    assert doc["target"] == {"os": "linux", "arch": "x86_64", "gpu": "nvidia"}
    assert [p["name"] for p in doc["package"]] == ["filelock", "torch", "transformers"]
    assert doc["package"][1]["hashes"] == ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    unresolved = tomllib.loads(render_lock(plan, RenderOptions()))
    assert unresolved["envbuilder-lock"]["resolved"] is False
    assert {p["name"] for p in unresolved["package"]} == {"torch", "torchvision", "torchaudio", "onnxruntime-gpu"}
    assert unresolved["envbuilder-lock"]["requirements"] == ["transformers>=4.40", "datasets"]


def test_toml_escapes_hostile_values():
    evil = 'a"b\\c\nd = 1\n[x]'
    doc = tomllib.loads(render_lock(cpu_plan(dependencies=(evil,)), RenderOptions(index_url=evil)))
    assert doc["envbuilder-lock"]["requirements"][0] == evil and doc["envbuilder-lock"]["index-url"] == evil
    assert "x" not in doc


def test_requirements_format():
    text = render_lock(cu128_plan(), RenderOptions(), RESOLVED, format="requirements")
    assert "--index-url https://pypi.org/simple\n--extra-index-url https://download.pytorch.org/whl/cu128\n" in text
    assert "torch==2.13.0+cu128 \\\n    --hash=sha256:" + "a" * 64 + " \\\n    --hash=sha256:" + "b" * 64 + "\n" in text
    plain = render_lock(macos_plan(), RenderOptions(), format="requirements")
    assert "torch==2.13.0\n" in plain and "lightning>=2.4\n" in plain and "--extra-index-url" not in plain


def test_parse_compile_output():
    packages = parse_compile_output(UV_SAMPLE)
    assert [p.name for p in packages] == ["dep", "filelock", "torch"]
    assert packages[1].required_by == ("torch", "dep") and len(packages[1].hashes) == 2
    assert packages[1].index_url == "https://download.pytorch.org/whl/cu128"
    assert packages[2].version == "2.13.0+cpu" and packages[2].required_by == ("dep",)


def test_python_platforms():
    assert python_platform(cpu_plan()) == "x86_64-manylinux_2_28"
    assert python_platform(windows_plan()) == "x86_64-pc-windows-msvc"
    assert python_platform(macos_plan()) == "aarch64-apple-darwin"


@pytest.fixture()
def local_indexes(tmp_path):
    torch_dir, pypi_dir = tmp_path / "torch-index", tmp_path / "pypi"
    wheels = {
        "torch": make_wheel(torch_dir, "torch", "2.13.0+cpu", ("filelock",)),
        "torchvision": make_wheel(torch_dir, "torchvision", "0.28.0+cpu", ("torch==2.13.0+cpu",)),
        "filelock": make_wheel(pypi_dir, "filelock", "3.20.0"),
        "dep": make_wheel(pypi_dir, "dep", "1.0", ("torch>=2",)),
    }
    make_wheel(pypi_dir, "torch", "2.13.0")  # PyPI's build of the same version: the torch index must win
    with IndexServer(wheels=[torch_dir]) as torch_index, IndexServer(wheels=[pypi_dir]) as pypi:
        yield torch_index.url, pypi.url, wheels



def test_resolve_lock_against_loopback_index(local_indexes, monkeypatch, tmp_path):
    torch_url, pypi_url, wheels = local_indexes
    for key in [k for k in os.environ if k.startswith(("UV_", "PIP_")) or "proxy" in k.lower()]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    plan = cpu_plan(system_packages=(), dependencies=("dep>=1",),
                    companions={"torchvision": PackageChoice(name="torchvision", version="0.28.0+cpu",
                                                             index_url=cpu_plan().torch.index_url)})
    options = RenderOptions(index_url=pypi_url, torch_index_url=torch_url)
    packages = resolve_lock(plan, options, uv=UV, timeout=120)
    by_name = {p.name: p for p in packages}
    assert set(by_name) == {"dep", "filelock", "torch", "torchvision"}
    assert by_name["torch"].version == "2.13.0+cpu" and by_name["torch"].index_url.rstrip("/") == torch_url.rstrip("/")
    assert by_name["torch"].hashes == (sha256_of(wheels["torch"]),)
    assert by_name["filelock"].hashes == (sha256_of(wheels["filelock"]),)

    # The requirements lock installs with hash checking into a fresh venv.
    lock = tmp_path / "requirements.lock"
    lock.write_text(render_lock(plan, options, packages, format="requirements"))
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    subprocess.run([UV, "pip", "sync", "-q", "--python", str(venv / "bin" / "python"), "--require-hashes", str(lock)],
                   check=True, timeout=120)
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2.13.0+cpu"


def test_resolve_lock_failure_is_an_error(local_indexes, monkeypatch, tmp_path):
    from envbuilder.errors import EnvbuilderError

    _, pypi_url, _ = local_indexes
    for key in [k for k in os.environ if k.startswith(("UV_", "PIP_")) or "proxy" in k.lower()]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    plan = cpu_plan(system_packages=(), dependencies=("does-not-exist",))
    with pytest.raises(EnvbuilderError) as err:
        resolve_lock(plan, RenderOptions(index_url=pypi_url, torch_index_url=pypi_url), uv=UV, timeout=120)
    assert err.value.code == "lock-unresolvable"

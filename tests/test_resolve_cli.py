"""`envbuilder resolve` end to end in-process: JSON contract, human output, conflicts, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

NVIDIA_H100 = ["--gpu", "nvidia", "--cuda-driver", "570.86.10", "--compute-capability", "9.0",
               "--target-os", "linux", "--target-arch", "x86_64"]


def write_project(tmp_path, pyproject: str):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent(pyproject))
    return str(tmp_path)


@pytest.fixture
def simple(tmp_path):
    return write_project(tmp_path, """
        [project]
        name = "demo"
        version = "0.1"
        requires-python = ">=3.10"
        dependencies = ["torch>=2.4", "torchvision", "numpy"]
        [project.optional-dependencies]
        onnx = ["onnxruntime"]
    """)


def test_json_contract_for_a_declared_cloud_gpu(cli, simple):
    result = cli("resolve", simple, *NVIDIA_H100, "--extra", "onnx", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["status"] == "ok"
    assert set(plan["torch"]) >= {"version", "flavor", "local", "index_url"}
    assert plan["torch"]["flavor"].startswith("cu")
    assert plan["torch"]["local"] == f"{plan['torch']['version']}+{plan['torch']['flavor']}"
    assert {"torchvision", "onnxruntime-gpu"} <= set(plan["companions"])
    assert plan["target"]["gpu"] == "nvidia" and plan["target"]["compute_capabilities"] == ["9.0"]
    assert plan["reasons"] and isinstance(plan["warnings"], list)
    assert plan["dependencies"] == ["numpy"]


def test_human_output_is_a_table_with_reasons(cli, simple):
    result = cli("resolve", simple, "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11")
    assert result.exit_code == 0, result.stderr
    assert "torch" in result.stdout and "+cpu" in result.stdout and "why" in result.stdout


def test_conflict_exits_3_and_explains(cli, tmp_path):
    path = write_project(tmp_path, """
        [project]
        name = "clash"
        version = "0"
        requires-python = ">=3.13"
        dependencies = ["torch<2.5"]
    """)
    result = cli("resolve", path, "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--json")
    assert result.exit_code == 3
    body = json.loads(result.stdout)
    assert body["status"] == "conflict"
    assert any("requires-python" in r for r in body["reasons"])
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["--compute-capability", "4.2"], "unknown-compute-capability"),
    (["--gpu", "nvidia", "--cuda-driver", "new"], "target-invalid"),
    (["--python", "three"], "request-invalid"),
    (["--flavor", "cuda12"], "request-invalid"),
])
def test_bad_flags_give_one_line_and_nonzero_exit(cli, simple, args, needle):
    result = cli("resolve", simple, "--target-os", "linux", "--target-arch", "x86_64", *args)
    assert result.exit_code != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_impossible_specifier_in_the_project_is_a_clear_error(cli, tmp_path):
    path = write_project(tmp_path, """
        [project]
        name = "bad"
        version = "0"
        dependencies = ["torch>=2.0,,<"]
    """)
    result = cli("resolve", path, "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64")
    assert result.exit_code != 0
    assert "Traceback" not in result.stderr and "torch" in result.stderr


def test_help_does_not_import_docker_or_torch():
    code = ("import sys; from envbuilder.cli import main; rc = main(['--help']); "
            "bad = [m for m in ('docker', 'torch', 'rich.console') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_registered_command_loads_and_has_help(cli):
    from envbuilder.cli import COMMANDS

    for name in COMMANDS:
        result = cli(name, "--help")
        assert result.exit_code == 0, (name, result.stderr)
        assert "Usage" in result.stdout


# --- [tool.envbuilder] system packages: one reader (the validated config) for render, resolve and run ----------

CPU = ["--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none", "--python", "3.11"]


def test_system_packages_from_envbuilder_toml_reach_the_plan_and_the_dockerfile(cli, tmp_path):
    # Regression: envbuilder.toml's system-packages were validated by the config loader, then ignored by the build.
    project = write_project(tmp_path, """
        [project]
        name = "demo"
        dependencies = ["torch"]
    """)
    (tmp_path / "envbuilder.toml").write_text('system-packages = ["ffmpeg", "libgl1"]\n')
    result = cli("resolve", project, *CPU, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["system_packages"] == ["ffmpeg", "libgl1"]
    rendered = cli("render", project, *CPU)
    assert rendered.exit_code == 0, rendered.stderr
    assert "ffmpeg" in rendered.stdout and "libgl1" in rendered.stdout


@pytest.mark.parametrize("command", ["resolve", "render", "inspect"])
def test_a_bad_system_package_in_pyproject_is_refused_like_run_refuses_it(cli, tmp_path, command):
    # Regression: inspect read [tool.envbuilder] unvalidated, so `render` put "Bad Name!" into the Dockerfile.
    project = write_project(tmp_path, """
        [project]
        name = "demo"
        dependencies = ["torch"]
        [tool.envbuilder]
        system-packages = ["libgl1", "Bad Name!"]
    """)
    result = cli(command, project, *(CPU if command != "inspect" else []))
    assert result.exit_code != 0
    assert "Bad Name!" not in result.stdout
    assert "tool.envbuilder.system-packages[1]" in result.stderr
    assert "is not a Debian package name" in result.stderr

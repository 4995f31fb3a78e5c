"""`envbuilder inspect`, run in-process: human text, --json, target markers, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

PROJECTS = Path(__file__).parent / "data" / "projects"


def test_json_has_spec_and_torch_family(cli):
    result = cli("inspect", str(PROJECTS / "uv-markers"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["name"] == "uv-markers"
    assert data["formats"] == ["pep621", "uv"]
    assert data["system_packages"] == ["ffmpeg", "git-lfs", "libgl1"]
    assert data["torch_family"]["torch"]["requirements"] == ["torch>=2.7"]
    assert data["torch_family"]["torch"]["indexes"] == ["pytorch-cu128", "pytorch-cpu"]
    assert "target" not in data


def test_json_with_target_evaluates_markers(cli):
    result = cli("inspect", str(PROJECTS / "uv-markers"), "--json", "--target-os", "windows", "--python", "3.12")
    data = json.loads(result.stdout)
    target = data["target"]
    assert target["environment"]["sys_platform"] == "win32" and target["python"] == "3.12"
    assert [i["name"] for i in target["indexes"]] == ["pytorch-cpu"]
    linux = json.loads(cli("inspect", str(PROJECTS / "uv-markers"), "--json", "--target-os", "linux").stdout)
    assert [i["name"] for i in linux["target"]["indexes"]] == ["pytorch-cu128"]


def test_json_with_extras(cli):
    result = cli("inspect", str(PROJECTS / "pep621-dotted"), "--json", "--extra", "onnx", "--target-arch", "aarch64")
    data = json.loads(result.stdout)
    assert "onnxruntime>=1.18" in data["target"]["requirements"]
    assert data["target"]["environment"]["platform_machine"] == "aarch64"
    assert data["torch_family"]["torchvision"]["extras"] == {"vision": ["torchvision>=0.19"]}


def test_human_output(cli):
    result = cli("inspect", str(PROJECTS / "poetry-era"))
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "formats:         poetry" in out
    assert "requires-python: >=3.9,<4.0" in out
    assert "torch: torch<3.0.0,>=2.0.1" in out and "from index: pytorch-cu118" in out
    assert "export: onnxruntime-gpu" in out
    assert "pytorch-cu118 https://download.pytorch.org/whl/cu118 [poetry-source] for torch, torchvision only" in out
    assert "group 'dev' ignored" in out


def test_human_output_with_target(cli):
    result = cli("inspect", str(PROJECTS / "requirements-only"), "--target-os", "macos")
    assert result.exit_code == 0, result.stderr
    section = result.stdout.split("for macos/arm64, Python ", 1)[1]
    assert "torch==2.1.2+cu121" in section and "torchaudio" not in section.split("notes:")[0]
    assert "constraint urllib3<2" in section


def test_unknown_extra_is_one_line(cli):
    result = cli("inspect", str(PROJECTS / "pep621-dotted"), "--extra", "gpu")
    assert result.exit_code == 1
    assert result.stderr.startswith("envbuilder: unknown-extra:") and "all, onnx, vision" in result.stderr


def test_malformed_toml_is_one_line_without_traceback(cli):
    result = cli("inspect", str(PROJECTS / "malformed-toml"), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["code"] == "project-invalid-toml"  # --json: the error as JSON on stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("envbuilder: project-invalid-toml: pyproject.toml:6:") and "Hint:" in lines[0]


def test_hostile_url_is_one_line_without_traceback(cli):
    result = cli("inspect", "ext::sh -c touch% /tmp/pwned", "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "unsafe-git-url"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("envbuilder: unsafe-git-url:")


def test_hostile_ref_is_one_line(cli):
    result = cli("inspect", "https://example.org/repo.git", "--ref", "--upload-pack=x")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("envbuilder: unsafe-git-ref:")


def test_missing_folder(cli, tmp_path):
    result = cli("inspect", str(tmp_path / "nope"))
    assert result.exit_code == 1 and result.stderr.startswith("envbuilder: project-not-found:")


def test_invalid_requirement_is_one_line(cli):
    result = cli("inspect", str(PROJECTS / "bad-requirement"))
    assert result.exit_code == 1
    assert result.stderr.startswith("envbuilder: project-invalid-requirement: requirements.txt:2:")


def test_git_url_json_reports_the_commit(cli, tmp_path):
    import os
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:  # pragma: no cover
        import pytest

        pytest.skip("git is not installed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e.org", "GIT_CONFIG_GLOBAL": os.devnull}
    repo = tmp_path / "repo"
    shutil.copytree(PROJECTS / "pep621-dotted", repo)
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "x"], ["tag", "v0.1.0"]):
        subprocess.run([git, *args], cwd=repo, env=env, check=True, capture_output=True)
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    result = cli("inspect", f"file://{repo}", "--ref", "v0.1.0", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"]["commit"] == head and data["source"]["ref"] == "v0.1.0"
    assert data["name"] == "dotted-keys"
    human = cli("inspect", f"file://{repo}", "--ref", "v0.1.0")
    assert f"@ v0.1.0 ({head[:12]})" in human.stdout

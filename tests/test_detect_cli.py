"""`envbuilder detect` in-process, with fake probe programs first on PATH."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

HOST_DATA = Path(__file__).parent / "data" / "host"
CAT = shutil.which("cat")
SLEEP = shutil.which("sleep")


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """A directory that is the whole PATH; write(name, body) puts a shell script there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))

    def write(name: str, body: str) -> None:
        exe = bin_dir / name
        exe.write_text("#!/bin/sh\n" + body + "\n")
        exe.chmod(0o755)

    return write


def h100_nvidia_smi(fake_bin) -> None:
    fake_bin("nvidia-smi", f"""case "$*" in
  *--query-gpu*) {CAT} "{HOST_DATA / 'nvidia-smi-query-h100x8.csv'}" ;;
  *) {CAT} "{HOST_DATA / 'nvidia-smi-h100x8.txt'}" ;;
esac""")


def test_detect_json_with_fake_h100(cli, fake_bin):
    h100_nvidia_smi(fake_bin)
    result = cli("detect", "--json")
    assert result.exit_code == 0, result.stderr
    host = json.loads(result.stdout)
    assert host["gpu_vendor"] == "nvidia"
    assert len(host["gpus"]) == 8 and host["gpus"][0]["compute_capability"] == "9.0"
    assert (host["nvidia_driver"], host["cuda_driver_version"]) == ("570.124.06", "12.8")


def test_detect_human_table(cli, fake_bin):
    h100_nvidia_smi(fake_bin)
    result = cli("detect")
    assert result.exit_code == 0, result.stderr
    assert "8 x NVIDIA H100 80GB HBM3 (CC 9.0, 81559 MiB)" in result.stdout
    assert "570.124.06" in result.stdout and "12.8" in result.stdout
    assert "GPU 0-7" in result.stdout


def test_detect_exits_0_when_nvidia_smi_fails(cli, fake_bin):
    fake_bin("nvidia-smi", "echo 'something broke' >&2\nexit 9")
    result = cli("detect", "--json")
    assert result.exit_code == 0, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert any("nvidia-smi exited with status 9 (something broke)" in f["message"] for f in findings)
    assert "probe-failed" in {f["code"] for f in findings}


def test_detect_timeout_option(cli, fake_bin):
    fake_bin("nvidia-smi", f"exec {SLEEP} 30")
    result = cli("detect", "--json", "--timeout", "1")
    assert result.exit_code == 0, result.stderr
    assert any("timed out after 1 s" in f["message"] for f in json.loads(result.stdout)["findings"])


def test_detect_human_output_shows_findings(cli, fake_bin):
    fake_bin("nvidia-smi", "echo '[garbage] %%%'")
    result = cli("detect")
    assert result.exit_code == 0, result.stderr
    assert "Findings:" in result.stdout and "[garbage] %%%" in result.stdout


def test_detect_rejects_a_bad_timeout(cli):
    result = cli("detect", "--timeout", "0")
    assert result.exit_code == 2


def test_detect_on_this_machine(cli):
    result = cli("detect", "--json")
    assert result.exit_code == 0, result.stderr
    host = json.loads(result.stdout)
    assert host["os"] in ("linux", "macos", "windows")
    assert isinstance(host["findings"], list)

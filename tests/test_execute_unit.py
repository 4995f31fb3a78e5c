"""The pure parts of running jobs: mounts, env, GPUs, shm, container paths, statuses; CLI usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.run.container import (
    CONTAINER_ARTIFACTS,
    ResolvedMount,
    container_path_for,
    default_shm_size,
    exit_message,
    final_status,
    gpu_request,
    parse_env_args,
    parse_mount_arg,
)


def test_mount_arg_relative_to_base_and_read_only_by_default(tmp_path):
    (tmp_path / "data").mkdir()
    assert parse_mount_arg("data:/data", base=tmp_path) == ResolvedMount(tmp_path / "data", "/data", True)
    assert parse_mount_arg(f"{tmp_path}/data:/data:rw", base=Path("/")).read_only is False
    assert parse_mount_arg("data:/data:ro", base=tmp_path).read_only is True


@pytest.mark.parametrize("text, code", [
    ("nope:/data", "mount-source-missing"),
    ("data", "bad-mount"),
    ("data:relative", "bad-mount"),
    ("data:/", "bad-mount"),
])
def test_bad_mounts_are_clear_errors(tmp_path, text, code):
    (tmp_path / "data").mkdir()
    with pytest.raises(EnvbuilderError) as err:
        parse_mount_arg(text, base=tmp_path)
    assert err.value.code == code


def test_env_args():
    assert parse_env_args(["A=1", "B_2=x=y", "EMPTY="]) == {"A": "1", "B_2": "x=y", "EMPTY": ""}
    for bad in ("NOEQUALS", "=v", "1A=2", "A-B=1"):
        with pytest.raises(EnvbuilderError):
            parse_env_args([bad])


def test_gpu_request_detects_only_for_auto():
    def boom() -> bool:
        raise AssertionError("detection must not run")

    assert gpu_request("none", has_nvidia=boom) is None
    assert gpu_request("all", has_nvidia=boom) == "all"
    assert gpu_request(2, has_nvidia=boom) == 2
    assert gpu_request("1", has_nvidia=boom) == 1
    assert gpu_request("auto", has_nvidia=lambda: True) == "all"
    assert gpu_request("auto", has_nvidia=lambda: False) is None
    with pytest.raises(EnvbuilderError):
        gpu_request("some", has_nvidia=boom)


def test_default_shm_is_half_the_ram_capped():
    assert default_shm_size(64 * 1024**3) == "2048m"
    assert default_shm_size(2 * 1024**3) == "1024m"
    assert default_shm_size(64 * 1024**2) == "64m"


def test_container_path_for_checkpoints(tmp_path):
    project, artifacts, elsewhere = tmp_path / "p", tmp_path / "p" / "artifacts", tmp_path / "x"
    for folder in (artifacts, elsewhere):
        folder.mkdir(parents=True)
    for path in (artifacts / "ckpt.pt", project / "init.pt", elsewhere / "old.pt"):
        path.write_bytes(b"")
    assert container_path_for(str(artifacts / "ckpt.pt"), project_dir=project, artifacts_dir=artifacts) == (
        f"{CONTAINER_ARTIFACTS}/ckpt.pt", None)
    assert container_path_for(str(project / "init.pt"), project_dir=project, artifacts_dir=artifacts) == (
        "/workspace/project/init.pt", None)
    inside, mount = container_path_for(str(elsewhere / "old.pt"), project_dir=project, artifacts_dir=artifacts)
    assert inside == "/opt/envbuilder-inputs/old.pt" and mount == ResolvedMount(elsewhere / "old.pt", inside, True)
    # Not a host file: taken to be a path inside the container already.
    assert container_path_for("/data/ckpt.pt", project_dir=project, artifacts_dir=artifacts) == ("/data/ckpt.pt", None)


def test_statuses_and_messages():
    assert final_status(0, stop_requested=False) == "completed"
    assert final_status(3, stop_requested=False) == "failed"
    assert final_status(143, stop_requested=True) == "stopped"
    assert final_status(0, stop_requested=True) == "stopped"
    assert exit_message(0) is None
    assert exit_message(137) == "exited with 137: killed (SIGKILL: docker kill, or out of memory)"
    assert exit_message(3) == "exited with 3"


def test_run_needs_a_job_or_a_command(cli, tmp_path):
    result = cli("run", str(tmp_path))
    assert result.exit_code == 2 and "name a JOB" in result.stderr


def test_run_unknown_job_names_the_known_ones(cli):
    example = Path(__file__).resolve().parents[1] / "examples" / "tinynet"
    result = cli("run", str(example), "trian")
    assert result.exit_code == 1 and "job-not-found" in result.stderr and "train, export" in result.stderr


def test_pipeline_and_run_help_import_no_docker():
    import subprocess
    import sys

    probe = ("import sys, contextlib, io\nfrom envbuilder.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    codes = [main(['run', '--help']), main(['pipeline', '--help'])]\n"
             "print(codes, 'docker' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[0, 0] False"

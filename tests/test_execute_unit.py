"""The pure parts of running jobs: the RunSpec a job becomes, mounts, env, GPUs, shm, container paths, statuses;
CLI usage errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.run.container import exit_message, final_status
from envbuilder.run.spec import (
    CONTAINER_ARTIFACTS,
    ResolvedMount,
    RunOptions,
    container_path_for,
    default_shm_size,
    gpu_request,
    parse_env_args,
    parse_mount_arg,
    run_spec,
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
    for bad in ("NOEQUALS", "=v", "1A=2", "A-B=1", "É=1"):
        with pytest.raises(EnvbuilderError):
            parse_env_args([bad])


def test_gpu_request_detects_only_for_auto():
    def boom() -> bool:
        raise AssertionError("detection must not run")

    assert gpu_request("none", has_nvidia=boom) is None
    assert gpu_request("all", has_nvidia=boom) == "all"
    assert gpu_request(2, has_nvidia=boom) == 2
    assert gpu_request("1", has_nvidia=boom) == 1
    assert gpu_request("0", has_nvidia=boom) is None and gpu_request(None, has_nvidia=boom) is None
    assert gpu_request("ALL", has_nvidia=boom) == "all"
    assert gpu_request("auto", has_nvidia=lambda: True) == "all"
    assert gpu_request("auto", has_nvidia=lambda: False) is None
    for bad in ("some", "-1", True):
        with pytest.raises(EnvbuilderError):
            gpu_request(bad, has_nvidia=boom)


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


# --- run_spec: what a job becomes, as a table ---------------------------------------------------------

def _job(**fields):
    from envbuilder.project.config import Job

    return Job.model_validate({"command": "python train.py --epochs 2", **fields})


def _no_probe() -> bool:
    raise AssertionError("only --gpus auto may ask the host")


SPEC_CASES = [
    # (name, job fields or None for a bare command, options, expected RunSpec fields)
    ("job defaults", {}, RunOptions(),
     {"argv": ("python", "train.py", "--epochs", "2"), "args": (), "job": "train", "gpus": "all",
      "workdir": "/workspace/project", "timeout_s": None, "network": None}),
    ("args append", {}, RunOptions(args=("--lr", "0.1")),
     {"argv": ("python", "train.py", "--epochs", "2", "--lr", "0.1"), "args": ("--lr", "0.1")}),
    ("job's values", {"gpus": 2, "shm-size": "8g", "workdir": "/workspace/project/src", "timeout": 60},
     RunOptions(network="host"),
     {"gpus": 2, "shm_size": "8g", "workdir": "/workspace/project/src", "timeout_s": 60, "network": "host"}),
    ("options win", {"gpus": 2, "env": {"A": "job", "B": "job"}}, RunOptions(gpus="none", env={"A": "cli"}),
     {"gpus": None}),
    ("bare command", None, RunOptions(args=("x",)),
     {"argv": ("echo", "hi", "x"), "job": None, "gpus": "all", "artifacts_dir": None, "exports": ()}),
]


@pytest.mark.parametrize("name, fields, options, expected", SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_run_spec_table(tmp_path, name, fields, options, expected):
    job = None if fields is None else _job(**fields)
    spec = run_spec("img:1", tmp_path, job=job, job_name=None if job is None else "train",
                    command=("echo", "hi") if job is None else (), options=options, has_nvidia=lambda: True)
    for key, value in expected.items():
        assert getattr(spec, key) == value, key
    assert spec.image == "img:1" and spec.project_name == tmp_path.name
    assert spec.mounts[0] == ResolvedMount(tmp_path.resolve(), "/workspace/project", options.read_only_project)
    assert spec.env["PYTHONUNBUFFERED"] == "1" and spec.env["HOME"] == "/tmp"
    assert spec.user == f"{os.getuid()}:{os.getgid()}"
    if job is not None:
        assert spec.artifacts_dir == (tmp_path / "artifacts").resolve()
        assert spec.env["ENVBUILDER_ARTIFACTS"] == CONTAINER_ARTIFACTS
        assert spec.container_mounts()[-1] == (str(spec.artifacts_dir), CONTAINER_ARTIFACTS, False)
    else:
        assert "ENVBUILDER_ARTIFACTS" not in spec.env and len(spec.container_mounts()) == 1
    if fields and "env" in fields:
        assert (spec.env["A"], spec.env["B"]) == ("cli", "job")


def test_run_spec_touches_no_folder_and_labels_and_records_the_run(tmp_path):
    (tmp_path / "data").mkdir()
    spec = run_spec("img:1", tmp_path, job=_job(mounts=["data:/data"], gpus="none"), job_name="train",
                    options=RunOptions(read_only_project=False), plan={"plan_hash": "abc"}, project_name="cifar",
                    has_nvidia=_no_probe)
    assert not (tmp_path / "artifacts").exists()  # the executor creates it, not the spec
    assert spec.labels("r-1") == {"org.envbuilder.run-id": "r-1", "org.envbuilder.project": "cifar",
                                  "org.envbuilder.job": "train"}
    assert spec.record_args() == {
        "args": [], "resume_from": None, "project_dir": str(tmp_path.resolve()),
        "mounts": [f"{tmp_path.resolve()}:/workspace/project:rw", f"{(tmp_path / 'data').resolve()}:/data:ro"],
        "gpus": None, "shm_size": spec.shm_size, "user": spec.user}
    assert spec.plan == {"plan_hash": "abc"}


def test_run_spec_resume_mounts_a_checkpoint_from_elsewhere(tmp_path):
    project, elsewhere = tmp_path / "p", tmp_path / "x"
    project.mkdir()
    elsewhere.mkdir()
    (elsewhere / "ckpt.pt").write_bytes(b"")
    spec = run_spec("img", project, job=_job(**{"resume-arg": "--resume {checkpoint}", "gpus": "none"}),
                    job_name="train", options=RunOptions(resume_from=str(elsewhere / "ckpt.pt")), has_nvidia=_no_probe)
    assert spec.argv[-2:] == ("--resume", "/opt/envbuilder-inputs/ckpt.pt") and spec.args == spec.argv[-2:]
    assert spec.mounts[-1] == ResolvedMount((elsewhere / "ckpt.pt").resolve(), "/opt/envbuilder-inputs/ckpt.pt", True)


@pytest.mark.parametrize("job_fields, options, code", [
    (None, RunOptions(), "nothing-to-run"),
    ({}, RunOptions(resume_from="ckpt.pt"), "resume-unsupported"),
    ({"mounts": ["missing:/data"]}, RunOptions(), "mount-source-missing"),
    ({"mounts": ["./:/artifacts"]}, RunOptions(), "mount-conflict"),
    ({}, RunOptions(gpus="many"), "bad-gpus"),
])
def test_run_spec_refuses_runs_that_cannot_be_set_up(tmp_path, job_fields, options, code):
    job = None if job_fields is None else _job(**job_fields)
    with pytest.raises(EnvbuilderError) as err:
        run_spec("img", tmp_path, job=job, options=options, has_nvidia=_no_probe)
    assert err.value.code == code

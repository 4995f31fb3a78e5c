"""`envbuilder submit --to slurm` end to end on a real single-node Slurm cluster (scripts/slurm.sh).

The tinynet train job is submitted from a copy of examples/tinynet: the image is built for the cluster's target
(no GPU here) with the local torch wheels served on loopback, the sbatch script runs it with Docker on the node
(the node is this machine, so no registry), and the run is followed with the same run commands as a local run,
to `completed` with its metrics and the checkpoint in the artifacts folder. A second, long job is stopped
gracefully (SIGTERM forwarded by the script's trap, the job checkpoints) and recorded `stopped`.
A tiny command job in the base image checks that the metrics channel local runs prefer ($ENVBUILDER_METRICS,
written on the node into the artifacts folder) is the cluster run's source too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from support.fixtures import base_image, docker_engine, torch_cpu_index  # noqa: F401 - fixtures
from support.slurm import slurm_cluster  # noqa: F401 - fixture

pytestmark = pytest.mark.docker

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tinynet"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture
def tinynet(tmp_path) -> Path:
    project = tmp_path / "tinynet"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    return project


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def test_tinynet_train_on_slurm_completes_with_metrics_and_checkpoint_then_a_long_job_stops(
        cli, tinynet, slurm_cluster, base_image, torch_cpu_index):  # noqa: F811
    build = ["--base-image", base_image, "--torch-index-url", torch_cpu_index.url, "--network", "host"]
    if HOST_CA.is_file():
        build.append("--host-ca")
    result = cli("submit", str(tinynet), "train", "--to", "slurm", "--json", *build)
    assert result.exit_code == 0, result.stderr[-3000:]
    submitted = json.loads(result.stdout)
    assert submitted["submitted"] and submitted["status"] == "queued" and submitted["job_id"].isdigit()
    run_id = submitted["run_id"]
    script = Path(submitted["description_path"]).read_text()
    assert "#SBATCH --job-name=eb-tinynet-train-" in script and f"-v {tinynet}:/workspace/project:ro" in script
    assert f"-v {tinynet}/artifacts:/artifacts:rw" in script

    # The run is tied to the Slurm job, and the run commands follow it like a local run.
    listed = json.loads(cli("runs", "list", "--json").stdout)
    [row] = [r for r in listed if r["id"] == run_id]
    assert row["backend"] == "slurm" and row["backend_job_id"] == submitted["job_id"]
    assert row["status"] in ("queued", "running", "completed")
    follow = cli("runs", "logs", "-f", run_id)
    assert follow.exit_code == 0, follow.stderr
    assert "epoch 10/10" in follow.stdout and "checkpoint saved to /artifacts/checkpoint.pt" in follow.stdout

    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "completed" and shown["exit_code"] == 0, shown
    assert [step for step, _ in shown["metrics"]["epoch"]][-1] == 10
    assert shown["metrics"]["val_loss"][-1][1] < 0.2 and shown["metrics"]["acc"][-1][1] > 0.9
    assert (tinynet / "artifacts" / "checkpoint.pt").stat().st_size > 0
    assert (tinynet / "artifacts" / "checkpoint.pt").stat().st_uid == os.getuid()
    again = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert again["metrics"] == shown["metrics"]  # each line is recorded once, however often the run is read
    plot = cli("runs", "plot", run_id)
    assert plot.exit_code == 0 and Path(plot.stdout.strip()).stat().st_size > 0

    # A long job in the image just built: stopped gracefully, recorded `stopped`.
    result = cli("submit", str(tinynet), "train", "--to", "slurm", "--image", submitted["image"], "--json",
                 "--", "--epochs", "200", "--step-delay", "0.05")
    assert result.exit_code == 0, result.stderr[-3000:]
    long_run = json.loads(result.stdout)
    log = Path(long_run["log_path"])
    _wait_for(lambda: log.exists() and "epoch 1/200" in log.read_text(), 180, "the long job's first epoch")
    assert json.loads(cli("runs", "show", long_run["run_id"], "--json").stdout)["status"] == "running"
    stopped = cli("runs", "stop", long_run["run_id"], "--grace", "30")
    assert stopped.exit_code == 0 and stopped.stdout.strip().endswith("stopped"), stopped.stdout + stopped.stderr
    record = json.loads(cli("runs", "show", long_run["run_id"], "--json").stdout)
    assert record["status"] == "stopped" and record["exit_code"] == 143, record
    assert "SIGTERM: stopped at epoch" in log.read_text()  # the job had its graceful stop
    leftover = subprocess.run(["docker", "ps", "-q", "--filter", f"label=org.envbuilder.run-id={long_run['run_id']}"],
                              capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == ""


_CHANNEL_JOB = """
import json, os
with open(os.environ["ENVBUILDER_METRICS"], "a") as out:
    for step in (1, 2, 3):
        out.write(json.dumps({"step": step, "loss": 1.0 / step, "val": {"acc": step / 4}}) + "\\n")
print("epoch 1/1 loss=9.9 acc=0.1")  # what the log heuristics would have read
"""


def test_a_slurm_runs_metrics_come_from_the_metrics_file_the_job_writes(
        cli, tmp_path, slurm_cluster, base_image):  # noqa: F811
    project = tmp_path / "plain"
    project.mkdir()
    artifacts = tmp_path / "out"
    (artifacts / ".envbuilder").mkdir(parents=True)
    (artifacts / ".envbuilder" / "metrics.jsonl").write_text('{"loss": 123}\n')  # an earlier run's: set aside
    result = cli("submit", str(project), "--to", "slurm", "--image", base_image, "--artifacts", str(artifacts),
                 "--json", "--", "python", "-c", _CHANNEL_JOB)
    assert result.exit_code == 0, result.stderr[-3000:]
    run_id = json.loads(result.stdout)["run_id"]
    follow = cli("runs", "logs", "-f", run_id)
    assert follow.exit_code == 0 and "epoch 1/1 loss=9.9" in follow.stdout, follow.stdout + follow.stderr
    shown = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert shown["status"] == "completed", shown
    assert shown["metrics"] == {"loss": [[1, 1.0], [2, 0.5], [3, 1 / 3]], "val/acc": [[1, 0.25], [2, 0.5], [3, 0.75]]}
    assert [n["code"] for n in shown["notices"]] == ["metrics-source"]
    assert len(list((artifacts / ".envbuilder").glob("metrics.*.jsonl"))) == 1

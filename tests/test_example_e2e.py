"""The example project end to end: build with real torch, train, stop with SIGTERM and resume, export, verify.

One test on purpose (minutes from a cold cache; seconds once BuildKit has the layers). download.pytorch.org
is unreachable here, so the CPU wheel in /opt/wheels is served on loopback as the torch index; the resolver
reads that index first and picks the build it serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from envbuilder.index.server import IndexServer

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tinynet"
WHEELS = Path(os.environ.get("ENVBUILDER_TEST_WHEELS", "/opt/wheels"))


def _local_torch_version() -> str:
    for wheel in sorted(WHEELS.glob("torch-*.whl")):
        return re.match(r"torch-([^-+]+)", wheel.name).group(1)
    pytest.fail(f"no torch wheel in {WHEELS} (set ENVBUILDER_TEST_WHEELS to a folder with one)")


def test_tinynet_pipeline_stop_resume_and_verified_export(cli, tmp_path):
    from envbuilder.build.base import bootstrap_base
    from envbuilder.docker.engine import Docker
    from envbuilder.run.container import stop_run
    from envbuilder.run.launch import RunRequest, run_project
    from envbuilder.run.spec import RunOptions
    from envbuilder.run.store import RunStore
    from envbuilder.settings import Settings

    docker = Docker()
    base = bootstrap_base(docker).name
    project = tmp_path / "tinynet"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("artifacts", "__pycache__"))
    torch_version = _local_torch_version()

    with IndexServer(wheels=[WHEELS]) as index:
        started = time.monotonic()
        result = cli("pipeline", str(project), "--base-image", base, "--torch-index-url", index.url,
                     "--host-ca", "--network", "host", "--json")
        took = time.monotonic() - started
    assert result.exit_code == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    train, export = summary["runs"]
    assert (train["job"], train["status"], export["job"], export["status"]) == ("train", "completed", "export", "completed")
    assert train["metrics"]["epoch"] == 10 and train["metrics"]["val_loss"] < 0.2 and train["metrics"]["acc"] > 0.9
    assert "2 DataLoader workers" in Path(train["log_path"]).read_text()
    [model] = export["verified"]
    assert model["ok"] and model["max_abs_diff"] < 1e-4
    meta = json.loads(Path(model["metadata_path"]).read_text())
    assert meta["plan"]["torch"].startswith(torch_version) and meta["plan"]["flavor"] == "cpu"
    assert meta["inputs"][0]["name"] == "input" and meta["opsets"]["ai.onnx"] == 17
    # train's own run folder; export needs train, so it worked in that folder
    artifacts = Path(train["artifacts_dir"])
    assert artifacts.parent == project / "artifacts" / "train" and Path(export["artifacts_dir"]) == artifacts
    assert {p.name for p in artifacts.iterdir()} >= {"checkpoint.pt", "tinynet.onnx", "tinynet.metadata.json"}
    assert all(p.stat().st_uid == os.getuid() for p in artifacts.iterdir())
    image = summary["image"]
    print(f"pipeline took {took:.1f} s (build included)")

    # SIGTERM mid-training: the step finishes, a checkpoint is saved, the run is `stopped`.
    settings = Settings(Path(os.environ["ENVBUILDER_HOME"]))
    store = RunStore.from_settings(settings)
    lines: list[str] = []
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=run_project(
        str(project), RunRequest(job="train"), image=image, options=RunOptions(args=("--step-delay", "0.02")),
        settings=settings, docker=docker, on_line=lines.append).result))
    worker.start()
    deadline = time.monotonic() + 120
    while not any(line.startswith("epoch 1/") for line in lines):
        assert time.monotonic() < deadline and worker.is_alive(), lines[-20:]
        time.sleep(0.1)
    stop_run(store, _running_id(store), grace_s=20, settings=settings, docker=docker)
    worker.join(60)
    stopped = outcome["result"]
    assert stopped.status == "stopped" and stopped.exit_code == 143, lines[-10:]
    assert any(line.startswith("SIGTERM: stopped at epoch") for line in lines)

    # Resume from that checkpoint through the CLI and the job's resume-arg: `last` is the stopped run's.
    result = cli("run", str(project), "--image", image, "--resume", "last", "--json", "train")
    assert result.exit_code == 0, result.stderr[-3000:]
    resumed = json.loads(result.stdout)
    assert resumed["status"] == "completed" and resumed["metrics"]["epoch"] == 10
    log = Path(resumed["log_path"]).read_text()
    inside = f"/workspace/project/artifacts/train/{stopped.run_id}/checkpoint.pt"
    assert f"resumed from {inside} at epoch" in log
    record = store.get(resumed["run_id"])
    assert record.args["args"] == ["--resume", inside] and record.parent_run == stopped.run_id


def _running_id(store) -> str:
    [record] = store.list_runs(status="running")
    return record.id

"""`envbuilder runs ...` and `envbuilder schema`, run in-process against a store in a temporary data dir. Docker is
the shared FakeEngine wherever the CLI opens it (the `fake_engine` fixture); no engine at all is a DOCKER_HOST
with nothing behind it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from envbuilder.errors import DockerError
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEAD_PID = 2**22 + 1  # above Linux's pid_max default: no such process


@pytest.fixture
def store(cli, tmp_path):
    settings = Settings.from_env(tmp_path / "envbuilder-home")
    return RunStore.from_settings(settings)


def make_run(store, status="completed", job="train", metrics=True):
    record = store.start_run("cifar", ["python", "train.py", "--epochs", "2"], job=job, image="envbuilder/cifar:1")
    if metrics:
        store.add_metrics(record.id, [(1, "loss", 1.0, 0.0), (2, "loss", 0.5, 0.0), (2, "val_loss", 0.7, 0.0),
                                      (1, "lr", 1e-3, 0.0), (2, "lr", 1e-4, 0.0)])
    if status != "running":
        store.finish_run(record.id, status, 0 if status == "completed" else 1)
        record = store.get(record.id)
    return record


def test_list_json_newest_first(cli, store, fake_engine):
    first = make_run(store)
    second = make_run(store, status="failed", job="eval")
    result = cli("runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["id"] for row in rows] == [second.id, first.id]
    for key in ("id", "status", "exit_code", "command", "started_at", "job", "image", "finished_at"):
        assert key in rows[0]
    assert rows[0]["status"] == "failed" and rows[0]["exit_code"] == 1
    assert rows[1]["command"] == ["python", "train.py", "--epochs", "2"]
    assert [r["id"] for r in json.loads(cli("runs", "list", "--json", "--status", "completed").stdout)] == [first.id]
    assert len(json.loads(cli("runs", "list", "--json", "--limit", "1").stdout)) == 1
    assert json.loads(cli("runs", "list", "--json", "--project", "other").stdout) == []


def test_list_human(cli, store, fake_engine):
    assert "no runs recorded" in cli("runs", "list").stdout
    record = make_run(store)
    result = cli("runs", "list")
    assert result.exit_code == 0 and record.id in result.stdout and "completed" in result.stdout


def watched_by_nobody(store, engine, record, lines=(), exit_code=0):
    """Give the running run a container in the engine, printing `lines`, and a runner that has died (SIGKILL)."""
    engine.script(lines, exit_code)
    container = engine.run_detached(record.image, record.command)
    store.set_container(record.id, container)
    store.set_owner(record.id, DEAD_PID)
    return container


def test_list_settles_a_run_whose_runner_died_from_its_container(cli, store, fake_engine):
    record = make_run(store, status="running", metrics=False)
    container = watched_by_nobody(store, fake_engine, record, ["step=1 loss=0.9", "step=2 loss=0.4"], exit_code=3)
    fake_engine.wait(container)  # the job ended while nobody watched
    Path(record.log_path).write_text("step=1 loss=0.9\n")  # what the runner saw before it died
    result = cli("runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["id"], row["status"], row["exit_code"]) == (record.id, "failed", 3)
    assert ("container_state", container) in fake_engine.calls and container not in fake_engine.containers
    assert Path(record.log_path).read_text() == "step=1 loss=0.9\nstep=2 loss=0.4\n"  # the rest, from the engine
    assert store.metric_series(record.id)["loss"] == [(2, 0.4)]
    watched = make_run(store, status="running", metrics=False)  # its runner is this process: left to it
    cli("runs", "list")
    assert store.get(watched.id).status == "running"


def test_list_without_a_docker_engine(cli, store, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # the real factory, nothing answering
    record = make_run(store, status="running")
    store.set_container(record.id, "c-unknown")
    store.set_owner(record.id, DEAD_PID)
    result = cli("runs", "list", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert [row["status"] for row in json.loads(result.stdout)] == ["running"]  # nothing known, nothing changed


def test_an_engine_lost_while_reconciling_is_one_note(cli, store, fake_engine):
    record = make_run(store, status="running")
    watched_by_nobody(store, fake_engine, record)
    fake_engine.fail_next("container_state", DockerError("docker-not-running", "Cannot connect to the Docker daemon"))
    result = cli("runs", "list", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["status"] == "running"
    assert result.stderr == "envbuilder: note: run states not checked against Docker (docker-not-running)\n"


def test_show_json_has_metrics(cli, store, fake_engine):
    record = make_run(store)
    result = cli("runs", "show", record.id, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["id"] == record.id and data["status"] == "completed"
    assert data["metrics"] == {"loss": [[1, 1.0], [2, 0.5]], "lr": [[1, 1e-3], [2, 1e-4]], "val_loss": [[2, 0.7]]}
    human = cli("runs", "show", record.id)
    assert record.id in human.stdout and "loss" in human.stdout


def test_unknown_run_id(cli, store, fake_engine):
    for command in (["show", "r-missing"], ["logs", "r-missing"], ["stop", "r-missing"], ["plot", "r-missing"]):
        result = cli("runs", *command)
        assert result.exit_code == 1, command
        assert "run-not-found" in result.stderr and "envbuilder runs list" in result.stderr


def test_logs_and_tail(cli, store, fake_engine):
    record = make_run(store)
    with open(record.log_path, "w", encoding="utf-8") as log:
        log.write("".join(f"line {i}\n" for i in range(10)))
    assert cli("runs", "logs", record.id).stdout == "".join(f"line {i}\n" for i in range(10))
    assert cli("runs", "logs", record.id, "--tail", "2").stdout == "line 8\nline 9\n"


def test_logs_follow_until_the_run_ends(cli, store, fake_engine):
    record = make_run(store, status="running")

    def write_then_finish():
        with open(record.log_path, "a", encoding="utf-8") as log:
            for i in range(3):
                log.write(f"epoch {i}\n")
                log.flush()
                time.sleep(0.2)
        store.finish_run(record.id, "completed", 0)

    writer = threading.Thread(target=write_then_finish)
    writer.start()
    result = cli("runs", "logs", record.id, "--follow")
    writer.join()
    assert result.exit_code == 0
    assert result.stdout == "epoch 0\nepoch 1\nepoch 2\n"


def test_stop_asks_the_engine_with_the_grace_period(cli, store, fake_engine, monkeypatch):
    monkeypatch.setenv("ENVBUILDER_DOCKER", "/opt/docker/bin/docker")
    record = make_run(store, status="running", metrics=False)
    container = watched_by_nobody(store, fake_engine, record, ["step=1 loss=0.5"])
    result = cli("runs", "stop", record.id, "--grace", "3")
    assert result.exit_code == 0, result.stderr
    assert ("stop", container, 3.0) in fake_engine.calls and fake_engine.opened == ["/opt/docker/bin/docker"]
    stopped = store.get(record.id)
    assert (stopped.status, stopped.exit_code, stopped.error) == ("stopped", 143, "stopped on request")
    assert f"{record.id}: stopped" in result.stdout and container not in fake_engine.containers
    assert Path(record.log_path).read_text() == "step=1 loss=0.5\n"  # what it printed, though nobody watched
    again = cli("runs", "stop", record.id)
    assert again.exit_code == 0 and "not running" in again.stdout
    assert [c for c in fake_engine.calls if c[0] == "stop"] == [("stop", container, 3.0)]


def test_stop_before_the_container_started_needs_no_engine(cli, store, fake_engine):
    record = make_run(store, status="running", metrics=False)
    result = cli("runs", "stop", record.id)
    assert result.exit_code == 0, result.stderr
    stopped = store.get(record.id)
    assert stopped.status == "stopped" and "before its container started" in stopped.error
    assert not [c for c in fake_engine.calls if c[0] in ("stop", "kill", "remove_container")]


def test_plot_writes_a_png(cli, store, fake_engine, tmp_path):
    record = make_run(store)
    out = tmp_path / "plot.png"
    result = cli("runs", "plot", record.id, "-o", str(out))
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    default = cli("runs", "plot", record.id)
    assert default.exit_code == 0 and default.stdout.strip().endswith("metrics.png")


@pytest.mark.parametrize("series", [
    {"loss": [(1, 1.0), (2, 0.5)], "val_loss": [(2, 0.7)], "lr": [(1, 1e-3), (2, 1e-4)]},
    {"loss": [(1, 1.0), (2, float("nan")), (3, float("inf"))]},  # no lr, non-finite values
    {"lr": [(1, 0.0), (2, 1e-3)]},  # a zero lr: no log scale
    {"accuracy": [(1, 0.5)], "val_accuracy": [(1, 0.4)]},
    {"grad_norm": [(1, 3.0)]},
])  # no series at all is an error, not a picture: tests/test_plot.py
def test_plot_run_handles_missing_series(tmp_path, series):
    from envbuilder.run.plot import plot_run

    out = plot_run(series, tmp_path / "sub" / "m.png", "title")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1_000


def test_schema_command(cli, tmp_path):
    result = cli("schema")
    assert result.exit_code == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "Job" in schema["$defs"] and "shm-size" in schema["$defs"]["Job"]["properties"]
    out = tmp_path / "schema.json"
    assert cli("schema", "--output", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == schema

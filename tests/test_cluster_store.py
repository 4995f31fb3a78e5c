"""The run store's side of cluster runs: the `queued` status, the engine's job id, metrics read from the job's
output exactly once, the migration that adds them to an existing database, and sync/stop against an engine
(a stand-in at the engine interface: the real Slurm is exercised in test_cluster_slurm.py)."""

from __future__ import annotations

import inspect
import sqlite3
import time
from pathlib import Path

import pytest

from envbuilder.cluster.engines import ClusterEngine
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.spec import JobState
from envbuilder.cluster.track import ingest_metrics, stop_run, sync_runs
from envbuilder.run.store import SCHEMA_VERSION, RunStore


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


def _submitted(store: RunStore, job_id: str = "42"):
    record = store.start_run("tinynet", ["python", "-m", "tinynet.train"], job="train", backend="slurm",
                             args={"cluster": {"profile": ClusterProfile().model_dump(mode="json", by_alias=True),
                                               "metric_patterns": []}})
    store.set_backend_job(record.id, job_id)
    return store.get(record.id)


def test_a_cluster_run_is_queued_with_its_engine_and_job_id(store):
    record = _submitted(store)
    assert (record.status, record.backend, record.backend_job_id, record.owner_pid) == ("queued", "slurm", "42", None)
    assert record.active and not record.running
    assert record.to_json()["backend"] == "slurm" and Path(record.log_path).exists()
    assert [r.id for r in store.active_backend_runs()] == [record.id]
    assert store.list_runs(status="queued")[0].id == record.id
    assert store.mark_running(record.id) and not store.mark_running(record.id)
    # The local reconciler leaves it alone: no container, no local owner process.
    assert store.reconcile(lambda _id: None) == []
    assert store.get(record.id).status == "running"


def test_metrics_are_read_from_the_output_once_and_a_half_line_waits(store):
    record = _submitted(store)
    log = Path(record.log_path)
    log.write_text("epoch 1/3 loss=0.9 acc=0.5\nepoch 2/3 loss=0.5 acc=0.7\nepoch 3/3 lo")
    assert ingest_metrics(store, record) == 6  # epoch, loss, acc of two whole lines
    assert ingest_metrics(store, record) == 0
    with log.open("a") as handle:
        handle.write("ss=0.2 acc=0.9\n")
    assert ingest_metrics(store, record) == 3
    assert store.metric_series(record.id)["loss"] == [(1, 0.9), (2, 0.5), (3, 0.2)]
    # A second reader that read the same bytes concurrently loses the race and records nothing.
    assert store.add_log_metrics(record.id, [], 0, 10) is False


def test_a_version_1_database_migrates_keeping_its_runs_and_metrics(tmp_path):
    from envbuilder.run.store import _MIGRATIONS

    path = tmp_path / "runs.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(_MIGRATIONS[0])
    conn.execute("INSERT INTO runs (id, project, command, status, started_at, log_path) VALUES "
                 "('r-1', 'p', '[\"python\"]', 'completed', 1.0, '/tmp/log.txt')")
    conn.executemany("INSERT INTO metrics (run_id, step, name, value, t) VALUES (?, ?, ?, ?, ?)",
                     [("r-1", 1, "loss", 0.5, 1.0), ("r-1", 2, "loss", 0.25, 2.0)])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = RunStore(path)
    old = store.get("r-1")
    assert old.status == "completed" and old.backend is None
    assert store.metric_series("r-1") == {"loss": [(1, 0.5), (2, 0.25)]}
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert check.execute("PRAGMA foreign_key_check").fetchall() == []
    fk = check.execute("PRAGMA foreign_key_list(metrics)").fetchall()
    assert fk[0][2] == "runs"  # the metrics still point at the runs table after the rebuild
    check.close()
    store.close()


class FakeClusterEngine:
    """A stand-in at the ClusterEngine interface (Slurm, Kubernetes, SkyPilot; not Docker: that is
    support.fake_engine.FakeEngine), driven by the test."""

    name = "slurm"

    def __init__(self, states: list[JobState]) -> None:
        self.states = states
        self.calls: list[tuple[str, str]] = []

    def state(self, job_id: str) -> JobState:
        self.calls.append(("state", job_id))
        return self.states[0] if len(self.states) == 1 else self.states.pop(0)

    def signal_term(self, job_id: str, grace_s: float) -> None:
        self.calls.append(("term", job_id))

    def cancel(self, job_id: str) -> None:
        self.calls.append(("cancel", job_id))
        self.states = [JobState("stopped", None, "CANCELLED")]

    def output(self, job_id: str):
        return None


def test_the_fake_cluster_engine_has_the_interfaces_methods():
    methods = [name for name, value in vars(ClusterEngine).items() if not name.startswith("_") and callable(value)]
    assert set(methods) == {"state", "signal_term", "cancel", "output"}
    for name in methods:
        assert inspect.signature(getattr(FakeClusterEngine, name)).parameters.keys() == \
            inspect.signature(getattr(ClusterEngine, name)).parameters.keys(), name


def test_sync_moves_a_run_from_queued_to_running_to_failed_with_the_exit_code(store):
    record = _submitted(store)
    engine = FakeClusterEngine([JobState("queued", None, "PENDING"), JobState("running", None, "RUNNING"),
                         JobState("failed", 2, "FAILED (NonZeroExitCode)")])
    factory = lambda _profile: engine
    assert sync_runs(store, engines=factory) == []
    assert sync_runs(store, engines=factory) == [record.id] and store.get(record.id).status == "running"
    assert sync_runs(store, engines=factory) == [record.id]
    ended = store.get(record.id)
    assert (ended.status, ended.exit_code) == ("failed", 2) and "NonZeroExitCode" in ended.error
    assert store.active_backend_runs() == []


def test_stop_sends_sigterm_then_cancels_after_the_grace_period(store):
    record = _submitted(store)
    store.mark_running(record.id)
    engine = FakeClusterEngine([JobState("running", None, "RUNNING")])
    now = [0.0]
    stopped = stop_run(store, record.id, 5.0, engines=lambda _p: engine, clock=lambda: now[0],
                       sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert [c[0] for c in engine.calls if c[0] != "state"] == ["term", "cancel"]
    assert stopped.status == "stopped" and "stopped on request" in stopped.error


def test_stop_of_a_job_that_ends_on_sigterm_needs_no_cancel(store):
    record = _submitted(store)
    store.mark_running(record.id)
    engine = FakeClusterEngine([JobState("running", None, "RUNNING"), JobState("running", None, "RUNNING"),
                         JobState("failed", 143, "FAILED")])
    stopped = stop_run(store, record.id, 30.0, engines=lambda _p: engine, sleep=lambda s: time.sleep(0))
    assert [c[0] for c in engine.calls if c[0] != "state"] == ["term"]
    assert (stopped.status, stopped.exit_code) == ("stopped", 143)

"""The run store: records, metric series, concurrent writers (threads and processes), reconciliation."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import subprocess
import threading

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.run.record import MetricPoint
from envbuilder.run.store import SCHEMA_VERSION, VANISHED, RunStore


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs.sqlite3", tmp_path / "runs")


def test_run_lifecycle(store, tmp_path):
    record = store.start_run("cifar", ["python", "train.py"], job="train", image="envbuilder/cifar:abc",
                             plan={"torch": "2.8.0"}, artifacts_dir=tmp_path / "out", args={"resume": "ckpt.pt"})
    assert record.status == "running" and record.exit_code is None and record.finished_at is None
    read = store.get(record.id)  # what start_run returns is what was written
    assert (read.id, read.project, read.job, read.image, read.plan, read.command, read.log_path, read.artifacts_dir,
            read.args, read.owner_pid) == (record.id, record.project, record.job, record.image, record.plan,
                                           record.command, record.log_path, record.artifacts_dir, record.args,
                                           record.owner_pid)
    assert abs((read.started_at - record.started_at).total_seconds()) < 1e-3
    assert record.id.startswith("r-") and len(record.id) == len("r-20260509-073525-abcd")
    assert record.log_path == str(tmp_path / "runs" / record.id / "log.txt")
    assert (tmp_path / "runs" / record.id / "log.txt").exists()
    store.set_container(record.id, "c0ffee")
    store.add_metrics(record.id, [MetricPoint(10, "loss", 0.5, 1.0), (20, "loss", 0.25, 2.0), (10, "lr", 1e-3, 1.0),
                                  (30, "loss", math.nan, 3.0)])
    store.finish_run(record.id, "completed", 0)
    done = store.get(record.id)
    assert done.status == "completed" and done.exit_code == 0 and done.finished_at >= done.started_at
    again = store.get(record.id[:-2])  # a unique prefix names the run too
    assert again == done
    assert (again.container_id, again.plan, again.args, again.command) == (
        "c0ffee", {"torch": "2.8.0"}, {"resume": "ckpt.pt"}, ("python", "train.py"))
    series = store.metric_series(record.id)
    assert series["lr"] == [(10, 1e-3)]
    assert series["loss"][:2] == [(10, 0.5), (20, 0.25)] and math.isnan(series["loss"][2][1])


def test_schema_version_and_wal(store):
    store.list_runs()
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_list_newest_first_and_filters(store):
    first = store.start_run("a", ["x"], job="train")
    second = store.start_run("b", ["y"], job="eval")
    third = store.start_run("a", ["z"], job="train")
    store.finish_run(second.id, "failed", 1, "boom")
    assert [r.id for r in store.list_runs()] == [third.id, second.id, first.id]
    assert [r.id for r in store.list_runs(limit=1)] == [third.id]
    assert [r.id for r in store.list_runs(project="a")] == [third.id, first.id]
    assert [r.id for r in store.list_runs(status="failed")] == [second.id]
    assert store.get(second.id).error == "boom"


def test_unknown_and_prefix_ids(store):
    record = store.start_run("a", ["x"])
    with pytest.raises(EnvbuilderError) as caught:
        store.get("r-nope")
    assert caught.value.code == "run-not-found" and "runs list" in caught.value.hint
    assert store.get(record.id[:-2]).id == record.id  # a unique prefix is enough
    for call in (lambda: store.finish_run("r-nope", "failed", 1), lambda: store.add_metrics("r-nope", [(1, "a", 1, 1)]),
                 lambda: store.metric_series("r-nope"), lambda: store.set_container("r-nope", "c")):
        with pytest.raises(EnvbuilderError):
            call()
    with pytest.raises(ValueError):
        store.finish_run(record.id, "running", None)


def test_request_stop(store):
    record = store.start_run("a", ["x"])
    assert not store.stop_requested(record.id)
    assert store.request_stop(record.id).stop_requested_at is not None
    finished = store.start_run("a", ["y"])
    store.finish_run(finished.id, "completed", 0)
    assert store.request_stop(finished.id).stop_requested_at is None


def test_reconcile_fails_runs_whose_container_is_gone(store):
    gone = store.start_run("a", ["x"])
    exited = store.start_run("a", ["x"])
    alive = store.start_run("a", ["x"])
    odd = store.start_run("a", ["x"])  # a state we do not know: left alone
    mine = store.start_run("a", ["x"])  # no container yet, and this process is alive
    done = store.start_run("a", ["x"])
    for record, container in ((gone, "c-gone"), (exited, "c-exited"), (alive, "c-alive"), (odd, "c-odd"), (done, "c-done")):
        store.set_container(record.id, container)
    store.finish_run(done.id, "completed", 0)
    _orphan(store, gone.id, exited.id, alive.id, odd.id)  # their runner died; `mine` keeps this live process
    states = {"c-exited": "exited", "c-alive": "running", "c-done": None, "c-odd": "unknown"}
    asked: list[str] = []

    def state(container_id):
        asked.append(container_id)
        return states.get(container_id)

    changed = store.reconcile(state)
    assert sorted(changed) == sorted([gone.id, exited.id])
    assert "c-done" not in asked  # finished runs are not looked at
    for run_id in changed:
        record = store.get(run_id)
        assert record.status == "failed" and record.error == VANISHED and record.finished_at is not None
    assert all(store.get(r.id).status == "running" for r in (alive, odd, mine))
    assert store.reconcile(state) == []


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _orphan(store, *run_ids):
    """Make runs look as if the process that started them has died (a crash, a kill -9)."""
    with sqlite3.connect(store.path) as conn:
        conn.executemany("UPDATE runs SET owner_pid = ? WHERE id = ?", [(_dead_pid(), run_id) for run_id in run_ids])


def test_a_run_whose_runner_is_alive_is_left_to_it(store):
    record = store.start_run("a", ["x"])
    store.set_container(record.id, "c-gone")  # its container is gone, but its runner (this process) is alive
    assert store.reconcile(lambda _container: None) == []
    assert store.get(record.id).status == "running"


def test_reconcile_records_the_exit_code_of_a_container_that_ended_unwatched(store):
    ok, bad = store.start_run("a", ["x"]), store.start_run("a", ["x"])
    store.set_container(ok.id, "c-ok")
    store.set_container(bad.id, "c-bad")
    _orphan(store, ok.id, bad.id)
    states = {"c-ok": {"Status": "exited", "ExitCode": 0}, "c-bad": {"Status": "exited", "ExitCode": 2}}
    assert sorted(store.reconcile(states.get)) == sorted([ok.id, bad.id])
    assert (store.get(ok.id).status, store.get(ok.id).exit_code) == ("completed", 0)
    failed = store.get(bad.id)
    assert (failed.status, failed.exit_code) == ("failed", 2) and "no envbuilder process was watching" in failed.error


def _thread_writer(store, index, ids, errors):
    try:
        record = store.start_run(f"p{index % 3}", ["train", str(index)], job="train")
        for batch in range(5):
            store.add_metrics(record.id, [(batch * 10 + i, "loss", 1.0 / (1 + i), float(i)) for i in range(10)])
        store.finish_run(record.id, "completed", 0)
        ids.append(record.id)
    except Exception as exc:  # pragma: no cover - reported below
        errors.append(exc)


def test_concurrent_threads_lose_nothing(store):
    ids: list[str] = []
    errors: list[Exception] = []
    threads = [threading.Thread(target=_thread_writer, args=(store, i, ids, errors)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 16
    runs = store.list_runs(limit=None)
    assert {r.id for r in runs} == set(ids) and all(r.status == "completed" for r in runs)
    for run_id in ids:
        assert len(store.metric_series(run_id)["loss"]) == 50


def _process_writer(db, runs_dir, tag, count, queue):
    store = RunStore(db, runs_dir)
    made = []
    for index in range(count):
        record = store.start_run(tag, ["train", str(index)])
        store.add_metrics(record.id, [(step, "loss", 1.0, 0.0) for step in range(20)])
        store.finish_run(record.id, "completed", 0)
        made.append(record.id)
    queue.put(made)


def test_two_processes_lose_nothing(tmp_path):
    db, runs_dir = tmp_path / "runs.sqlite3", tmp_path / "runs"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_process_writer, args=(db, runs_dir, tag, 25, queue)) for tag in ("p1", "p2")]
    for worker in workers:
        worker.start()
    made = [run_id for _ in workers for run_id in queue.get(timeout=120)]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    store = RunStore(db, runs_dir)
    runs = store.list_runs(limit=None)
    assert len(made) == 50 and {r.id for r in runs} == set(made)
    assert {r.project for r in runs} == {"p1", "p2"} and all(r.status == "completed" for r in runs)
    assert all(len(store.metric_series(run_id)["loss"]) == 20 for run_id in made)


def _crash_mid_run(db, runs_dir, container_id, conn):
    import os

    store = RunStore(db, runs_dir)
    record = store.start_run("p", ["train"])
    if container_id:
        store.set_container(record.id, container_id)
    store.add_metrics(record.id, [(1, "loss", 2.0, 0.0)])
    conn.send(record.id)  # a pipe send completes before returning, unlike a queue's background feeder
    os._exit(1)  # no finish_run, no cleanup: the record is left `running`


@pytest.mark.parametrize("container_id", ["c-crashed", None])
def test_a_crash_mid_run_is_reconciled(tmp_path, container_id):
    db, runs_dir = tmp_path / "runs.sqlite3", tmp_path / "runs"
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(target=_crash_mid_run, args=(db, runs_dir, container_id, sender))
    worker.start()
    assert receiver.poll(60)
    run_id = receiver.recv()
    worker.join(timeout=60)
    assert worker.exitcode == 1
    store = RunStore(db, runs_dir)
    assert store.get(run_id).status == "running"
    assert store.reconcile(lambda _container: None) == [run_id]
    record = store.get(run_id)
    assert record.status == "failed" and record.error
    assert store.metric_series(run_id) == {"loss": [(1, 2.0)]}  # what it recorded before the crash is kept


def test_the_store_and_its_records_import_no_pydantic(tmp_path):
    # The run path starts, finishes and reads records: none of it may load pydantic (~0.1 s of `envbuilder run`).
    import subprocess
    import sys

    probe = (
        "import sys\nfrom pathlib import Path\nfrom envbuilder.run.store import RunStore\n"
        f"store = RunStore({str(tmp_path / 'runs.sqlite3')!r})\n"
        "record = store.start_run('p', ['true'], job='j')\n"
        "store.set_container(record.id, 'c0ffee')\n"
        "stop = store.stop_requested(record.id)\n"
        "store.finish_run(record.id, 'completed', 0)\n"
        "print(Path(record.log_path).exists(), stop, record.status)\n"
        "record = store.get(record.id)\n"
        "print(type(record).__name__, record.status, record.exit_code, record.container_id, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["True False running", "RunRecord completed 0 c0ffee False"]


def test_a_thread_keeps_its_connection_and_a_failed_write_leaves_it_usable(store):
    record = store.start_run("p", ["true"])
    assert store._connect() is store._connect()
    with pytest.raises(sqlite3.IntegrityError):
        with store._write() as conn:
            conn.execute("INSERT INTO runs (id, project, command, status, started_at, log_path)"
                         " VALUES (?, 'p', '[]', 'running', 0, 'x')", (record.id,))
    store.finish_run(record.id, "completed", 0)
    assert store.get(record.id).status == "completed"
    other = []
    thread = threading.Thread(target=lambda: other.append(store._connect()))
    thread.start()
    thread.join()
    assert other[0] is not store._connect()
    store.close()
    assert store.get(record.id).status == "completed"

"""Cluster runs take their metrics from the channels local runs use, in the same order: $ENVBUILDER_METRICS
(readable here for Slurm, whose artifacts folder is this machine's or a shared one), `ENVBUILDER_METRIC` lines in
the output (every engine), else the log heuristics; each state recorded once, whoever reads it.
The real Slurm path (a job writing the file on the node) is in test_cluster_slurm.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envbuilder.cluster.metrics import ingest_metrics
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.run.store import RunStore


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


def _run(store: RunStore, tmp_path: Path, backend: str = "slurm"):
    artifacts = tmp_path / "artifacts"
    record = store.start_run("tinynet", ["python", "train.py"], job="train", backend=backend, artifacts_dir=artifacts,
                             args={"cluster": {"profile": ClusterProfile(engine=backend).model_dump(mode="json", by_alias=True),
                                               "metric_patterns": []}})
    store.set_backend_job(record.id, "42")
    return record.id, Path(record.log_path), artifacts / ".envbuilder" / "metrics.jsonl"


def _append(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def _ingest(store: RunStore, run_id: str) -> int:
    return ingest_metrics(store, store.get(run_id))


def test_the_metrics_file_replaces_the_log_heuristics_and_is_followed_as_it_grows(store, tmp_path):
    run_id, log, metrics = _run(store, tmp_path)
    _append(log, "epoch 1/3 loss=0.9 acc=0.5\n")
    assert _ingest(store, run_id) == 3  # the heuristics, while nothing better has spoken
    _append(metrics, json.dumps({"step": 10, "train/loss": 0.8}) + "\n")
    _append(log, "epoch 2/3 loss=0.5 acc=0.7\n")
    assert _ingest(store, run_id) == 1
    assert dict(store.metric_series(run_id)) == {"train/loss": [(10, 0.8)]}  # the log's points are gone
    assert [n["code"] for n in store.get(run_id).notices] == ["metrics-source"]
    assert _ingest(store, run_id) == 0  # nothing new: nothing re-read
    _append(metrics, json.dumps({"step": 20, "train/loss": 0.6, "val": {"acc": 0.9}}) + '\n{"step": 30, "train/lo')
    _append(log, "epoch 3/3 loss=0.2 acc=0.9\n")
    assert _ingest(store, run_id) == 3  # the half-written record waits
    series = store.metric_series(run_id)
    assert series["train/loss"] == [(10, 0.8), (20, 0.6)] and series["val/acc"] == [(20, 0.9)]
    _append(metrics, 'ss": 0.4}\n')
    _ingest(store, run_id)
    assert store.metric_series(run_id)["train/loss"][-1] == (30, 0.4)
    assert [n["code"] for n in store.get(run_id).notices] == ["metrics-source"]  # said once


def test_two_readers_of_the_same_state_record_it_once(store, tmp_path):
    run_id, _, metrics = _run(store, tmp_path)
    _append(metrics, '{"loss": 0.5}\n{"loss": 0.4}\n')
    record = store.get(run_id)  # both readers saw the run before either wrote
    assert ingest_metrics(store, record) == 2
    assert ingest_metrics(store, record) == 0
    assert store.metric_series(run_id)["loss"] == [(1, 0.5), (2, 0.4)]
    assert len(store.get(run_id).notices) == 1


def test_prefixed_output_lines_work_on_every_engine(store, tmp_path):
    run_id, log, _ = _run(store, tmp_path, backend="kubernetes")
    _append(log, 'epoch 1/2 loss=0.9\nENVBUILDER_METRIC {"step": 1, "loss": 0.7, "note": "x"}\n'
                 'ENVBUILDER_METRIC {not json}\nENVBUILDER_METRIC {"step": 2, "loss": NaN}\n')
    assert _ingest(store, run_id) == 2
    assert store.metric_series(run_id)["loss"][0] == (1, 0.7)
    codes = [n["code"] for n in store.get(run_id).notices]
    assert codes == ["metrics-source", "metrics-keys-ignored", "metrics-record-ignored", "nonfinite-loss"]


def test_a_kubernetes_runs_file_is_not_read_and_an_env_dump_is_not_a_channel(store, tmp_path):
    run_id, log, metrics = _run(store, tmp_path, backend="kubernetes")
    _append(metrics, '{"loss": 0.1}\n')  # a leftover in a folder of the same path here: not the pod's
    _append(log, "ENVBUILDER_METRICS=/artifacts/.envbuilder/metrics.jsonl\nepoch 1/1 loss=0.3\n")
    assert _ingest(store, run_id) == 2
    assert store.metric_series(run_id)["loss"] == [(1, 0.3)] and store.get(run_id).notices == ()

"""The explicit metric channels (envbuilder.run.metric_channels): the JSON-lines contract, its file and stdout
transports, TensorBoard event files written by a real writer, the preference between channels, and NaN flags."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from envbuilder.run.container import execute_run
from envbuilder.run.metric_channels import (
    METRIC_PREFIX,
    METRICS_RELPATH,
    BadRecord,
    JsonlTail,
    MetricRecorder,
    lines_to_points,
    parse_record,
    prefixed_record,
    tensorboard_scalars,
)
from envbuilder.run.spec import RunOptions, run_spec
from envbuilder.run.store import RunStore
from tests.support.fake_engine import FakeEngine


@pytest.fixture
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite3")


@pytest.fixture
def run_id(store) -> str:
    return store.start_run("demo", ["python", "train.py"]).id


@pytest.mark.parametrize(("text", "values", "ignored"), [
    ('{"loss": 0.5, "step": 10}', {"loss": 0.5, "step": 10.0}, []),
    ('{"val/acc": 0.9, "epoch": 2}', {"val/acc": 0.9, "epoch": 2.0}, []),
    ('{"train": {"loss": 1.5}, "lr": 1e-3}', {"train/loss": 1.5, "lr": 1e-3}, []),
    ('{"loss": NaN, "grad_norm": Infinity}', {"loss": math.nan, "grad_norm": math.inf}, []),
    ('{"loss": "nan", "phase": "train", "ok": true}', {"loss": math.nan}, ["ok", "phase"]),
    ('{"batch_size": 32, "loss": 1}', {"batch_size": 32.0, "loss": 1.0}, []),  # the channel records what it is given
])
def test_record_contract(text, values, ignored):
    got, skipped = parse_record(text)
    assert got.keys() == values.keys() and skipped == ignored
    assert all(math.isnan(v) if math.isnan(values[k]) else v == values[k] for k, v in got.items())


@pytest.mark.parametrize(("text", "said"), [
    ("loss=0.5", "not JSON"), ("[1, 2]", "not an object"), ('{"phase": "train"}', "no numeric values"),
    ('{"loss": 1, "step": 1.5}', '"step" must be an integer'),
])
def test_bad_records_say_why(text, said):
    with pytest.raises(BadRecord, match=said):
        parse_record(text)


def test_prefix():
    assert prefixed_record('ENVBUILDER_METRIC {"loss": 1}') == '{"loss": 1}'
    assert prefixed_record('  ENVBUILDER_METRIC: {"loss": 1}') == '{"loss": 1}'
    assert prefixed_record("ENVBUILDER_METRICS=/artifacts/x") is None  # the variable's echo is not a record
    assert prefixed_record("loss=1") is None


def test_tail_reads_whole_lines_and_starts_over_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []
    path.write_text('{"a": 1}\n{"b": 2', encoding="utf-8")
    assert tail.read() == [(1, '{"a": 1}')]  # the half-written line waits
    with path.open("a") as f:
        f.write("}\n")
    assert tail.read() == [(2, '{"b": 2}')]
    path.write_text('{"c": 3}\n', encoding="utf-8")  # shorter: rewritten from the start
    assert tail.read() == [(1, '{"c": 3}')]


def test_the_file_channel_is_read_live_and_replaces_the_log_guesses(tmp_path, store, run_id):
    artifacts = tmp_path / "artifacts"
    (artifacts / ".envbuilder").mkdir(parents=True)
    (artifacts / METRICS_RELPATH).write_text('{"loss": 99, "step": 1}\n')  # an earlier run's file: not ours
    recorder = MetricRecorder(store, run_id, artifacts_dir=artifacts, since=time.time()).start()
    recorder.feed("epoch 1 loss=0.9")  # the log says something first
    recorder.flush()
    assert store.metric_series(run_id) == {"loss": [(1, 0.9)], "epoch": [(1, 1.0)]}

    def job() -> None:  # a training loop writing its records while the run goes on
        with (artifacts / METRICS_RELPATH).open("w") as out:
            for step in range(1, 4):
                out.write(json.dumps({"step": step * 10, "train/loss": 1 / step, "phase": "train"}) + "\n")
                out.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=job)
    writer.start()
    writer.join()
    deadline = time.monotonic() + 5
    while recorder.source != "envbuilder" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorder.source == "envbuilder"  # seen by the poller, before the run's end
    recorder.feed("epoch 2 loss=0.5")  # once the channel has spoken, log lines are not guessed at
    recorder.finish()
    series = store.metric_series(run_id)
    assert series == {"train/loss": [(10, 1.0), (20, 0.5), (30, pytest.approx(1 / 3))]}
    assert store.metric_axis(run_id) == "step"
    notices = {n["code"]: n["message"] for n in store.get(run_id).notices}
    assert "'phase' ignored: not a number" in notices["metrics-keys-ignored"]
    assert notices["metrics-source"].startswith("metrics from $ENVBUILDER_METRICS")
    assert list((artifacts / ".envbuilder").glob("metrics.*.jsonl"))  # the earlier file was moved aside, kept


def _write_events(folder: Path, tags: dict[str, list[float]]) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, values in tags.items():
        for step, value in enumerate(values):
            writer.add_scalar(tag, value, step * 100)
    writer.close()


def test_tensorboard_events_from_a_real_writer_replace_the_log_guesses(tmp_path, store, run_id):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (a dev dependency) reads event files")
    artifacts = tmp_path / "artifacts"
    recorder = MetricRecorder(store, run_id, artifacts_dir=artifacts, since=time.time())
    _write_events(artifacts / "lightning_logs" / "version_0", {"train/loss": [1.0, 0.5, math.nan], "val/acc": [0.4, 0.7]})
    recorder.feed("loss=0.3")
    recorder.finish()
    series = store.metric_series(run_id)
    assert series.keys() == {"train/loss", "val/acc"}
    assert series["train/loss"][:2] == [(0, 1.0), (100, 0.5)] and math.isnan(series["train/loss"][2][1])
    assert series["val/acc"] == [(0, pytest.approx(0.4)), (100, pytest.approx(0.7))]
    assert recorder.nonfinite == "train/loss was nan at step 200"
    codes = [n["code"] for n in store.get(run_id).notices]
    assert codes == ["nonfinite-loss", "metrics-source"]


def test_tensorboard_folders_are_told_apart_and_old_files_left_out(tmp_path):
    pytest.importorskip("tensorboard")
    _write_events(tmp_path / "old", {"loss": [9.0]})
    since = time.time() + 0.5
    time.sleep(0.6)
    _write_events(tmp_path / "a", {"loss": [1.0]})
    _write_events(tmp_path / "b", {"loss": [2.0]})
    assert sorted((tag, v) for tag, _, v, _ in tensorboard_scalars(tmp_path, since)) == [("a/loss", 1.0), ("b/loss", 2.0)]


def test_without_the_tensorboard_package_the_run_says_so_once(tmp_path, store, run_id, monkeypatch):
    import builtins

    artifacts = tmp_path / "artifacts"
    (artifacts / "tb").mkdir(parents=True)
    (artifacts / "tb" / "events.out.tfevents.1.host").write_bytes(b"\0" * 16)
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    recorder = MetricRecorder(store, run_id, artifacts_dir=artifacts, since=time.time())
    recorder.feed("step 1 loss=0.5")
    recorder.finish()
    assert store.metric_series(run_id) == {"loss": [(1, 0.5)]}  # the log's metrics stay
    [missing] = [n for n in store.get(run_id).notices if n["code"] == "tensorboard-missing"]
    assert "pip install 'envbuilder[tensorboard]'" in missing["message"]


def test_unseen_lines_use_the_prefix_channel_when_the_output_has_it():
    seen = [f'{METRIC_PREFIX} {{"step": 1, "loss": 1.0}}', "loss=7"]
    points = lines_to_points(seen, [f'{METRIC_PREFIX} {{"loss": 0.5}}', "loss=8"])
    assert [(p.step, p.name, p.value) for p in points] == [(1, "loss", 0.5)]


# --- through the executor, with the fake engine ------------------------------------------------------------


def _spec(tmp_path, command, **options):
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    return run_spec("img", project, command=command, options=RunOptions(artifacts_dir=tmp_path / "art", **options),
                    has_nvidia=lambda: False)


def test_the_executor_tells_the_job_where_to_write_metrics_and_reads_the_prefix(tmp_path, store):
    engine = FakeEngine()
    engine.script(["epoch 1 loss=0.9", f'{METRIC_PREFIX} {{"step": 5, "val/acc": 0.8, "loss": 0.7}}',
                   "epoch 2 loss=0.1"])
    spec = _spec(tmp_path, ["python", "t.py"])
    assert spec.env["ENVBUILDER_METRICS"] == "/artifacts/.envbuilder/metrics.jsonl"
    result = execute_run(spec, docker=engine, store=store)
    assert (tmp_path / "art" / ".envbuilder").is_dir()  # made for the job, which only opens the file
    assert result.metrics == {"val/acc": 0.8, "loss": 0.7}
    assert store.metric_series(result.run_id) == {"loss": [(5, 0.7)], "val/acc": [(5, 0.8)]}


def test_a_nan_loss_is_flagged_on_the_run(tmp_path, store):
    engine = FakeEngine()
    engine.script(["step 1 loss=0.5", "step 2 loss=nan", "step 3 loss=inf"])
    result = execute_run(_spec(tmp_path, ["python", "t.py"]), docker=engine, store=store)
    assert result.status == "completed"  # flagged, not failed: the user did not ask to stop
    assert result.notices[0] == {"code": "nonfinite-loss", "message": "loss was nan at step 2"}
    assert store.get(result.run_id).notices[0]["code"] == "nonfinite-loss"
    assert not [c for c in engine.calls if c[0] == "stop"]
    assert json.loads(json.dumps(result.to_json()))["metrics"] == {"loss": "inf"}  # valid JSON


def test_stop_on_nan_stops_the_job_and_says_why(tmp_path, store):
    engine = FakeEngine()
    engine.script(["step 1 loss=0.5", "step 2 loss=nan", "step 3 loss=0.4"])
    result = execute_run(_spec(tmp_path, ["python", "t.py"], stop_on_nan=True), docker=engine, store=store)
    deadline = time.monotonic() + 5
    while not [c for c in engine.calls if c[0] == "stop"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [c[2] for c in engine.calls if c[0] == "stop"] == [10.0]  # SIGTERM with the grace period, as Ctrl-C
    assert result.status == "stopped"
    assert result.message.startswith("stopped by --stop-on-nan: loss was nan at step 2")
    assert store.get(result.run_id).error.startswith("stopped by --stop-on-nan")

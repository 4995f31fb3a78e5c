"""`envbuilder runs plot` and envbuilder.run.plot: panels by what the names say, a labelled x axis, no empty PNGs."""

from __future__ import annotations

import math

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.run.record import MetricPoint
from envbuilder.run.plot import metrics_figure, panels_of, plot_run
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def store(cli, tmp_path):
    return RunStore.from_settings(Settings.from_env(tmp_path / "envbuilder-home"))


def test_panels_group_names_as_written():
    series = {"train/loss": [(1, 1.0)], "val/loss": [(1, 1.2)], "Loss": [(1, 0.9)], "val/acc": [(1, 0.5)],
              "lr-AdamW": [(1, 1e-3)], "epoch": [(1, 0.0)], "grad_norm": [(1, 2.0)]}
    assert panels_of(series) == [("loss", ["Loss", "train/loss", "val/loss"], False), ("accuracy", ["val/acc"], False),
                                 ("learning rate", ["lr-AdamW"], True)]


@pytest.mark.parametrize(("axis", "label"), [("step", "step"), ("epoch", "epoch"), ("report", "report #")])
def test_the_x_axis_says_what_it_counts(axis, label):
    series = {"loss": [(1, 1.0), (2, 0.5)], "lr": [(1, 1e-3), (2, 1e-4)]}
    figure = metrics_figure(series, panels_of(series), "t", axis)
    bottom = figure.axes[-1]
    assert bottom.get_xlabel().startswith(label)
    assert figure.axes[0].get_xlabel() == ""  # one label, under the bottom panel


@pytest.mark.parametrize(("series", "said"), [
    ({}, "recorded no metrics"),
    ({"loss": [(1, math.nan), (2, math.inf)]}, "no finite metric values"),
    ({"epoch": [(1, 1.0)]}, "no finite metric values"),
])
def test_nothing_to_draw_is_an_error_and_no_file(tmp_path, series, said):
    out = tmp_path / "m.png"
    with pytest.raises(EnvbuilderError) as err:
        plot_run(series, out, "title", subject="run r-1")
    assert err.value.code == "no-metrics" and said in str(err.value) and "run r-1" in str(err.value)
    assert not out.exists()


def test_runs_plot_labels_the_epoch_axis(cli, store, tmp_path):
    record = store.start_run("cifar", ["python", "train.py"], job="train")
    store.add_metrics(record.id, [MetricPoint(e, name, v, 0.0, "epoch") for e in range(1, 6)
                                  for name, v in (("train/loss", 1 / e), ("val/acc", 1 - 1 / (e + 1)))])
    store.finish_run(record.id, "completed", 0)
    out = tmp_path / "plot.png"
    result = cli("runs", "plot", record.id[:12], "-o", str(out))
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert store.metric_axis(record.id) == "epoch"
    shown = cli("runs", "show", record.id)
    assert "train/loss: 0.2 (epoch 5, 5 points)" in shown.stdout


def test_runs_plot_without_metrics_says_so_and_writes_nothing(cli, store, tmp_path):
    record = store.start_run("cifar", ["python", "train.py"], job="train")
    store.finish_run(record.id, "completed", 0)
    out = tmp_path / "plot.png"
    result = cli("runs", "plot", record.id, "-o", str(out))
    assert result.exit_code == 1
    assert f"nothing to plot: run {record.id} recorded no metrics" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
    assert not out.exists()
    assert not list((tmp_path / "envbuilder-home").rglob("*.png"))  # nor the default PNG in the run's folder

"""Metric parsing: single lines of every common shape, and captured trainer logs (tests/data/logs)."""

from __future__ import annotations

import math

import pytest

from envbuilder.run.metrics import MetricPoint, MetricTracker, canonical_name, parse_metrics

LINES = [
    ("loss=0.5", {"loss": 0.5}),
    ("loss: 5e-4", {"loss": 5e-4}),
    ("LOSS: 1.5E+2", {"loss": 150.0}),
    ("Epoch 3/10", {"epoch": 3.0}),
    ("epoch 3", {"epoch": 3.0}),
    ("step 120", {"step": 120.0}),
    ("iter 120: train loss 1.23", {"step": 120.0, "loss": 1.23}),
    ("step 250: train loss 1.0, val loss 1.1", {"step": 250.0, "loss": 1.0, "val_loss": 1.1}),
    ('{"step": 10, "loss": 0.3}', {"step": 10.0, "loss": 0.3}),
    ("val_loss 0.2", {"val_loss": 0.2}),
    ("val_loss=0.2 val_acc=0.9", {"val_loss": 0.2, "val_accuracy": 0.9}),
    ("lr: 0.001 learning_rate=2e-5", {"lr": 2e-5}),
    ("acc: 0.91", {"accuracy": 0.91}),
    ("Accuracy: 91.5%", {"accuracy": 91.5}),
    ("train_loss=0.5", {"loss": 0.5}),
    ("{'loss': 0.4, 'learning_rate': 5e-05, 'epoch': 1.0}", {"loss": 0.4, "lr": 5e-05, "epoch": 1.0}),
    ("{'eval_loss': 0.3, 'grad_norm': nan, 'epoch': 2.0}", {"val_loss": 0.3, "grad_norm": math.nan, "epoch": 2.0}),
    ("loss=nan lr=inf", {"loss": math.nan, "lr": math.inf}),
    ("loss: -inf", {"loss": -math.inf}),
    (" 50%|#####     | 2/4 [00:00<00:00,  9.80it/s, loss=0.123]", {"loss": 0.123}),
    ("Epoch [2/10], Step [100/600], Loss: 0.2", {"epoch": 2.0, "step": 100.0, "loss": 0.2}),
    ("Test set: Average loss: 0.0481, Accuracy: 9842/10000 (98%)", {"test_loss": 0.0481}),
    ('{"train/loss": 1, "val/loss": 2, "metrics": {"acc": 0.5}}', {"loss": 1.0, "val_loss": 2.0, "accuracy": 0.5}),
    ("  Num examples = 2,000", {}),
    ("number of parameters: 10.65M", {}),
    ("12:00:01 time: 12:00:01", {}),
    ("loading checkpoint from ckpt_30.pt", {}),
    ("{'a': (1, 2" + ")" * 5, {}),
    ("", {}),
]


def _same(actual: dict[str, float], expected: dict[str, float]) -> bool:
    if actual.keys() != expected.keys():
        return False
    return all(math.isnan(v) if math.isnan(expected[k]) else v == pytest.approx(expected[k]) for k, v in actual.items())


@pytest.mark.parametrize(("line", "expected"), LINES, ids=[line[:40] or "empty" for line, _ in LINES])
def test_parse_metrics(line, expected):
    assert _same(parse_metrics(line), expected), parse_metrics(line)


@pytest.mark.parametrize(("raw", "canonical"), [
    ("train_loss", "loss"), ("eval_loss", "val_loss"), ("valid/loss", "val_loss"), ("Learning Rate", "lr"),
    ("val_acc", "val_accuracy"), ("iter", "step"), ("global_step", "step"), ("test_acc", "test_accuracy"),
    ("'loss'", "loss"), ("train/loss", "loss"),
])
def test_canonical_name(raw, canonical):
    assert canonical_name(raw) == canonical


def test_extra_patterns_named_groups_and_value_group():
    line = "ppl=3.5 | bleu 22.1 | rouge-l 40%"
    extra = [r"rouge-l (?P<rouge_l>[\d.]+)%", ("bleu", r"bleu (?P<value>[\d.]+)")]
    values = parse_metrics(line, extra)
    assert values["rouge_l"] == 40.0 and values["bleu"] == 22.1 and values["ppl"] == 3.5


def test_literal_eval_is_not_code_execution():
    assert parse_metrics("{'loss': __import__('os').system('echo hi')}") == {}


# name -> (points, first (step, value), last (step, value)) after feeding the whole captured log.
LOGS = {
    "hf_trainer.log": {
        "loss": (4, (1, 0.6931), (6, 0.5052)),
        "lr": (3, (1, 4.9e-05), (4, 1.9e-05)),
        "val_loss": (2, (3, 0.4821), (5, 0.4102)),
        "val_accuracy": (2, (3, 0.812), (5, 0.845)),
    },
    "lightning.log": {
        "loss": (6, (0, 0.812), (1, 0.401)),
        "val_loss": (4, (0, 0.702), (1, 0.498)),
        "val_accuracy": (4, (0, 0.611), (1, 0.802)),
    },
    "nanogpt.log": {
        "loss": (6, (0, 4.2874), (250, 2.0405)),
        "val_loss": (2, (0, 4.2823), (250, 2.074)),
    },
    "epoch_loop.log": {
        "loss": (5, (1, 2.305134), (3, 0.051)),
        "test_loss": (2, (1, 0.0481), (2, 0.0335)),
        "val_loss": (1, (3, 0.031), (3, 0.031)),
        "lr": (1, (3, 0.001), (3, 0.001)),
    },
    "jsonl.log": {
        "loss": (4, (10, 0.9), (40, 0.5)),
        "lr": (4, (10, 0.001), (40, 0.00025)),
        "val_loss": (1, (20, 0.8), (20, 0.8)),
    },
    "tqdm.log": {
        "loss": (4, (1, 1.25), (2, 0.655)),
        "lr": (4, (1, 0.001), (2, 0.0005)),
    },
}
NOISE = {"examples", "parameters", "be", "using", "tensors", "vocab_size", "max_epochs", "v_num", "device"}


@pytest.mark.parametrize("log", sorted(LOGS))
def test_captured_logs(data_dir, log):
    tracker = MetricTracker(clock=lambda: 7.0)
    text = (data_dir / "logs" / log).read_text(encoding="utf-8")
    points = tracker.feed_lines(text.split("\n"))
    series: dict[str, list[tuple[int, float]]] = {}
    for point in points:
        assert isinstance(point, MetricPoint) and point.t == 7.0
        series.setdefault(point.name, []).append((point.step, point.value))
    assert not NOISE & series.keys(), sorted(series)
    for name, (count, first, last) in LOGS[log].items():
        assert len(series[name]) == count, (name, series[name])
        assert series[name][0] == (first[0], pytest.approx(first[1]))
        assert series[name][-1] == (last[0], pytest.approx(last[1]))


def test_tracker_step_rules():
    tracker = MetricTracker(clock=lambda: 0.0)
    assert [p.step for p in tracker.feed("loss=1.0")] == [1]  # nothing said: a running count
    assert [p.step for p in tracker.feed("loss=0.9")] == [2]
    assert tracker.feed("Epoch 5/10") == []  # no metric on the line, but the epoch is remembered
    assert [p.step for p in tracker.feed("loss=0.8")] == [5]
    assert [p.step for p in tracker.feed("step 40 loss=0.7")] == [40]
    assert [p.step for p in tracker.feed("val_loss=0.75")] == [40]  # the last step printed
    assert tracker.step == 40


def test_tracker_fractional_epochs_fall_back_to_a_count():
    tracker = MetricTracker(clock=lambda: 0.0)
    steps = [tracker.feed(line)[0].step for line in ("{'loss': 1, 'epoch': 0.5}", "{'loss': 1, 'epoch': 1.0}",
                                                      "{'loss': 1, 'epoch': 1.5}")]
    assert steps == [1, 2, 3]

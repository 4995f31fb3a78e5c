"""The log-line heuristics (envbuilder.run.metrics): what they take, what they refuse, and captured trainer logs.

Every line below is written in the shape the named tool prints (tests/data/logs, tests/data/metrics hold whole logs).
"""

from __future__ import annotations

import math

import pytest

from envbuilder.run.metrics import (
    MetricPoint,
    MetricTracker,
    is_measured,
    is_nonfinite_loss,
    parse_metrics,
)

# (where the shape comes from, line, what must be recorded: names as written)
TAKEN = [
    ("postfix", "loss=0.5", {"loss": 0.5}),
    ("custom print", "loss: 5e-4", {"loss": 5e-4}),
    ("custom print", "LOSS: 1.5E+2", {"LOSS": 150.0}),
    ("custom print", "Epoch 3/10", {"epoch": 3.0}),
    ("custom print", "step 120", {"step": 120.0}),
    ("nanoGPT", "iter 120: loss 1.2300, time 16.52ms, mfu 22.55%", {"step": 120.0, "loss": 1.23}),
    ("nanoGPT", "step 250: train loss 1.0, val loss 1.1", {"step": 250.0, "train_loss": 1.0, "val_loss": 1.1}),
    ("JSON line", '{"step": 10, "loss": 0.3}', {"step": 10.0, "loss": 0.3}),
    ("custom print", "val_loss=0.2 val_acc=0.9", {"val_loss": 0.2, "val_acc": 0.9}),
    ("Lightning", "Epoch 1: 100%|██████████| 50/50 [00:01<00:00, 40.2it/s, v_num=0, val/acc=0.704, train/loss=0.611]",
     {"epoch": 1.0, "val/acc": 0.704, "train/loss": 0.611}),
    ("Lightning", "Epoch 0:  50%|█████     | 25/50 [00:00<00:00, 41.0it/s, v_num=3, train_loss_step=0.9, lr-AdamW=0.001]",
     {"epoch": 0.0, "train_loss_step": 0.9, "lr-AdamW": 0.001}),
    ("custom print", "Accuracy: 91.5%", {"Accuracy": 91.5}),
    ("HF Trainer", "{'loss': 0.4, 'grad_norm': 1.2, 'learning_rate': 5e-05, 'epoch': 1.0}",
     {"loss": 0.4, "grad_norm": 1.2, "learning_rate": 5e-05, "epoch": 1.0}),
    ("HF Trainer", "{'eval_loss': 0.3, 'eval_runtime': 3.2, 'eval_samples_per_second': 155.8, 'epoch': 2.0}",
     {"eval_loss": 0.3, "eval_runtime": 3.2, "eval_samples_per_second": 155.8, "epoch": 2.0}),
    ("HF Trainer", "{'loss': nan, 'grad_norm': inf, 'epoch': 2.0}", {"loss": math.nan, "grad_norm": math.inf, "epoch": 2.0}),
    ("postfix", "loss=nan lr=inf", {"loss": math.nan, "lr": math.inf}),
    ("custom print", "loss: -inf", {"loss": -math.inf}),
    ("tqdm", " 50%|#####     | 2/4 [00:00<00:00,  9.80it/s, loss=0.123]", {"loss": 0.123}),
    ("PyTorch tutorial", "Epoch [2/10], Step [100/600], Loss: 0.2", {"epoch": 2.0, "step": 100.0, "Loss": 0.2}),
    ("PyTorch MNIST example", "Test set: Average loss: 0.0481, Accuracy: 9842/10000 (98%)", {"test_loss": 0.0481}),
    ("nested JSON", '{"train/loss": 1, "val/loss": 2, "metrics": {"acc": 0.5}}', {"train/loss": 1.0, "val/loss": 2.0, "acc": 0.5}),
    ("tinynet", "epoch 3/10 loss=0.0512 val_loss=0.0431 acc=0.9810 lr=0.001",
     {"epoch": 3.0, "loss": 0.0512, "val_loss": 0.0431, "acc": 0.981, "lr": 0.001}),
    ("SIGTERM handler", "SIGTERM: stopped at epoch 3/10 step=300; checkpoint saved to /artifacts/ckpt.pt",
     {"epoch": 3.0, "step": 300.0}),
    ("custom print", "rank=0 loss=0.5", {"loss": 0.5}),  # the rank is dropped, the loss kept
]

# (what it is, line): nothing on these lines is a measurement.
REFUSED = [
    ("argument echo", "Namespace(batch_size=32, epochs=10, lr=0.001, seed=42, resume=None)"),
    ("argument echo", "args: TrainConfig(lr=0.1, loss_weight=0.5, max_steps=1000)"),
    ("command line echo", "running: python train.py --lr=0.001 --batch_size=32 --seed=42"),
    ("Hydra overrides", "overrides: trainer.max_epochs=10 model.lr=0.001 data.batch_size=64"),
    ("config print", "batch_size=32 seed=42"),
    ("torch.distributed", "world_size=8 rank=0 local_rank=0"),
    ("Lightning DDP", "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/8"),
    ("`id` output", "uid=0(root) gid=0(root) groups=0(root)"),
    ("Lightning checkpoint", "Saving checkpoints/epoch=3-step=300.ckpt"),
    ("checkpoint path", "saved /artifacts/ckpt/epoch=2-step=200-val_loss=0.25.ckpt"),
    ("checkpoint path", "best model: runs/exp1/loss=0.31/model.pt"),
    ("config dict", "{'batch_size': 32, 'lr': 0.001, 'seed': 42, 'loss': 'cross_entropy'}"),
    ("nested config dict", "{'trainer': {'max_epochs': 10}, 'loss': {'name': 'ce', 'weight': 0.5}}"),
    ("lr alone", "lr: 0.001"),
    ("HF banner", "  Num examples = 2,000"),
    ("nanoGPT banner", "number of parameters: 10.65M"),
    ("clock", "12:00:01 time: 12:00:01"),
    ("file name", "loading checkpoint from ckpt_30.pt"),
    ("Lightning summary", "`Trainer.fit` stopped: `max_epochs=2` reached."),
    ("broken dict", "{'a': (1, 2" + ")" * 5),
    ("empty", ""),
]


def _same(actual: dict[str, float], expected: dict[str, float]) -> bool:
    if actual.keys() != expected.keys():
        return False
    return all(math.isnan(v) if math.isnan(expected[k]) else v == pytest.approx(expected[k]) for k, v in actual.items())


@pytest.mark.parametrize(("line", "expected"), [case[1:] for case in TAKEN], ids=[f"{s}: {ln[:30]}" for s, ln, _ in TAKEN])
def test_measurements_are_taken_with_their_names_as_written(line, expected):
    assert _same(parse_metrics(line), expected), parse_metrics(line)


@pytest.mark.parametrize("line", [line for _, line in REFUSED], ids=[f"{what}: {line[:30]}" for what, line in REFUSED])
def test_settings_paths_and_echoes_are_not_metrics(line):
    assert parse_metrics(line) == {}


@pytest.mark.parametrize(("name", "measured"), [
    ("loss", True), ("val/acc", True), ("eval_f1", True), ("train_loss_step", True), ("rouge-L", True),
    ("loss_weight", False), ("max_lr", False), ("batch_size", False), ("seed", False), ("num_steps", False),
    ("rank", False), ("uid", False), ("lr", False),
])
def test_is_measured(name, measured):
    assert is_measured(name) is measured


def test_nonfinite_losses_are_told_apart_from_other_values():
    assert is_nonfinite_loss("val/loss", math.nan) and is_nonfinite_loss("Loss", -math.inf)
    assert not is_nonfinite_loss("loss", 0.5) and not is_nonfinite_loss("grad_norm", math.inf)
    assert not is_nonfinite_loss("loss_scale", math.inf)  # AMP's scaler: a setting, and inf is its normal start


def test_extra_patterns_named_groups_and_value_group():
    line = "ppl=3.5 | bleu 22.1 | rouge-l 40%"
    extra = [r"rouge-l (?P<rouge_l>[\d.]+)%", ("bleu", r"bleu (?P<value>[\d.]+)")]
    values = parse_metrics(line, extra)
    assert values["rouge_l"] == 40.0 and values["bleu"] == 22.1 and values["ppl"] == 3.5


def test_literal_eval_is_not_code_execution():
    assert parse_metrics("{'loss': __import__('os').system('echo hi')}") == {}


# name -> (points, first (step, value), last (step, value)) after feeding the whole captured log.
LOGS = {
    "logs/hf_trainer.log": {
        "loss": (3, (1, 0.6931), (4, 0.3712)),
        "learning_rate": (3, (1, 4.9e-05), (4, 1.9e-05)),
        "eval_loss": (2, (3, 0.4821), (5, 0.4102)),
        "eval_accuracy": (2, (3, 0.812), (5, 0.845)),
        "train_loss": (1, (6, 0.5052), (6, 0.5052)),
    },
    "logs/lightning.log": {
        "train_loss": (6, (0, 0.812), (1, 0.401)),
        "val_loss": (4, (0, 0.702), (1, 0.498)),
        "val_acc": (4, (0, 0.611), (1, 0.802)),
    },
    "logs/nanogpt.log": {
        "loss": (4, (0, 4.2655), (250, 2.0405)),
        "train_loss": (2, (0, 4.2874), (250, 1.9731)),
        "val_loss": (2, (0, 4.2823), (250, 2.074)),
    },
    "logs/epoch_loop.log": {
        "Loss": (4, (1, 2.305134), (2, 0.061245)),
        "test_loss": (2, (1, 0.0481), (2, 0.0335)),
        "val_loss": (1, (3, 0.031), (3, 0.031)),
        "lr": (1, (3, 0.001), (3, 0.001)),
    },
    "logs/jsonl.log": {
        "loss": (3, (10, 0.9), (30, math.nan)),
        "val/loss": (1, (20, 0.8), (20, 0.8)),
        "train/loss": (1, (40, 0.5), (40, 0.5)),
        "lr": (3, (10, 0.001), (30, 0.0005)),
        "learning_rate": (1, (40, 0.00025), (40, 0.00025)),
    },
    "logs/tqdm.log": {
        "loss": (4, (1, 1.25), (2, 0.655)),
        "lr": (4, (1, 0.001), (2, 0.0005)),
    },
    # A Hydra config dump, distributed set-up, `id`, an argparse echo and a TrainingArguments block, then
    # Lightning with checkpoint file names that carry epoch=, step= and val_loss=.
    "metrics/hydra_run.log": {
        "train/loss": (3, (0, 0.912), (100, 0.433)),
        "val/acc": (3, (0, 0.512), (100, 0.811)),
    },
}
NOISE = {"examples", "parameters", "be", "using", "tensors", "vocab_size", "max_epochs", "v_num", "device", "seed",
         "batch_size", "world_size", "rank", "local_rank", "uid", "gid", "lr", "learning_rate", "weight_decay",
         "label_smoothing", "logging_steps", "num_train_epochs", "_n_gpu", "val_loss"}


@pytest.mark.parametrize("log", sorted(LOGS))
def test_captured_logs(data_dir, log):
    tracker = MetricTracker(clock=lambda: 7.0)
    text = (data_dir / log).read_text(encoding="utf-8")
    points = tracker.feed_lines(text.split("\n"))
    series: dict[str, list[tuple[int, float]]] = {}
    for point in points:
        assert isinstance(point, MetricPoint) and point.t == 7.0
        series.setdefault(point.name, []).append((point.step, point.value))
    assert not (NOISE - LOGS[log].keys()) & series.keys(), sorted(series)
    for name, (count, first, last) in LOGS[log].items():
        assert len(series[name]) == count, (name, series[name])
        assert series[name][0] == (first[0], pytest.approx(first[1]))
        if math.isnan(last[1]):
            assert series[name][-1][0] == last[0] and math.isnan(series[name][-1][1])
        else:
            assert series[name][-1] == (last[0], pytest.approx(last[1]))


def test_a_yaml_dump_keeps_its_settings_out_but_its_end_is_seen():
    tracker = MetricTracker(clock=lambda: 0.0)
    lines = ["trainer:", "  max_epochs: 10", "  lr: 0.001", "epoch: 4", "seed: 42", "step 5 loss=0.5"]
    assert [(p.step, p.name, p.axis) for p in tracker.feed_lines(lines)] == [(5, "loss", "step")]


def test_tracker_step_rules_and_axis():
    tracker = MetricTracker(clock=lambda: 0.0)
    assert [(p.step, p.axis) for p in tracker.feed("loss=1.0")] == [(1, "report")]  # nothing said: a running count
    assert [p.step for p in tracker.feed("loss=0.9")] == [2]
    assert tracker.feed("Epoch 5/10") == []  # no metric on the line, but the epoch is remembered
    assert [(p.step, p.axis) for p in tracker.feed("loss=0.8")] == [(5, "epoch")]
    assert [(p.step, p.axis) for p in tracker.feed("step 40 loss=0.7")] == [(40, "step")]
    assert [p.step for p in tracker.feed("val_loss=0.75")] == [40]  # the last step printed
    assert tracker.step == 40


def test_tracker_fractional_epochs_fall_back_to_a_count():
    tracker = MetricTracker(clock=lambda: 0.0)
    steps = [tracker.feed(line)[0].step for line in ("{'loss': 1, 'epoch': 0.5}", "{'loss': 1, 'epoch': 1.0}",
                                                      "{'loss': 1, 'epoch': 1.5}")]
    assert steps == [1, 2, 3]


def test_an_argument_block_is_skipped_to_its_closing_line():
    tracker = MetricTracker(clock=lambda: 0.0)
    lines = ["TrainingArguments(", "learning_rate=5e-05,", "eval_steps=500,", "metric_for_best_model=loss,", ")",
             "{'loss': 0.7, 'epoch': 1.0}"]
    assert [(p.name, p.value) for p in tracker.feed_lines(lines)] == [("loss", 0.7), ("epoch", 1.0)]

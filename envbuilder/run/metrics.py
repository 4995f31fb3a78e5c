"""Metrics from training log lines, the fallback when a job uses neither explicit channel (run.metric_channels).

Owns the line heuristics (parse_metrics) and MetricTracker, which turns a line stream into points
(envbuilder.run.record.MetricPoint, what the store keeps)
and decides their x axis (step, epoch, or a running count of reports). What the heuristics take:
- `name=value` / `name: value` pairs (tqdm and Lightning postfixes, custom prints), words followed by numbers
  (`Epoch 3/10`, `iter 120: train loss 1.23`), and flat JSON / Python dict printouts (Hugging Face Trainer);
- only names that say they are a measurement (loss, accuracy, f1, perplexity...; the list is _MEASURED), the
  learning rate when something measured or a step/epoch is on the same line, and step/epoch themselves.
What they refuse, because it is configuration and not a measurement: argument echoes (`Namespace(lr=0.1)`,
`TrainingArguments(` blocks, `--lr=0.1`), config dumps (YAML blocks from Hydra/OmegaConf, config dicts with no
measured value), identity and layout numbers (`rank=0`, `world_size=8`, `uid=0(root)`, `seed`, `batch_size`),
and anything glued into a path or file name (`epoch=3-step=300.ckpt`).
Names are kept as written (`val/acc` stays `val/acc`); only prose names are joined with `_` ("train loss" ->
`train_loss`), and the words for the x axis (step, iter, global_step, epoch, in any case) become `step`/`epoch`.

Pure: no I/O, no clock unless the tracker is given one. Imports only the record's values (run.record): the run
store loads those on every run, and these parsers' regexes only once a job's output is read.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from envbuilder.run.record import MetricPoint

# A pattern whose named groups are metrics, or (name, pattern) whose group `value` is that metric.
ExtraPattern = Union[str, "re.Pattern[str]", tuple[str, Union[str, "re.Pattern[str]"]]]

# What a point's step counts. "report": the log printed neither step nor whole epochs, so points are numbered.
AXES = ("step", "epoch", "report")

# The patterns are strings that re compiles (and caches) at their first use: compiling them when this module
# loads cost every run ~3 ms, before its job had printed anything.
# Digits may carry a unit (12.3ms, 95%); nan/inf must be whole words. The lookaheads stop backtracking
# from splitting one number in two (12:00:01 is a clock, not time=12; 2,000 is not 2).
_NUMBER = (r"[-+]?(?:(?:(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\d)(?!\.\d)(?!,\d{3}\b))"
           r"|(?:nan|inf(?:inity)?)(?![A-Za-z_]))")
# A value ends the token: `epoch=3-step=300.ckpt` and `uid=0(root)` are a file name and `id` output, not pairs.
_END = r"(?:%|ms|s)?(?=[\s,;|\])}]|$)"
_WORD_METRIC = (
    r"(?i)(?<![\w./\-])(?P<name>(?:(?:train|training|val|valid|validation|eval|test)[ _])?"
    r"(?:loss|acc|accuracy|lr|learning[ _]rate|perplexity|ppl)"
    r"|global[ _]step|step|iteration|iter|epoch)"
    r"\s*[:=]?\s*[\[(]?\s*(?P<num>" + _NUMBER + r")(?P<frac>\s*/\s*\d+)?(?=[\s,;|\])}:%]|$)"
)
# `name=value` and `name: value`, the name optionally quoted ('loss': 0.4 in a dict that would not parse).
# Not after `-` or `.`: `--lr=0.1` is a command line, `model.lr=0.1` a Hydra override.
_PAIR = (
    r"(?i)(?<![\w./`-])(?P<q>['\"]?)(?P<name>[A-Za-z_][\w./-]*?)(?P=q)(?P<sep>\s*[=:]\s*)(?P<num>" + _NUMBER + r")"
    r"(?P<frac>/\d+)?(?!:\d)" + _END
)
# `Namespace(batch_size=32, lr=0.1)`, `TrainConfig(seed=1)`: a call's keyword arguments are settings.
_CALL = r"\b[A-Za-z_][\w.]*\((?:[^()]|\([^()]*\))*=(?:[^()]|\([^()]*\))*\)"

# Words that make a name a measurement. A name is split on _ . / - and spaces; any token may match.
_MEASURED = frozenset({
    "loss", "acc", "accuracy", "perplexity", "ppl", "f1", "precision", "recall", "auc", "auroc", "bleu", "mae", "mse",
    "rmse", "psnr", "ssim", "iou", "miou", "map", "dice", "wer", "cer", "reward", "return", "score", "error", "err",
    "top1", "top5", "runtime", "throughput", "mfu", "grad_norm", "gradnorm",
})
_SCHEDULE = frozenset({"lr", "learning_rate"})
_AXIS_NAMES = {"step": "step", "global_step": "step", "iter": "step", "iteration": "step", "epoch": "epoch"}
# Tokens that make a name a setting even next to a measured word (loss_weight, max_lr, num_steps).
_SETTING_TOKENS = frozenset({"weight", "coef", "coeff", "scale", "type", "fn", "seed", "max", "min", "num", "warmup",
                             "patience", "factor", "size", "rank", "uid", "gid", "pid", "v_num", "every", "interval"})
# A line that starts by saying what it evaluates ("Test set: Average loss: 0.03") names its metrics: without the
# prefix, the test loss and the training loss would be one series.
_CONTEXT = r"(?i)^\W*(?P<split>test|val|valid|validation|eval|evaluation)\b"
_SPLIT_WORDS = ("train", "training", "val", "valid", "validation", "eval", "test", "dev")
_MAX_LITERAL = 20_000  # longer "dicts" are not metric printouts; literal_eval on them costs too much
_WRAPPERS = frozenset({"metrics", "logs", "scalars", "data"})


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[\s_./\-]+", name.lower()) if t]


def axis_name(name: str) -> str | None:
    """`step` or `epoch` when `name` is a word for the x axis (iter, global_step, Epoch...), else None."""
    return _AXIS_NAMES.get(re.sub(r"[\s\-]+", "_", name.strip().lower()))


def is_measured(name: str) -> bool:
    """Whether `name` says it is a measurement (loss, val/acc, eval_f1...) and not a setting (loss_weight)."""
    tokens = _tokens(name)
    joined = "_".join(tokens)
    if any(t in _SETTING_TOKENS for t in tokens):
        return False
    return (any(t in _MEASURED or t.startswith("rouge") for t in tokens)
            or any(word in joined for word in ("grad_norm", "per_second", "samples_per", "tokens_per")))


def is_schedule(name: str) -> bool:
    """The learning rate, in any spelling (`lr`, `learning_rate`, `Learning Rate`, `lr-Adam`, `lr/group0`)."""
    tokens = _tokens(name)
    return not any(t in _SETTING_TOKENS for t in tokens) and (
        "lr" in tokens or "learning_rate" in "_".join(tokens) or (tokens[:1] == ["lr"]))


def is_nonfinite_loss(name: str, value: float) -> bool:
    """A NaN or infinite value of a loss: what flags a run (and what --stop-on-nan stops)."""
    return not math.isfinite(value) and "loss" in name.lower() and not any(t in _SETTING_TOKENS for t in _tokens(name))


def parse_metrics(line: str, extra_patterns: Iterable[ExtraPattern] = ()) -> dict[str, float]:
    """Every metric in one log line by name as written; `step` and `epoch` are included when present."""
    values = _parse_mapping(line)
    if values is None:
        values = _parse_words(re.sub(_CALL, " ", line))
    values = _keep(values)
    for name, value in _parse_extra(line, extra_patterns).items():
        values[name] = value
    return values


def _keep(values: Mapping[str, float]) -> dict[str, float]:
    """The measured values, the learning rate when the line has something else to place it, and step/epoch."""
    measured = {n: v for n, v in values.items() if n in ("step", "epoch") or is_measured(n)}
    if measured:
        measured.update({n: v for n, v in values.items() if is_schedule(n)})
    return measured


def _to_float(text: str) -> float:
    lowered = text.lower().lstrip("+")
    if lowered.lstrip("-") in ("inf", "infinity"):
        return -math.inf if lowered.startswith("-") else math.inf
    return float(lowered)


def _parse_words(line: str) -> dict[str, float]:
    values: dict[str, float] = {}
    taken: list[tuple[int, int]] = []
    for pattern in (_WORD_METRIC, _PAIR):
        for match in re.finditer(pattern, line):
            start, end = match.span()
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            raw = match.group("name")
            axis = axis_name(raw)
            name = axis or (re.sub(r"\s+", "_", raw.strip()) if pattern is _WORD_METRIC else raw)
            if match.group("frac") and axis is None:
                continue  # "Accuracy: 9890/10000" is a count, not the metric
            try:
                values[name] = _to_float(match.group("num"))
            except ValueError:
                continue
            taken.append((start, end))
    context = re.match(_CONTEXT, line)
    if context:
        split = "test" if context.group("split").lower() == "test" else "val"
        values = {name if name in ("step", "epoch") or _tokens(name)[0] in _SPLIT_WORDS else f"{split}_{name}": value
                  for name, value in values.items()}
    return values


def _parse_mapping(line: str) -> dict[str, float] | None:
    """A JSON object or Python dict printout in the line, flattened; None when the line has none."""
    start, end = line.find("{"), line.rfind("}")
    if start == -1 or end <= start or end - start > _MAX_LITERAL:
        return None
    text = line[start : end + 1]
    try:
        data = json.loads(text)
    except ValueError:
        data = _literal_dict(text)
    if not isinstance(data, dict):
        return None
    return flatten_numbers(data)


_NON_FINITE = r"(?<![\w'\"])(-?)(nan|inf)(?![\w'\"])"


def _literal_dict(text: str) -> Any:
    # repr() of a float nan/inf is a bare name, which literal_eval refuses: quote it, and convert back after.
    import ast  # only dict printouts need it: every run imports this module

    quoted = re.sub(_NON_FINITE, lambda m: f"'__{m.group(1)}{m.group(2)}__'", text)
    try:
        return ast.literal_eval(quoted)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def flatten_numbers(data: Mapping[Any, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a (nested) mapping, nested keys joined with `/` (TensorBoard's convention) except
    under a wrapper key (`metrics`, `logs`...); `step`/`epoch` spellings become `step`/`epoch`."""
    into: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix and prefix.lower() not in _WRAPPERS else str(key)
        if isinstance(value, Mapping):
            into.update(flatten_numbers(value, name))
            continue
        if isinstance(value, str) and re.fullmatch(r"__(-?)(nan|inf)__", value):
            value = _to_float(value.strip("_"))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        into[axis_name(name) or name] = float(value)
    return into


def _parse_extra(line: str, patterns: Iterable[ExtraPattern]) -> dict[str, float]:
    values: dict[str, float] = {}
    for pattern in patterns:
        name: str | None = None
        if isinstance(pattern, tuple):
            name, pattern = pattern
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        match = regex.search(line)
        if not match:
            continue
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        if name is not None:
            groups = {name: groups["value"]} if "value" in groups else {}
        for key, text in groups.items():
            try:
                values[key] = _to_float(text.strip().rstrip("%"))
            except ValueError:
                continue
    return values


# A YAML mapping header (`trainer:`) opens a config dump (OmegaConf.to_yaml, Hydra's printed config); its
# entries and nested headers follow, indented or not, until a line of another shape.
_YAML_HEADER = r"^\s*[A-Za-z_][\w.\-]*:\s*$"
_YAML_ENTRY = r"^\s*(?:-\s+)?[A-Za-z_][\w.\-]*:(?:\s+\S.*)?$|^\s+-\s+\S"
# `TrainingArguments(` alone at the end of a line opens a multi-line argument echo, closed by a line starting `)`.
_CALL_OPEN = r"[A-Za-z_][\w.]*\(\s*$"


@dataclass
class MetricTracker:
    """Turns log lines (or already parsed values, for the explicit channels) into MetricPoints.

    The step of a point is the last step/iter printed (axis `step`); before any, the last whole epoch (axis
    `epoch`, trainers that print once per epoch); once an epoch is fractional (Hugging Face) or when there is
    neither, a running count of reports (axis `report`).
    """

    extra_patterns: tuple[ExtraPattern, ...] = ()
    clock: Callable[[], float] = time.time
    _last_step: int | None = field(default=None, init=False)
    _last_epoch: float | None = field(default=None, init=False)
    _fractional_epochs: bool = field(default=False, init=False)
    _counter: int = field(default=0, init=False)
    _in_yaml: bool = field(default=False, init=False)
    _in_call: bool = field(default=False, init=False)

    def feed(self, line: str, t: float | None = None) -> list[MetricPoint]:
        """Points from one line; progress bars that redraw with carriage returns count each redraw."""
        state = self._line_state(line)
        if state == "argument-echo":
            return []
        points: list[MetricPoint] = []
        for segment in line.split("\r"):
            if segment.strip():
                values = parse_metrics(segment, self.extra_patterns)
                if state == "config-dump":  # `epochs: 10`, `lr: 0.1`: settings; a measured value may still be one
                    values = {n: v for n, v in values.items() if is_measured(n)}
                points.extend(self.feed_values(values, t))
        return points

    def feed_lines(self, lines: Iterable[str]) -> list[MetricPoint]:
        return [point for line in lines for point in self.feed(line)]

    @property
    def step(self) -> int | None:
        return self._last_step

    def _line_state(self, line: str) -> str | None:
        """"argument-echo" or "config-dump" when the line is part of one (state carried across lines), else None."""
        if self._in_call:
            self._in_call = not line.lstrip().startswith(")")
            return "argument-echo"
        if re.search(_CALL_OPEN, line):
            self._in_call = True
            return "argument-echo"
        if re.match(_YAML_HEADER, line):
            self._in_yaml = True
            return "config-dump"
        if self._in_yaml and re.match(_YAML_ENTRY, line):
            return "config-dump"
        self._in_yaml = False
        return None

    def feed_values(self, values: Mapping[str, float], t: float | None = None) -> list[MetricPoint]:
        """Points for one report's values (`step`/`epoch` in them set the x axis, and are not points themselves,
        except `epoch`, kept as a series when it comes with metrics)."""
        if not values:
            return []
        if "epoch" in values and math.isfinite(values["epoch"]):
            epoch = values["epoch"]
            if epoch != int(epoch):
                self._fractional_epochs = True
            self._last_epoch = epoch
        if "step" in values and math.isfinite(values["step"]):
            self._last_step = int(values["step"])
        metrics = {name: value for name, value in values.items() if name != "step"}
        if not metrics or set(metrics) == {"epoch"}:
            return []
        step, axis = self._step_for_line()
        when = self.clock() if t is None else t
        return [MetricPoint(step, name, value, when, axis) for name, value in metrics.items()]

    def _step_for_line(self) -> tuple[int, str]:
        if self._last_step is not None:
            return self._last_step, "step"
        if self._last_epoch is not None and not self._fractional_epochs:
            return int(self._last_epoch), "epoch"
        self._counter += 1
        return self._counter, "report"

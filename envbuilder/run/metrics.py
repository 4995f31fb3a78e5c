"""Metrics from training log lines: pure parsers, and a tracker that turns a line stream into points.

Understands the shapes common trainers print: `loss=0.5` / `loss: 5e-4` pairs (tqdm and Lightning postfixes,
Keras summaries), words followed by numbers (`Epoch 3/10`, `iter 120: train loss 1.23`, `val loss 0.2`),
JSON lines and Python dict printouts (Hugging Face Trainer: `{'loss': 0.4, 'learning_rate': 5e-05}`).
Names are made canonical (train_loss -> loss, eval_loss -> val_loss, learning_rate -> lr, acc -> accuracy,
iter -> step) so one plot works for every trainer.

Pure: no I/O, no clock unless the tracker is given one. Must not import anything of ours but values.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

# A pattern whose named groups are metrics, or (name, pattern) whose group `value` is that metric.
ExtraPattern = Union[str, "re.Pattern[str]", tuple[str, Union[str, "re.Pattern[str]"]]]

# Digits may carry a unit (12.3ms, 95%); nan/inf must be whole words. The lookaheads stop backtracking
# from splitting one number in two (12:00:01 is a clock, not time=12; 2,000 is not 2).
_NUMBER = (r"[-+]?(?:(?:(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?!\d)(?!\.\d)(?!,\d{3}\b))"
           r"|(?:nan|inf(?:inity)?)(?![A-Za-z_]))")

# Words that name a metric even without `=` or `:` after them ("train loss 1.23", "Epoch 3/10", "step 120").
_WORD_METRIC = re.compile(
    r"(?<![\w.])(?P<name>(?:(?:train|training|val|valid|validation|eval|test)[ _])?"
    r"(?:loss|acc|accuracy|lr|learning[ _]rate|perplexity|ppl)"
    r"|global[ _]step|step|iteration|iter|epoch)"
    r"\s*[:=]?\s*[\[(]?\s*(?P<num>" + _NUMBER + r")(?P<frac>\s*/\s*\d+)?",
    re.IGNORECASE,
)
# `name=value` and `name: value`, the name optionally quoted ('loss': 0.4 in a dict that would not parse).
_PAIR = re.compile(
    r"(?<![\w./`-])(?P<q>['\"]?)(?P<name>[A-Za-z_][\w./-]*?)(?P=q)(?P<sep>\s*[=:]\s*)(?P<num>" + _NUMBER + r")"
    r"(?P<frac>/\d+)?(?!:\d)",
    re.IGNORECASE,
)
# Free text is full of "things: numbers" (`number of parameters: 10.65M`, `Num examples = 2,000`), so a pair
# counts only when written like a progress-bar postfix (`name=value`, no spaces) or when its name says metric.
_METRIC_WORD = re.compile(
    r"(?:^|_)(?:loss|accuracy|lr|perplexity|ppl|f1|precision|recall|auc|bleu|rouge\w*|mae|mse|rmse|psnr|ssim|"
    r"iou|miou|map|dice|wer|cer|reward|return|score|error|grad_norm|top1|top5|step|epoch)(?:$|_)"
)
# A line that starts by saying what it evaluates ("Test set: Average loss: 0.03") names its metrics.
_CONTEXT = re.compile(r"^\W*(?P<split>test|val|valid|validation|eval|evaluation)\b", re.IGNORECASE)
_UNPREFIXED = frozenset({"step", "epoch", "lr"})
# Keys progress bars add that are not metrics (Lightning's experiment version number).
_IGNORED = frozenset({"v_num"})
_PREFIXES = (("training_", ""), ("train_", ""), ("validation_", "val_"), ("valid_", "val_"), ("eval_", "val_"),
             ("dev_", "val_"))
_ALIASES = {"learning_rate": "lr", "acc": "accuracy", "iter": "step", "iteration": "step", "global_step": "step",
            "it": "step"}
_STEP_NAMES = frozenset({"step", "epoch"})
_MAX_LITERAL = 20_000  # longer "dicts" are not metric printouts; literal_eval on them costs too much


def canonical_name(raw: str) -> str:
    """The canonical metric name: lowercase, '_' separated, train_ dropped, eval_/valid_ -> val_, aliases applied."""
    name = re.sub(r"[\s/\-.]+", "_", raw.strip().strip("'\"").lower())
    name = re.sub(r"_+", "_", name).strip("_")
    for prefix, replacement in _PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            name = replacement + name[len(prefix):]
            break
    head, sep, base = name.partition("_") if name.startswith(("val_", "test_")) else ("", "", name)
    base = _ALIASES.get(base, base)
    if sep and base == "step":
        return base
    return head + sep + base


def parse_metrics(line: str, extra_patterns: Iterable[ExtraPattern] = ()) -> dict[str, float]:
    """Every metric in one log line, by canonical name; `step` and `epoch` are included when present."""
    values = _parse_mapping(line)
    if values is None:
        values = _parse_words(line)
    for name, value in _parse_extra(line, extra_patterns).items():
        values[name] = value
    return values


def _to_float(text: str) -> float:
    lowered = text.lower().lstrip("+")
    if lowered.lstrip("-") in ("inf", "infinity"):
        return -math.inf if lowered.startswith("-") else math.inf
    return float(lowered)


def _parse_words(line: str) -> dict[str, float]:
    values: dict[str, float] = {}
    taken: list[tuple[int, int]] = []
    for regex in (_WORD_METRIC, _PAIR):
        for match in regex.finditer(line):
            start, end = match.span()
            if any(start < t_end and t_start < end for t_start, t_end in taken):
                continue
            name = canonical_name(match.group("name"))
            if not name or name in _IGNORED or (match.group("frac") and name not in _STEP_NAMES):
                continue  # "Accuracy: 9890/10000" is a count, not the metric
            if regex is _PAIR and match.group("sep") != "=" and not _METRIC_WORD.search(name):
                continue
            try:
                values[name] = _to_float(match.group("num"))
            except ValueError:
                continue
            taken.append((start, end))
    context = _CONTEXT.match(line)
    if context:
        split = "test" if context.group("split").lower() == "test" else "val"
        values = {name if name in _UNPREFIXED or name.startswith(("val_", "test_")) else f"{split}_{name}": value
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
    values: dict[str, float] = {}
    _flatten(data, "", values)
    return values


_NON_FINITE = re.compile(r"(?<![\w'\"])(-?)(nan|inf)(?![\w'\"])")


def _literal_dict(text: str) -> Any:
    # repr() of a float nan/inf is a bare name, which literal_eval refuses: quote it, and convert back after.
    quoted = _NON_FINITE.sub(lambda m: f"'__{m.group(1)}{m.group(2)}__'", text)
    try:
        return ast.literal_eval(quoted)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


_WRAPPERS = frozenset({"metrics", "logs", "scalars", "data"})


def _flatten(data: Mapping[Any, Any], prefix: str, into: dict[str, float]) -> None:
    for key, value in data.items():
        name = f"{prefix}/{key}" if prefix and prefix.lower() not in _WRAPPERS else str(key)
        if isinstance(value, Mapping):
            _flatten(value, name, into)
            continue
        if isinstance(value, str) and re.fullmatch(r"__(-?)(nan|inf)__", value):
            value = _to_float(value.strip("_"))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        canonical = canonical_name(name)
        if canonical and canonical not in _IGNORED:
            into[canonical] = float(value)


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


@dataclass(frozen=True)
class MetricPoint:
    """One value of one metric at a training step, at wall-clock time t (seconds since the epoch)."""

    step: int
    name: str
    value: float
    t: float


@dataclass
class MetricTracker:
    """Turns log lines into MetricPoints.

    The step of a point is the last step/iter the log printed; before any, the last whole epoch (trainers
    that print once per epoch); once an epoch is fractional (Hugging Face) or when there is neither, a
    running count of metric lines.
    """

    extra_patterns: tuple[ExtraPattern, ...] = ()
    clock: Callable[[], float] = time.time
    _last_step: int | None = field(default=None, init=False)
    _last_epoch: float | None = field(default=None, init=False)
    _fractional_epochs: bool = field(default=False, init=False)
    _counter: int = field(default=0, init=False)

    def feed(self, line: str, t: float | None = None) -> list[MetricPoint]:
        """Points from one line; progress bars that redraw with carriage returns count each redraw."""
        points: list[MetricPoint] = []
        for segment in line.split("\r"):
            if segment.strip():
                points.extend(self._feed_segment(segment, t))
        return points

    def feed_lines(self, lines: Iterable[str]) -> list[MetricPoint]:
        return [point for line in lines for point in self.feed(line)]

    @property
    def step(self) -> int | None:
        return self._last_step

    def _feed_segment(self, line: str, t: float | None) -> list[MetricPoint]:
        values = parse_metrics(line, self.extra_patterns)
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
        step = self._step_for_line()
        when = self.clock() if t is None else t
        return [MetricPoint(step, name, value, when) for name, value in metrics.items()]

    def _step_for_line(self) -> int:
        if self._last_step is not None:
            return self._last_step
        if self._last_epoch is not None and not self._fractional_epochs:
            return int(self._last_epoch)
        self._counter += 1
        return self._counter

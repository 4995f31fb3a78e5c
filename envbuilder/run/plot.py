"""A PNG of a run's metric series: losses, accuracies, and the learning rate on a log scale, over a labelled x axis.

Names are the run's own (`val/acc`, `train_loss`, `Loss`): panels group them by what they say they are, in any
case or separator. The x axis says what the steps count (step, epoch, or the n-th report when the job printed
neither). A run with nothing finite to draw is an error (`no-metrics`), never an empty picture.
matplotlib is optional (the `plot` extra) and imported only when a plot is drawn. It is used through its object
API with the Agg canvas, never pyplot, so drawing does not switch the backend of a host application that embeds
envbuilder. Must not import docker.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from envbuilder.errors import EnvbuilderError

Series = Mapping[str, Sequence[tuple[float, float]]]

_MAX_OTHER = 6
X_LABELS = {"step": "step", "epoch": "epoch", "report": "report # (the log printed no step or epoch)"}


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[\s_./\-]+", name.lower()) if w]


def _is_loss(name: str) -> bool:
    return any("loss" in w for w in _words(name))


def _is_accuracy(name: str) -> bool:
    return any(w in ("acc", "accuracy", "top1", "top5") for w in _words(name))


def _is_rate(name: str) -> bool:
    words = _words(name)
    return "lr" in words or "learning_rate" in "_".join(words)


def _loss_order(name: str) -> tuple:
    # the training loss first, then validation, then the rest, each group by name
    words = _words(name)
    split = 1 if any(w in ("val", "valid", "validation", "eval", "dev") for w in words) else \
        2 if "test" in words else 0
    return (split, name.lower())


def panels_of(series: Series) -> list[tuple[str, list[str], bool]]:
    """(y label, series names, log scale) for each panel that has something to show."""
    names = [name for name, points in series.items() if _finite(points) and name not in ("step", "epoch")]
    losses = sorted((n for n in names if _is_loss(n)), key=_loss_order)
    accuracies = sorted((n for n in names if _is_accuracy(n) and n not in losses), key=_loss_order)
    rates = sorted(n for n in names if _is_rate(n) and n not in losses and n not in accuracies)
    panels: list[tuple[str, list[str], bool]] = []
    if losses:
        panels.append(("loss", losses, False))
    if accuracies:
        panels.append(("accuracy", accuracies, False))
    if rates:
        positive = all(v > 0 for n in rates for _, v in _finite(series[n]))
        panels.append(("learning rate", rates, positive))
    if not panels:
        others = sorted(names)[:_MAX_OTHER]
        if others:
            panels.append(("value", others, False))
    return panels


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(s, v) for s, v in points if v is not None and math.isfinite(v)]


def plot_run(series: Series, out_png: Path, title: str = "", axis: str = "step", subject: str = "the run") -> Path:
    """Draw `series` (name -> [(step, value)]) into `out_png`, the x axis labelled for `axis` (step, epoch or
    report). Returns the path. Raises `no-metrics` (naming `subject`) when nothing finite is there to draw: no
    file is written."""
    panels = panels_of(series)
    if not panels:
        said = "recorded no metrics" if not any(series.values()) else "has no finite metric values (all NaN or inf)"
        raise EnvbuilderError("no-metrics", f"nothing to plot: {subject} {said}",
                              "print metrics as `loss=0.5` lines, write them to $ENVBUILDER_METRICS, or log them to "
                              "TensorBoard under /artifacts (docs/running.md, Metrics)")
    figure = metrics_figure(series, panels, title, axis)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png


def metrics_figure(series: Series, panels: list[tuple[str, list[str], bool]], title: str, axis: str):
    """The matplotlib Figure (on an Agg canvas) of `panels` (see panels_of) of `series`."""
    figure, MaxNLocator = _figure(2.8 * len(panels) + 0.6, title)
    first = None
    for index, (label, names, log) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, index + 1, sharex=first)
        first = first or axes
        for name in names:
            points = _finite(series[name])
            axes.plot([s for s, _ in points], [v for _, v in points], label=name,
                      marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.2)
        if log:
            axes.set_yscale("log")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole numbers
        if index == len(panels) - 1:
            axes.set_xlabel(X_LABELS.get(axis, axis))
        else:
            axes.tick_params(labelbottom=False)  # one set of x tick labels, under the axis label
    figure.tight_layout()
    return figure


def _figure(height: float, title: str):
    """A Figure on an Agg canvas (never pyplot), and matplotlib's MaxNLocator; `matplotlib-missing` without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise EnvbuilderError("matplotlib-missing", "plotting needs matplotlib",
                              "pip install 'envbuilder[plot]' (or matplotlib)") from None
    figure = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title)
    return figure, MaxNLocator


def plot_compare(runs: Mapping[str, Series], out_png: Path, *, axes_of: Mapping[str, str] | None = None,
                 title: str = "") -> Path:
    """Overlay the metrics of several runs (run label -> series) into one PNG: a panel per metric the runs
    recorded (losses, then accuracies, then the learning rate, as plot_run orders them), a line per run.
    Raises `no-metrics` when no run has anything finite to draw: no file is written."""
    merged: dict[str, list[tuple[float, float]]] = {}
    for series in runs.values():
        for name, points in series.items():
            merged.setdefault(name, []).extend(_finite(points))
    names = [name for _, group, _ in panels_of(merged) for name in group]
    if not names:
        raise EnvbuilderError("no-metrics", f"nothing to plot: none of the runs {', '.join(runs)} recorded a finite "
                              "metric value", "compare the table, or record metrics (docs/running.md, Metrics)")
    names = names[: _MAX_OTHER]
    kinds = set((axes_of or {}).values()) or {"step"}
    x_label = X_LABELS.get(min(kinds), min(kinds)) if len(kinds) == 1 else "step or epoch (the runs differ)"
    figure, MaxNLocator = _figure(2.6 * len(names) + 0.6, title)
    first = None
    for index, name in enumerate(names):
        axes = figure.add_subplot(len(names), 1, index + 1, sharex=first)
        first = first or axes
        for label, series in runs.items():
            points = _finite(series.get(name, ()))
            if points:
                axes.plot([s for s, _ in points], [v for _, v in points], label=label,
                          marker="o" if len(points) < 30 else None, markersize=3, linewidth=1.2)
        if _is_rate(name) and all(v > 0 for _, v in merged[name]):
            axes.set_yscale("log")
        axes.set_ylabel(name)
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if index == len(names) - 1:
            axes.set_xlabel(x_label)
        else:
            axes.tick_params(labelbottom=False)
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png

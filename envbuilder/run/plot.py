"""A PNG of a run's metric series: losses, accuracies, and the learning rate on a log scale.

matplotlib is optional (the `plot` extra) and imported only when a plot is drawn. It is used through
its object API with the Agg canvas, never pyplot, so drawing does not switch the backend of a host
application that embeds envbuilder. Must not import docker.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from envbuilder.errors import EnvbuilderError

Series = Mapping[str, Sequence[tuple[float, float]]]

_MAX_OTHER = 6


def _panels(series: Series) -> list[tuple[str, list[str], bool]]:
    """(y label, series names, log scale) for each panel that has something to show."""
    names = [name for name, points in series.items() if _finite(points) and name not in ("step", "epoch")]
    losses = sorted((n for n in names if "loss" in n), key=lambda n: (n != "loss", n != "val_loss", n))
    accuracies = sorted(n for n in names if "acc" in n and n not in losses)
    rates = [n for n in names if n == "lr" or n.startswith("lr_")]
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


def plot_run(series: Series, out_png: Path, title: str = "") -> Path:
    """Draw `series` (name -> [(step, value)]) into `out_png`; missing series are left out. Returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise EnvbuilderError("matplotlib-missing", "plotting needs matplotlib",
                              "pip install 'envbuilder[plot]' (or matplotlib)") from None
    panels = _panels(series)
    figure = Figure(figsize=(8, 2.8 * max(1, len(panels)) + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    if title:
        figure.suptitle(title)
    if not panels:
        axes = figure.add_subplot(1, 1, 1)
        axes.text(0.5, 0.5, "no metrics recorded", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
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
        if index == len(panels) - 1:
            axes.set_xlabel("step")
    figure.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, format="png")
    return out_png

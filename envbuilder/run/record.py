"""What a run is recorded with, short of the record itself: the statuses a run can be in, where it came from
(RunOrigin), how run ids are drawn, MetricPoint (one value of a metric as the store keeps it) and plan_summary.

The record, RunRecord, is envbuilder.run.runrecord's: a frozen dataclass, and `envbuilder run --image` imports
this module before its container exists, where the `dataclasses` module alone would cost ~7 ms.
The store (envbuilder.run.store) imports this module, never the reverse.
Must not import dataclasses, docker, pydantic (the plan's module is imported only when given a plan) or the store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal, NamedTuple

from envbuilder.imagelayout import (
    LABEL_FLAVOR,
    LABEL_PLAN_HASH,
    LABEL_PYTHON,
    LABEL_TORCH,
)

RunStatus = Literal["queued", "running", "completed", "failed", "stopped"]
RUNNING: RunStatus = "running"
QUEUED: RunStatus = "queued"  # submitted to a cluster's scheduler, not started yet
ACTIVE_STATUSES: tuple[RunStatus, ...] = (QUEUED, RUNNING)
FINISHED_STATUSES: tuple[RunStatus, ...] = ("completed", "failed", "stopped")
LAST = "last"  # what `runs show last` (and every command that takes a run id) reads as the newest run


def new_run_id(now: datetime | None = None) -> str:
    """`r-YYYYMMDD-HHMMSS-xxxx` (UTC): sorts by start time, readable, and short enough to type. Drawn before the
    run is recorded when its artifacts folder is named after it (envbuilder.run.artifacts)."""
    now = now or datetime.now(timezone.utc)
    return f"r-{now:%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"


class MetricPoint(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """One value of one metric at a point of the x axis (`axis`: step, epoch or report), at wall-clock time t."""

    step: int
    name: str
    value: float
    t: float
    axis: str = "step"


class RunOrigin(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """Where a run came from, recorded with it: the project's git commit and whether tracked files differed
    from it (None when the project is not a git work tree), and the run it resumed from."""

    git_commit: str | None = None
    git_dirty: bool | None = None
    parent_run: str | None = None


def plan_summary(plan: Any = None, *, plan_hash: str | None = None, image_labels: Mapping[str, str] | None = None) -> dict:
    """What a run keeps of the plan its image was built from (torch, flavour, Python, plan hash): from the plan
    when the run resolved it, else from the labels envbuilder put on the image."""
    if plan is not None:
        from envbuilder.resolve.plan import plan_digest

        return {"torch": plan.torch.version, "flavor": plan.torch.flavor, "python": plan.python,
                "plan_hash": plan_hash or plan_digest(plan)}
    labels = image_labels or {}
    return {"torch": labels.get(LABEL_TORCH), "flavor": labels.get(LABEL_FLAVOR), "python": labels.get(LABEL_PYTHON),
            "plan_hash": plan_hash or labels.get(LABEL_PLAN_HASH)}

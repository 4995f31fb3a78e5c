"""RunRecord: one run as the run store holds it, the statuses a run can be in, where it came from (RunOrigin),
how run ids are drawn, and MetricPoint, one value of a metric as the store keeps it.

A frozen dataclass, not a pydantic model: the store returns one from every start and read, and `envbuilder run`
must not pay for importing pydantic. The store (envbuilder.run.store) imports this module, never the reverse.
Must not import docker, pydantic (the plan's module is imported only when given a plan) or the store.
"""

from __future__ import annotations

import os

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
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


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """One run as the store holds it. Times are UTC."""

    id: str
    project: str
    job: str | None = None
    image: str | None = None
    plan: Mapping[str, Any] | None = None
    command: tuple[str, ...]
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    container_id: str | None = None
    log_path: str
    artifacts_dir: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    stop_requested_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    backend: str | None = None  # None: a local container; else the cluster engine (slurm, kubernetes, skypilot)
    backend_job_id: str | None = None  # the engine's id for the job (a Slurm job id, a Job name)
    notices: tuple[Mapping[str, str], ...] = ()  # {"code", "message"}: a NaN loss, a metrics channel unread...
    git_commit: str | None = None  # the project's commit when the run started (None: not a git work tree)
    git_dirty: bool | None = None  # tracked files differed from that commit
    parent_run: str | None = None  # the run whose checkpoint this one resumed from

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def active(self) -> bool:
        """Queued or running: not finished yet."""
        return self.status in ACTIVE_STATUSES

    @property
    def duration_s(self) -> float | None:
        end = self.finished_at or (datetime.now(timezone.utc) if self.running else None)
        return None if end is None else (end - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """Every field in declaration order; times in ISO 8601 with `Z` (what `runs list --json` has always printed)."""
        return {f.name: _json_value(getattr(self, f.name)) for f in fields(self)}


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


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value

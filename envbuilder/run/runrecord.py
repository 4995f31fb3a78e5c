"""RunRecord: one run as the run store holds it, and its JSON (what `runs list --json` prints).

A frozen dataclass, not a pydantic model: the store returns one from every start and read, and `envbuilder run`
must not pay for importing pydantic. Imported only where a record is made or read: `run --image` makes its run's
record while the engine creates the container (envbuilder.run.container), so the ~10 ms of `dataclasses` and of
this class do not delay the job. The statuses, ids and the run's other values are envbuilder.run.record's.
Must not import docker, pydantic or the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from envbuilder.run.record import ACTIVE_STATUSES, RUNNING, RunStatus


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


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping):
        return dict(value)
    return value

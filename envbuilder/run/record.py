"""RunRecord: one run as the run store (envbuilder.run.store) holds it, as a frozen pydantic value.

Separate from the store so that writing a run's record imports no pydantic; the store's reads build these.
Must not import docker.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from envbuilder.run.store import RUNNING, RunStatus
from envbuilder.values import Value


class RunRecord(Value):
    """One run as the store holds it. Times are UTC."""

    id: str
    project: str
    job: str | None = None
    image: str | None = None
    plan: dict[str, Any] | None = None
    command: tuple[str, ...]
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None = None
    exit_code: int | None = None
    container_id: str | None = None
    log_path: str
    artifacts_dir: str | None = None
    args: dict[str, Any] = {}
    error: str | None = None
    stop_requested_at: datetime | None = None
    owner_host: str | None = None
    owner_pid: int | None = None

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def duration_s(self) -> float | None:
        end = self.finished_at or (datetime.now(timezone.utc) if self.running else None)
        return None if end is None else (end - self.started_at).total_seconds()

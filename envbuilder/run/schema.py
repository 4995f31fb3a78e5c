"""The run database's schema: its migrations (by `user_version`) and the mapping between rows and values.

Owns _MIGRATIONS (append a step; never edit a released one), migrate(), and the conversions between a `runs`
or `metrics` row and RunRecord / metric points. Must not import docker or the store (the store imports this).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuilder.errors import EnvbuilderError
from envbuilder.run.record import MetricPoint

if TYPE_CHECKING:
    from envbuilder.run.runrecord import RunRecord

# Index i takes the schema from user_version i to i + 1. Append; never edit a released step.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        job TEXT,
        image TEXT,
        plan TEXT,
        command TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'stopped')),
        started_at REAL NOT NULL,
        finished_at REAL,
        exit_code INTEGER,
        container_id TEXT,
        log_path TEXT NOT NULL,
        artifacts_dir TEXT,
        args TEXT NOT NULL DEFAULT '{}',
        error TEXT,
        stop_requested_at REAL,
        owner_host TEXT,
        owner_pid INTEGER
    );
    CREATE INDEX runs_started ON runs (started_at DESC);
    CREATE INDEX runs_status ON runs (status);
    CREATE INDEX runs_project ON runs (project, started_at DESC);
    CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        t REAL NOT NULL
    );
    CREATE INDEX metrics_run ON metrics (run_id, name, step);
    """,
    # 1 -> 2: runs on a cluster. `queued` joins the statuses (a CHECK constraint cannot be altered in SQLite, so
    # both tables are rebuilt: runs first, then metrics pointing at it, then the renames, which rewrite the
    # reference), plus the engine and its job id, and how far the job's output file has been read for metrics.
    """
    CREATE TABLE runs_v2 (
        id TEXT PRIMARY KEY,
        project TEXT NOT NULL,
        job TEXT,
        image TEXT,
        plan TEXT,
        command TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'stopped')),
        started_at REAL NOT NULL,
        finished_at REAL,
        exit_code INTEGER,
        container_id TEXT,
        log_path TEXT NOT NULL,
        artifacts_dir TEXT,
        args TEXT NOT NULL DEFAULT '{}',
        error TEXT,
        stop_requested_at REAL,
        owner_host TEXT,
        owner_pid INTEGER,
        backend TEXT,
        backend_job_id TEXT,
        log_read_bytes INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO runs_v2 (id, project, job, image, plan, command, status, started_at, finished_at, exit_code,
        container_id, log_path, artifacts_dir, args, error, stop_requested_at, owner_host, owner_pid)
        SELECT id, project, job, image, plan, command, status, started_at, finished_at, exit_code,
        container_id, log_path, artifacts_dir, args, error, stop_requested_at, owner_host, owner_pid FROM runs;
    CREATE TABLE metrics_v2 (
        run_id TEXT NOT NULL REFERENCES runs_v2 (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        t REAL NOT NULL
    );
    INSERT INTO metrics_v2 (run_id, step, name, value, t) SELECT run_id, step, name, value, t FROM metrics
        ORDER BY rowid;
    DROP TABLE metrics;
    DROP TABLE runs;
    ALTER TABLE runs_v2 RENAME TO runs;
    ALTER TABLE metrics_v2 RENAME TO metrics;
    CREATE INDEX runs_started ON runs (started_at DESC);
    CREATE INDEX runs_status ON runs (status);
    CREATE INDEX runs_project ON runs (project, started_at DESC);
    CREATE INDEX runs_backend ON runs (backend, status);
    CREATE INDEX metrics_run ON metrics (run_id, name, step);
    """,
    # 2 -> 3: what a metric point's step counts (step, epoch or report: the plot's x axis; NULL before, read as
    # step), and the run's notices (a NaN loss, a metrics channel that could not be read): a JSON list of
    # {"code", "message"}.
    """
    ALTER TABLE metrics ADD COLUMN axis TEXT;
    ALTER TABLE runs ADD COLUMN notices TEXT NOT NULL DEFAULT '[]';
    """,
    # 3 -> 4: where the run came from: the project's git commit and whether tracked files differed from it
    # (NULL: not a git work tree), and the run whose checkpoint it resumed from.
    """
    ALTER TABLE runs ADD COLUMN git_commit TEXT;
    ALTER TABLE runs ADD COLUMN git_dirty INTEGER;
    ALTER TABLE runs ADD COLUMN parent_run TEXT;
    CREATE INDEX runs_job ON runs (project, job, started_at DESC);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the database to SCHEMA_VERSION, in one transaction that another process may have beaten us to."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
        if version > SCHEMA_VERSION:
            raise EnvbuilderError("runs-db-newer", f"{path} has schema version {version}, newer than this "
                                  f"envbuilder's {SCHEMA_VERSION}", "upgrade envbuilder")
        for step in _MIGRATIONS[version:]:
            for statement in step.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


INSERT_METRIC = "INSERT INTO metrics (run_id, step, name, value, t, axis) VALUES (?, ?, ?, ?, ?, ?)"


def metric_rows(run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> list[tuple]:
    rows = []
    for point in points:
        step, name, value, t = (point.step, point.name, point.value, point.t) if isinstance(point, MetricPoint) \
            else point
        axis = point.axis if isinstance(point, MetricPoint) else None
        value = float(value)
        rows.append((run_id, int(step), str(name), None if math.isnan(value) else value, float(t), axis))
    return rows


def dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def record_of(row: sqlite3.Row) -> RunRecord:
    from envbuilder.run.runrecord import RunRecord  # not on `run --image`'s way to its container (its docstring)

    return RunRecord(
        id=row["id"], project=row["project"], job=row["job"], image=row["image"],
        plan=None if row["plan"] is None else json.loads(row["plan"]),
        command=tuple(json.loads(row["command"])), status=row["status"],
        started_at=_time(row["started_at"]), finished_at=_time(row["finished_at"]), exit_code=row["exit_code"],
        container_id=row["container_id"], log_path=row["log_path"], artifacts_dir=row["artifacts_dir"],
        args=json.loads(row["args"] or "{}"), error=row["error"], stop_requested_at=_time(row["stop_requested_at"]),
        owner_host=row["owner_host"], owner_pid=row["owner_pid"], backend=row["backend"],
        backend_job_id=row["backend_job_id"], notices=tuple(json.loads(row["notices"] or "[]")),
        git_commit=row["git_commit"], git_dirty=None if row["git_dirty"] is None else bool(row["git_dirty"]),
        parent_run=row["parent_run"],
    )

"""The run store: every run's record and metric series, in SQLite, safe with many writers at once.

Owns RunStore and the database schema (created on first use, migrated by `user_version`); RunRecord, the
frozen value its starts and reads return, lives in envbuilder.run.record (which imports nothing of the store).
One way to write a run's life: start_run, set_container, add_metrics, request_stop, finish_run.
Several runs and processes write at once: the database is in WAL mode, each connection waits on a
busy lock (busy_timeout) instead of failing, and every write is one `BEGIN IMMEDIATE` transaction.
Each thread keeps its own connection (opened on first use), so a RunStore may be shared between threads;
reopening per operation cost a WAL checkpoint and fsync at every close (~1-10 ms a write).
Logs live in files (settings.runs_dir/<id>/log.txt); the store records their path.

Faults (envbuilder.run.faults classifies them): a damaged database file (a folder, not SQLite, cut short, or
"malformed" on use) is moved aside to a timestamped name, never deleted, a new store is started and the user
is told through on_notice; a full disk is `disk-full`, and reads fall back to a read-only connection so that
`runs list` still works. The database and the run folders are private (0600/0700).

Must not import docker: `reconcile` is given a callable that answers a container's state.
"""

from __future__ import annotations

import functools
import json
import math
import os
import secrets
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from envbuilder.errors import EnvbuilderError
from envbuilder.run.faults import database_problem, disk_full_error, is_corruption, is_disk_full, move_aside
from envbuilder.run.metrics import MetricPoint
from envbuilder.run.record import FINISHED_STATUSES, QUEUED, RUNNING, RunRecord, RunStatus
from envbuilder.redact import redact_text
from envbuilder.settings import PRIVATE_FILE_MODE, private_dir

# Container states (Docker's State.Status) in which the run is over. Anything else (running, paused, a state
# a newer engine invents) leaves the record alone: failing a live run is worse than a late update.
ENDED_CONTAINER_STATES = frozenset({"exited", "dead", "removing"})
VANISHED = "container vanished"

_BUSY_TIMEOUT_MS = 30_000
_RESERVE_BYTES = 256 * 1024  # a few WAL frames and the shared-memory file: enough to finish a run's record

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
)
SCHEMA_VERSION = len(_MIGRATIONS)


MetricSeries = dict[str, list[tuple[int, float]]]


def new_run_id(now: datetime | None = None) -> str:
    """`r-YYYYMMDD-HHMMSS-xxxx` (UTC): sorts by start time, readable, and short enough to type."""
    now = now or datetime.now(timezone.utc)
    return f"r-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def _guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store operation with its faults handled: a damaged file is moved aside and the operation runs once more
    on a new store; a full disk is `disk-full` naming the file."""

    @functools.wraps(method)
    def guarded(self: "RunStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if is_corruption(exc):
                self._recover(str(exc))
                return method(self, *args, **kwargs)
            if is_disk_full(exc, self.path):
                raise disk_full_error(self.path, "writing the run database") from None
            raise
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc.filename or self.runs_dir, "writing a run's folder") from None
            raise

    return guarded


class RunStore:
    """The run database at `path`; run folders (logs) under `runs_dir` (default: next to the database).

    on_notice is told what the store did that the user should know (a damaged file moved aside, a read-only
    fallback); without one, it goes to the `envbuilder` logger. `notices` keeps them too."""

    def __init__(self, path: Path, runs_dir: Path | None = None, *,
                 on_notice: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else self.path.parent / "runs"
        self.on_notice = on_notice
        self.notices: list[str] = []
        self.read_only = False  # the disk was full when the database was opened: reads only
        self._ready = False
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Any, *, on_notice: Callable[[str], None] | None = None) -> "RunStore":
        return cls(settings.runs_db, settings.runs_dir, on_notice=on_notice)

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        if self.on_notice is not None:
            self.on_notice(message)
        else:
            import logging  # rare (a damaged or full store): not worth ~3 ms on every run's start-up

            logging.getLogger("envbuilder").warning(message)

    # --- connections and schema ---------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection; a forked child opens its own (SQLite connections must not cross a fork)."""
        pid, conn = getattr(self._local, "conn", (None, None))
        if conn is None or pid != os.getpid():
            conn = self._open()
            self._local.conn = (os.getpid(), conn)
        return conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends); the next operation reopens."""
        pid, conn = getattr(self._local, "conn", (None, None))
        self._local.conn = (None, None)
        if conn is not None and pid == os.getpid():
            conn.close()

    def _open(self) -> sqlite3.Connection:
        if self.read_only:
            return self._open_read_only()
        if not self._ready:
            self._prepare()
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Per connection, not per file: in WAL mode NORMAL syncs at checkpoints, not on every commit.
            conn.execute("PRAGMA synchronous = NORMAL")
            if not self._ready:
                self._migrate(conn)
                self._ready = True
            return conn
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if is_disk_full(exc, self.path) and self.path.is_file() and self.path.stat().st_size:
                self.read_only = True
                self._notice(f"the disk holding {self.path} is full: runs are shown as they were last recorded, "
                             "and nothing is recorded until space is freed")
                return self._open_read_only()
            raise

    def _prepare(self) -> None:
        """Private folders; a damaged database file moved aside; a new one created 0600 (SQLite gives its WAL
        and shared-memory files the database's mode)."""
        try:
            private_dir(self.path.parent)
            private_dir(self.runs_dir, root=self.path.parent)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            if not self.path.is_file():
                raise disk_full_error(self.path.parent, "creating the run store") from None
        problem = database_problem(self.path)
        if problem:
            self._recover(problem)
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, PRIVATE_FILE_MODE))
            if not self.reserve.exists():
                self.reserve.write_bytes(b"\0" * _RESERVE_BYTES)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.reserve.unlink(missing_ok=True)  # a partial reserve is no reserve

    @property
    def reserve(self) -> Path:
        """Space kept for the last word on a full disk: release_reserve() frees it so that a runner whose log
        filled the disk can still record how its run ended. Made again when the store next opens with room."""
        return self.path.with_name(self.path.name + ".reserve")

    def release_reserve(self) -> bool:
        try:
            self.reserve.unlink()
        except FileNotFoundError:
            return False
        return True

    def _open_read_only(self) -> sqlite3.Connection:
        """A connection that writes nothing: `mode=ro` while the WAL's files exist, else `immutable` (a reader
        of a WAL database must create its shared-memory file, which a full disk refuses)."""
        from urllib.parse import quote

        uri = f"file:{quote(str(self.path.resolve()))}"
        if Path(f"{self.path}-wal").exists() and Path(f"{self.path}-shm").exists():
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        else:
            conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    def _recover(self, problem: str) -> None:
        """Move the damaged database aside (kept, under a timestamped name), start a new one, tell the user."""
        self.close()
        if not (self.path.exists() or self.path.is_symlink()):
            return  # another process moved it aside already
        backup = move_aside(self.path)
        self._ready = False
        self._notice(f"the run database {self.path} was damaged ({problem}): it was moved to {backup} and a new "
                     f"one started; the runs recorded there are not listed (their logs are still under {self.runs_dir})")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # WAL lets readers (runs list) go on while a run writes metrics; it persists in the file.
        for attempt in range(50):
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:  # another process holds the lock while switching
                time.sleep(0.05 * (attempt + 1))
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have migrated
            if version > SCHEMA_VERSION:
                raise EnvbuilderError("runs-db-newer", f"{self.path} has schema version {version}, newer than this "
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

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        yield self._connect()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from the start so it never has to upgrade (and deadlock)."""
        if self.read_only:
            raise disk_full_error(self.path, "recording a run")
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # the connection is kept: leave it outside any transaction
                conn.execute("ROLLBACK")
            raise

    # --- writes ---------------------------------------------------------------------------------------

    @_guarded
    def start_run(
        self,
        project: str,
        command: Sequence[str],
        *,
        job: str | None = None,
        image: str | None = None,
        plan: dict[str, Any] | None = None,
        artifacts_dir: str | os.PathLike[str] | None = None,
        args: dict[str, Any] | None = None,
        backend: str | None = None,
    ) -> RunRecord:
        """Record a new `running` run (owned by this process) and create its folder and empty log file.

        With a cluster `backend` (slurm, kubernetes, skypilot) the run is `queued` and owned by no process:
        the engine runs it, and envbuilder.cluster settles it from the engine's answers.
        The record returned is the one written, built here rather than read back: a run's start costs one write."""
        now = datetime.now(timezone.utc)
        status: RunStatus = RUNNING if backend is None else QUEUED
        owner_pid = os.getpid() if backend is None else None
        for _ in range(20):
            run_id = new_run_id(now)
            log_path = self.runs_dir / run_id / "log.txt"
            record = RunRecord(
                id=run_id, project=project, job=job, image=image, plan=plan, command=tuple(command), status=status,
                started_at=now, log_path=str(log_path), artifacts_dir=None if artifacts_dir is None else str(artifacts_dir),
                args=dict(args or {}), owner_host=socket.gethostname(), owner_pid=owner_pid, backend=backend,
            )
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, project, job, image, plan, command, status, started_at, log_path,"
                        " artifacts_dir, args, owner_host, owner_pid, backend)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.id, project, job, image, _dump(plan), json.dumps(list(command)), status,
                         now.timestamp(), record.log_path, record.artifacts_dir, json.dumps(args or {}),
                         record.owner_host, record.owner_pid, backend),
                    )
            except sqlite3.IntegrityError:
                continue  # two runs started in the same second drew the same suffix
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.touch(exist_ok=True)
            return record
        raise EnvbuilderError("run-id-exhausted", "could not draw a unique run id", "try again")

    @_guarded
    def set_container(self, run_id: str, container_id: str) -> None:
        self._update(run_id, "container_id = ?", (container_id,))

    @_guarded
    def add_metrics(self, run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> int:
        """Append points in one transaction; returns how many. NaN is stored as NULL (SQLite has no NaN)."""
        rows = _metric_rows(run_id, points)
        if not rows:
            return 0
        with self._write() as conn:
            self._require(conn, run_id)
            conn.executemany(_INSERT_METRIC, rows)
        return len(rows)

    @_guarded
    def replace_metrics(self, run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> int:
        """Replace every point of the run, in one transaction (a better metrics channel spoke); returns how many."""
        rows = _metric_rows(run_id, points)
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.executemany(_INSERT_METRIC, rows)
        return len(rows)

    @_guarded
    def metric_axis(self, run_id: str) -> str:
        """What the run's metric steps count, for the x axis: step, epoch or report (the axis of most points)."""
        with self._read() as conn:
            self._require(conn, run_id)
            row = conn.execute("SELECT COALESCE(axis, 'step') AS axis, COUNT(*) AS n FROM metrics WHERE run_id = ?"
                               " GROUP BY 1 ORDER BY n DESC LIMIT 1", (run_id,)).fetchone()
        return row["axis"] if row else "step"

    @_guarded
    def add_notice(self, run_id: str, code: str, message: str) -> None:
        """Keep a notice on the run (a NaN loss, a metrics channel that could not be read); `runs show` prints them."""
        with self._write() as conn:
            row = conn.execute("SELECT notices FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise _not_found(run_id)
            notices = json.loads(row["notices"] or "[]") + [{"code": code, "message": redact_text(message)}]
            conn.execute("UPDATE runs SET notices = ? WHERE id = ?", (json.dumps(notices), run_id))

    @_guarded
    def finish_run(self, run_id: str, status: RunStatus, exit_code: int | None, error: str | None = None) -> None:
        """Record how the run ended. The last finisher wins (a late `completed` corrects a reconciled `failed`)."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish_run needs one of {FINISHED_STATUSES}, got {status!r}")
        error = None if error is None else redact_text(error)  # an engine's or git's text may quote a token
        self._update(run_id, "status = ?, exit_code = ?, error = ?, finished_at = ?",
                     (status, exit_code, error, time.time()))

    @_guarded
    def request_stop(self, run_id: str) -> RunRecord:
        """Note that a stop was asked for (the executor's watcher reads it); a finished run is left as it is."""
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("UPDATE runs SET stop_requested_at = ? WHERE id = ? AND status IN ('queued', 'running')"
                         " AND stop_requested_at IS NULL", (time.time(), run_id))
        return self.get(run_id)

    @_guarded
    def note_watch(self, run_id: str, note: str) -> None:
        """Say, on a run still `running`, why its runner stopped watching (the engine went away, an interrupt
        before the end was recorded); reconcile_runs puts it in the final record instead of "no one watched"."""
        with self._write() as conn:
            conn.execute("UPDATE runs SET error = ? WHERE id = ? AND status = 'running'", (note, run_id))

    @_guarded
    def stop_requested(self, run_id: str) -> bool:
        with self._read() as conn:
            row = conn.execute("SELECT stop_requested_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:  # an id prefix, or no such run: get() resolves the one or raises run-not-found
            return self.get(run_id).stop_requested_at is not None
        return row[0] is not None

    # --- runs on a cluster (envbuilder.cluster settles them from the engine's answers) -------------------

    def set_backend_job(self, run_id: str, job_id: str) -> None:
        """The engine's id for a submitted run (known once the engine accepted it)."""
        self._update(run_id, "backend_job_id = ?", (job_id,))

    def mark_running(self, run_id: str) -> bool:
        """A queued run has started on the cluster; False when it was not queued any more."""
        with self._write() as conn:
            return conn.execute("UPDATE runs SET status = 'running' WHERE id = ? AND status = 'queued'",
                                (run_id,)).rowcount == 1

    def active_backend_runs(self) -> list[RunRecord]:
        """Queued or running runs on a cluster engine, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM runs WHERE backend IS NOT NULL AND status IN ('queued', 'running')"
                                " ORDER BY started_at, rowid").fetchall()
        return [_record(row) for row in rows]

    def log_read_bytes(self, run_id: str) -> int:
        """How much of the run's output file has been read for metrics (cluster runs)."""
        with self._read() as conn:
            row = conn.execute("SELECT log_read_bytes FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise _not_found(run_id)
        return int(row[0])

    def add_log_metrics(self, run_id: str, points: Iterable[MetricPoint], read_from: int, read_to: int) -> bool:
        """Record the metrics of the output bytes [read_from, read_to) once: False (nothing written) when
        another reader got there first, so two `runs show` at once never record a line twice."""
        rows = _metric_rows(run_id, points)
        with self._write() as conn:
            claimed = conn.execute("UPDATE runs SET log_read_bytes = ? WHERE id = ? AND log_read_bytes = ?",
                                   (read_to, run_id, read_from)).rowcount == 1
            if claimed and rows:
                conn.executemany(_INSERT_METRIC, rows)
        return claimed

    def _update(self, run_id: str, assignments: str, values: tuple[Any, ...]) -> None:
        with self._write() as conn:
            cursor = conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values, run_id))
            if cursor.rowcount == 0:
                raise _not_found(run_id)

    @staticmethod
    def _require(conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise _not_found(run_id)

    # --- reads ----------------------------------------------------------------------------------------

    @_guarded
    def get(self, run_id: str) -> RunRecord:
        """The run with this id, or the only one whose id starts with it; raises `run-not-found`."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None and run_id:
                escaped = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = conn.execute("SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
                                    (escaped + "%",)).fetchall()
                if len(rows) > 1:
                    raise EnvbuilderError("run-ambiguous", f"more than one run id starts with {run_id!r}",
                                          "give more of the id; `envbuilder runs list` shows them")
                row = rows[0] if rows else None
        if row is None:
            raise _not_found(run_id)
        return _record(row)

    @_guarded
    def list_runs(self, limit: int | None = 20, project: str | None = None, status: RunStatus | None = None,
                  job: str | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        where, values = [], []
        for column, value in (("project", project), ("status", status), ("job", job)):
            if value is not None:
                where.append(f"{column} = ?")
                values.append(value)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            values.append(int(limit))
        with self._read() as conn:
            return [_record(row) for row in conn.execute(sql, values).fetchall()]

    @_guarded
    def metric_series(self, run_id: str) -> MetricSeries:
        """name -> [(step, value), ...] in step order (then in the order they were recorded)."""
        series: MetricSeries = {}
        with self._read() as conn:
            self._require(conn, run_id)
            rows = conn.execute("SELECT step, name, value FROM metrics WHERE run_id = ? ORDER BY name, step, t, rowid",
                                (run_id,)).fetchall()
        for row in rows:
            value = math.nan if row["value"] is None else row["value"]
            series.setdefault(row["name"], []).append((row["step"], value))
        return series

    # --- reconciliation -------------------------------------------------------------------------------

    @_guarded
    def reconcile(self, container_state: Callable[[str], Mapping[str, Any] | str | None]) -> list[str]:
        """Settle `running` runs that nobody is watching any more; returns the ids changed.

        A run whose runner process is alive on this host is left to it: it records the end itself (it may be
        verifying exports after its container is gone). Otherwise a run with a container is over when
        `container_state(container_id)` says the container is gone (None) or ended (exited, dead, removing):
        given the engine's State (a mapping with ExitCode), the run is `completed` or `failed` by its exit code,
        else `failed` as vanished. A run that never got a container is over when the process that started it
        (on this host) is gone: it crashed before the container started.
        """
        changed: list[str] = []
        host = socket.gethostname()
        for record in self.list_runs(limit=None, status=RUNNING):
            runner_alive = record.owner_host == host and record.owner_pid is not None and _process_alive(record.owner_pid)
            if runner_alive:
                continue
            exit_code = None
            status: RunStatus = "failed"
            if record.container_id:
                state = container_state(record.container_id)
                phase, exit_code = _container_phase(state)
                if phase is not None and phase not in ENDED_CONTAINER_STATES:
                    continue
                if phase is None or exit_code is None:
                    error = VANISHED + (f" after {record.error}" if record.error else "")
                elif exit_code == 0:
                    status, error = "completed", None
                elif record.error:  # the runner's note (note_watch): it was watching until it lost the run
                    error = f"exited with {exit_code} after {record.error}"
                else:
                    error = f"exited with {exit_code} while no envbuilder process was watching"
            else:
                if record.owner_host != host or record.owner_pid is None:
                    continue
                error = "the envbuilder process that started this run exited before its container started"
            with self._write() as conn:
                cursor = conn.execute(
                    "UPDATE runs SET status = ?, exit_code = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                    (status, exit_code, error, time.time(), record.id))
            if cursor.rowcount:
                changed.append(record.id)
        return changed


def _container_phase(state: Mapping[str, Any] | str | None) -> tuple[str | None, int | None]:
    """(status in lower case, exit code) from the engine's State mapping, or a bare status string."""
    if state is None:
        return None, None
    if isinstance(state, str):
        return state.lower(), None
    code = state.get("ExitCode")
    return str(state.get("Status") or "unknown").lower(), None if code is None else int(code)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one owned by another user counts)."""
    return _process_alive(pid)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _not_found(run_id: str) -> EnvbuilderError:
    return EnvbuilderError("run-not-found", f"no run {run_id!r}", "`envbuilder runs list` shows the recorded runs",
                           {"run_id": run_id})


_INSERT_METRIC = "INSERT INTO metrics (run_id, step, name, value, t, axis) VALUES (?, ?, ?, ?, ?, ?)"


def _metric_rows(run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> list[tuple]:
    rows = []
    for point in points:
        step, name, value, t = (point.step, point.name, point.value, point.t) if isinstance(point, MetricPoint) \
            else point
        axis = point.axis if isinstance(point, MetricPoint) else None
        value = float(value)
        rows.append((run_id, int(step), str(name), None if math.isnan(value) else value, float(t), axis))
    return rows


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, timezone.utc)


def _record(row: sqlite3.Row) -> RunRecord:
    return RunRecord(
        id=row["id"], project=row["project"], job=row["job"], image=row["image"],
        plan=None if row["plan"] is None else json.loads(row["plan"]),
        command=tuple(json.loads(row["command"])), status=row["status"],
        started_at=_time(row["started_at"]), finished_at=_time(row["finished_at"]), exit_code=row["exit_code"],
        container_id=row["container_id"], log_path=row["log_path"], artifacts_dir=row["artifacts_dir"],
        args=json.loads(row["args"] or "{}"), error=row["error"], stop_requested_at=_time(row["stop_requested_at"]),
        owner_host=row["owner_host"], owner_pid=row["owner_pid"], backend=row["backend"],
        backend_job_id=row["backend_job_id"], notices=tuple(json.loads(row["notices"] or "[]")),
    )

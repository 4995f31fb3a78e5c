"""The run store: every run's record and metric series, in SQLite, safe with many writers at once.

Owns RunStore: the one way to write a run's life (start_run, set_container, add_metrics, request_stop,
finish_run), the reads behind `runs list/show/compare` (an id prefix or `last`, the last value of each metric),
removing runs, and reconciling runs nobody watches. The database file itself (connections, WAL, faults, the
disk-full reserve) is envbuilder.run.database; the schema and row mapping, envbuilder.run.schema; RunRecord,
envbuilder.run.record. Logs live in files (settings.runs_dir/<id>/log.txt); the store records their path.
Must not import docker: `reconcile` is given a callable that answers a container's state.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuilder.errors import EnvbuilderError
from envbuilder.redact import redact_text
from envbuilder.run.database import RunDatabase
from envbuilder.run.database import guarded as _guarded
from envbuilder.run.record import (
    FINISHED_STATUSES,
    LAST,
    QUEUED,
    RUNNING,
    MetricPoint,
    RunOrigin,
    RunStatus,
    new_run_id,
)
from envbuilder.run.schema import (
    _MIGRATIONS,
    INSERT_METRIC,
    SCHEMA_VERSION,
    dump,
    metric_rows,
    record_of,
)

if TYPE_CHECKING:
    from envbuilder.run.runrecord import RunRecord

__all__ = [
    "ENDED_CONTAINER_STATES",
    "SCHEMA_VERSION",
    "VANISHED",
    "_MIGRATIONS",
    "MetricSeries",
    "RunStore",
    "new_run_id",
    "process_alive",
    "runner_alive",
]

# Container states (Docker's State.Status) in which the run is over. Anything else (running, paused, a state
# a newer engine invents) leaves the record alone: failing a live run is worse than a late update.
ENDED_CONTAINER_STATES = frozenset({"exited", "dead", "removing"})
VANISHED = "container vanished"

MetricSeries = dict[str, list[tuple[int, float]]]


class RunStore:
    """The run database at `path`; run folders (logs) under `runs_dir` (default: next to the database).

    on_notice is told what the store did that the user should know (a damaged file moved aside, a read-only
    fallback); without one, it goes to the `envbuilder` logger. `notices` keeps them too."""

    def __init__(self, path: Path, runs_dir: Path | None = None, *,
                 on_notice: Callable[[str], None] | None = None) -> None:
        self.on_notice = on_notice
        self.notices: list[str] = []
        self.db = RunDatabase(Path(path), Path(runs_dir) if runs_dir is not None else Path(path).parent / "runs",
                              self._notice)

    @classmethod
    def from_settings(cls, settings: Any, *, on_notice: Callable[[str], None] | None = None) -> RunStore:
        return cls(settings.runs_db, settings.runs_dir, on_notice=on_notice)

    @property
    def path(self) -> Path:
        return self.db.path

    @property
    def runs_dir(self) -> Path:
        return self.db.runs_dir

    @property
    def read_only(self) -> bool:
        return self.db.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self.db.read_only = value

    @property
    def reserve(self) -> Path:
        return self.db.reserve

    def release_reserve(self) -> bool:
        return self.db.release_reserve()

    def close(self) -> None:
        self.db.close()

    def _connect(self) -> sqlite3.Connection:
        return self.db.connect()

    def _read(self):
        return self.db.read()

    def _write(self):
        return self.db.write()

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        if self.on_notice is not None:
            self.on_notice(message)
        else:
            import logging  # rare (a damaged or full store): not worth ~3 ms on every run's start-up

            logging.getLogger("envbuilder").warning(message)

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
        run_id: str | None = None,
        origin: RunOrigin | None = None,
    ) -> RunRecord:
        """Record a new `running` run (owned by this process) and create its folder and empty log file.

        run_id is the id drawn beforehand (new_run_id) when something is already named after it (the run's
        artifacts folder); else one is drawn here. origin: its git commit and the run it resumed from.
        With a cluster `backend` (slurm, kubernetes, skypilot) the run is `queued` and owned by no process:
        the engine runs it, and envbuilder.cluster settles it from the engine's answers.
        The record returned is the one written, built here rather than read back: a run's start costs one write."""
        from envbuilder.run.runrecord import RunRecord

        now = datetime.now(timezone.utc)
        status: RunStatus = RUNNING if backend is None else QUEUED
        owner_pid = os.getpid() if backend is None else None
        origin = origin or RunOrigin()
        for _ in range(1 if run_id else 20):
            this_id = run_id or new_run_id(now)
            log_path = self.runs_dir / this_id / "log.txt"
            record = RunRecord(
                id=this_id, project=project, job=job, image=image, plan=plan, command=tuple(command), status=status,
                started_at=now, log_path=str(log_path), artifacts_dir=None if artifacts_dir is None else str(artifacts_dir),
                args=dict(args or {}), owner_host=socket.gethostname(), owner_pid=owner_pid, backend=backend,
                git_commit=origin.git_commit, git_dirty=origin.git_dirty, parent_run=origin.parent_run,
            )
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, project, job, image, plan, command, status, started_at, log_path,"
                        " artifacts_dir, args, owner_host, owner_pid, backend, git_commit, git_dirty, parent_run)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.id, project, job, image, dump(plan), json.dumps(list(command)), status,
                         now.timestamp(), record.log_path, record.artifacts_dir, json.dumps(args or {}),
                         record.owner_host, record.owner_pid, backend, origin.git_commit,
                         None if origin.git_dirty is None else int(origin.git_dirty), origin.parent_run),
                    )
            except sqlite3.IntegrityError:
                continue  # two runs started in the same second drew the same suffix
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_path.touch(exist_ok=True)
            return record
        if run_id:
            raise EnvbuilderError("run-id-exhausted", f"run id {run_id} is already recorded", "try again")
        raise EnvbuilderError("run-id-exhausted", "could not draw a unique run id", "try again")

    @_guarded
    def set_container(self, run_id: str, container_id: str) -> None:
        self._update(run_id, "container_id = ?", (container_id,))

    @_guarded
    def set_owner(self, run_id: str, pid: int) -> None:
        """Hand the running run to another process on this host (a detached run's watcher): reconcile leaves
        it to that process while it lives."""
        self._update(run_id, "owner_pid = ?", (pid,))

    @_guarded
    def add_metrics(self, run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> int:
        """Append points in one transaction; returns how many. NaN is stored as NULL (SQLite has no NaN)."""
        rows = metric_rows(run_id, points)
        if not rows:
            return 0
        with self._write() as conn:
            self._require(conn, run_id)
            conn.executemany(INSERT_METRIC, rows)
        return len(rows)

    @_guarded
    def replace_metrics(self, run_id: str, points: Iterable[MetricPoint | tuple[int, str, float, float]]) -> int:
        """Replace every point of the run, in one transaction (a better metrics channel spoke); returns how many."""
        rows = metric_rows(run_id, points)
        with self._write() as conn:
            self._require(conn, run_id)
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.executemany(INSERT_METRIC, rows)
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
        return [record_of(row) for row in rows]

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
        rows = metric_rows(run_id, points)
        with self._write() as conn:
            claimed = conn.execute("UPDATE runs SET log_read_bytes = ? WHERE id = ? AND log_read_bytes = ?",
                                   (read_to, run_id, read_from)).rowcount == 1
            if claimed and rows:
                conn.executemany(INSERT_METRIC, rows)
        return claimed

    def replace_log_metrics(self, run_id: str, points: Iterable[MetricPoint], read_from: int, read_to: int) -> bool:
        """Replace all the run's points with `points`, read up to the mark `read_to`, once: False (nothing
        written) when another reader moved the mark from `read_from` first. For cluster runs whose explicit
        metrics channel is re-read whole (envbuilder.cluster.metrics)."""
        rows = metric_rows(run_id, points)
        with self._write() as conn:
            claimed = conn.execute("UPDATE runs SET log_read_bytes = ? WHERE id = ? AND log_read_bytes = ?",
                                   (read_to, run_id, read_from)).rowcount == 1
            if claimed:
                conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                conn.executemany(INSERT_METRIC, rows)
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
        """The run with this id, or the only one whose id starts with it, or the newest for `last`; raises
        `run-not-found` (`run-ambiguous` for a prefix of more than one)."""
        with self._read() as conn:
            if run_id == LAST:
                row = conn.execute("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1").fetchone()
                if row is None:
                    raise EnvbuilderError("run-not-found", "no runs are recorded, so there is no last one",
                                          "start one with `envbuilder run PATH JOB`", {"run_id": run_id})
                return record_of(row)
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
        return record_of(row)

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
            return [record_of(row) for row in conn.execute(sql, values).fetchall()]

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

    @_guarded
    def last_metrics(self, run_ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """run id -> {metric name: its value at the highest step (the latest recorded there)}, in one query."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self._read() as conn:
            rows = conn.execute(
                "SELECT run_id, name, value FROM (SELECT run_id, name, value, ROW_NUMBER() OVER (PARTITION BY run_id,"
                f" name ORDER BY step DESC, t DESC, rowid DESC) AS n FROM metrics WHERE run_id IN ({marks}))"
                " WHERE n = 1 ORDER BY run_id, name", ids).fetchall()
        last: dict[str, dict[str, float]] = {i: {} for i in ids}
        for row in rows:
            last[row["run_id"]][row["name"]] = math.nan if row["value"] is None else row["value"]
        return last

    @_guarded
    def remove(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """Remove finished runs: their records, metrics, and run folders (log, plots). One transaction: an
        active run among them (`run-active`) or an unknown id removes nothing. Artifacts are left alone
        (envbuilder.run.history decides about those). Returns the records removed."""
        records = list({r.id: r for r in (self.get(run_id) for run_id in run_ids)}.values())
        active = [r.id for r in records if r.active]
        if active:
            raise EnvbuilderError("run-active", f"run {active[0]} is {self.get(active[0]).status}: it cannot be removed",
                                  f"stop it first: `envbuilder runs stop {active[0]}`", {"run_id": active[0]})
        with self._write() as conn:
            for record in records:
                if conn.execute("DELETE FROM runs WHERE id = ? AND status NOT IN ('queued', 'running')",
                                (record.id,)).rowcount != 1:
                    raise EnvbuilderError("run-active", f"run {record.id} started again while being removed",
                                          "try again")
        for record in records:
            folder = Path(record.log_path).parent
            if folder.parent == self.runs_dir and folder.name == record.id:  # only a folder this store made
                import shutil  # removing runs only: not on every run's path

                shutil.rmtree(folder, ignore_errors=True)
        return records

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
            if runner_alive(record):
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


def runner_alive(record: RunRecord) -> bool:
    """Whether the process that started the run still runs on this host (it records the run's end itself)."""
    return record.owner_host == socket.gethostname() and record.owner_pid is not None and process_alive(record.owner_pid)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one owned by another user counts)."""
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


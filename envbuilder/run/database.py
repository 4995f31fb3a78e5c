"""The run database file: its connections (one per thread), its schema brought up to date, and its faults.

Owns RunDatabase, which the run store (envbuilder.run.store) composes, and `guarded`, the decorator the store's
operations wear. Several runs and processes write at once: the database is in WAL mode, each connection waits
on a busy lock (busy_timeout) instead of failing, and every write is one `BEGIN IMMEDIATE` transaction. Each
thread keeps its own connection (opened on first use); reopening per operation cost a WAL checkpoint and fsync
at every close (~1-10 ms a write).

Faults (envbuilder.run.faults classifies them): a damaged database file (a folder, not SQLite, cut short, or
"malformed" on use) is moved aside to a timestamped name, never deleted, a new one is started and the user is
told through on_notice; a full disk is `disk-full`, and reads fall back to a read-only connection so that
`runs list` still works. The database and the run folders are private (0600/0700).
Must not import docker or the store.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from envbuilder.run.faults import (
    database_problem,
    disk_full_error,
    is_corruption,
    is_disk_full,
    move_aside,
)
from envbuilder.run.schema import migrate
from envbuilder.settings import PRIVATE_FILE_MODE, private_dir

_BUSY_TIMEOUT_MS = 30_000
_RESERVE_BYTES = 256 * 1024  # a few WAL frames and the shared-memory file: enough to finish a run's record


def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
    """A store operation with its faults handled: a damaged file is moved aside and the operation runs once more
    on a new database; a full disk is `disk-full` naming the file. The instance has a RunDatabase as `db`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        db: RunDatabase = self.db
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            if is_corruption(exc):
                db.recover(str(exc))
                return method(self, *args, **kwargs)
            if is_disk_full(exc, db.path):
                raise disk_full_error(db.path, "writing the run database") from None
            raise
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc.filename or db.runs_dir, "writing a run's folder") from None
            raise

    return wrapper


class RunDatabase:
    """The SQLite file at `path`, with the run folders' root `runs_dir` made private beside it."""

    def __init__(self, path: Path, runs_dir: Path, notice: Callable[[str], None]) -> None:
        self.path = Path(path)
        self.runs_dir = Path(runs_dir)
        self.notice = notice
        self.read_only = False  # the disk was full when the database was opened: reads only
        self._ready = False
        self._local = threading.local()

    def connect(self) -> sqlite3.Connection:
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

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        yield self.connect()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction, holding the write lock from the start so it never has to upgrade (and deadlock)."""
        if self.read_only:
            raise disk_full_error(self.path, "recording a run")
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # the connection is kept: leave it outside any transaction
                conn.execute("ROLLBACK")
            raise

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
                self._wal(conn)
                migrate(conn, self.path)
                self._ready = True
            return conn
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            if is_disk_full(exc, self.path) and self.path.is_file() and self.path.stat().st_size:
                self.read_only = True
                self.notice(f"the disk holding {self.path} is full: runs are shown as they were last recorded, "
                            "and nothing is recorded until space is freed")
                return self._open_read_only()
            raise

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        # WAL lets readers (runs list) go on while a run writes metrics; it persists in the file.
        for attempt in range(50):
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError:  # another process holds the lock while switching
                time.sleep(0.05 * (attempt + 1))

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
            self.recover(problem)
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
        filled the disk can still record how its run ended. Made again when the database next opens with room."""
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

    def recover(self, problem: str) -> None:
        """Move the damaged database aside (kept, under a timestamped name), start a new one, tell the user."""
        self.close()
        if not (self.path.exists() or self.path.is_symlink()):
            return  # another process moved it aside already
        backup = move_aside(self.path)
        self._ready = False
        self.notice(f"the run database {self.path} was damaged ({problem}): it was moved to {backup} and a new "
                    f"one started; the runs recorded there are not listed (their logs are still under {self.runs_dir})")

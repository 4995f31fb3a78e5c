"""What goes wrong under a run, told in the user's words: a full disk, a damaged run database, an exception text.

Owns the classification of OS and SQLite failures into typed errors (`disk-full`), the check that tells a
damaged runs.sqlite3 (a folder, not SQLite, cut short) from a healthy one, moving a damaged file aside under a
timestamped name (never deleting it), and describe(), which says what an exception was without a Python repr.
Must not import docker, the store (the store imports this) or the CLI.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import struct
from datetime import datetime, timezone
from pathlib import Path

from envbuilder.errors import DockerError, EnvbuilderError

# SQLite's primary result codes (sqlite.org/rescode.html): the extended code's low byte.
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 10, 11, 13, 26
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_HEADER = b"SQLite format 3\x00"
_SIDE_FILES = ("-wal", "-shm", "-journal")


def disk_full_error(path: Path | str, what: str) -> DockerError:
    """`disk-full` for the file system under path. The code is the one Docker's own "no space left" gets
    (envbuilder.docker.diagnose), so scripts handle a full disk one way wherever it happens."""
    where = Path(path)
    return DockerError("disk-full", f"no space left on the device holding {where} while {what}",
                       f"free space there (or pass --data-dir on a larger disk); `envbuilder runs list` still "
                       f"works read-only", {"path": str(where)})


def is_disk_full(exc: BaseException, path: Path | str | None = None) -> bool:
    """Whether exc is the file system being full: ENOSPC/EDQUOT, SQLite's SQLITE_FULL, or an SQLite I/O
    error on a file system with no free blocks left (SQLite reports a failed write as a plain I/O error)."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return True
    if isinstance(exc, EnvbuilderError):
        return exc.code == "disk-full"
    if isinstance(exc, sqlite3.Error):
        code = _sqlite_code(exc)
        if code == _SQLITE_FULL or "database or disk is full" in str(exc):
            return True
        if (code == _SQLITE_IOERR or "disk I/O error" in str(exc)) and path is not None:
            return no_space_left(Path(path))
    return False


def no_space_left(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail == 0 or (info.f_files > 0 and info.f_favail == 0)


def is_corruption(exc: BaseException) -> bool:
    """Whether an SQLite error says the file is damaged or not a database (not a lock, not a full disk)."""
    if not isinstance(exc, sqlite3.DatabaseError) or isinstance(exc, sqlite3.OperationalError):
        return False
    return _sqlite_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or any(
        text in str(exc) for text in ("malformed", "not a database"))


def database_problem(path: Path) -> str | None:
    """What is wrong with the file at path as an SQLite database, from its first 100 bytes; None when nothing is
    (or it does not exist, or is empty: SQLite makes a new database there)."""
    if path.is_dir():
        return "it is a folder, not a file"
    try:
        size = path.stat().st_size
        if size == 0:
            return None
        with path.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if len(header) < 100 or not header.startswith(_HEADER):
        return "it is not an SQLite database"
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    pages, counter, valid_for = (struct.unpack(">I", header[o:o + 4])[0] for o in (28, 24, 92))
    # The header's page count is valid only when the two counters agree (sqlite.org/fileformat.html, 1.3.7);
    # with a non-empty WAL the newest pages may live there, so the file may legitimately be shorter.
    wal = Path(f"{path}-wal")
    if counter == valid_for and pages and size < pages * page_size and not (wal.exists() and wal.stat().st_size):
        return f"it is cut short ({size} of {pages * page_size} bytes)"
    return None


def move_aside(path: Path, now: datetime | None = None) -> Path:
    """Rename path (and its -wal/-shm files) to `<name>.damaged-YYYYMMDDTHHMMSSZ`; returns the new name."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.damaged-{stamp}")
    suffix = 1
    while backup.exists():
        suffix += 1
        backup = path.with_name(f"{path.name}.damaged-{stamp}-{suffix}")
    os.rename(path, backup)
    for side in _SIDE_FILES:
        extra = Path(f"{path}{side}")
        if extra.exists():
            os.rename(extra, Path(f"{backup}{side}"))
    return backup


def describe(exc: BaseException) -> str:
    """What happened, for a record or a message: our errors as they print, an OS error by its text, anything
    else as `Type: text` (never a Python repr)."""
    if isinstance(exc, EnvbuilderError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF

"""The one subprocess helper: run a command with a timeout, stream its lines, keep a tail for errors.

Every external program (probes, git, docker CLI, hadolint) goes through run_command so that a hung or
missing program becomes a CommandResult, never a hang or a traceback. Must not import docker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int | None  # None when the program was missing or timed out
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).rstrip()
        return "\n".join(text.splitlines()[-lines:])


def run_command(
    argv: Sequence[str],
    *,
    timeout: float | None = 30.0,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin_data: str | None = None,
    on_line: Callable[[str], None] | None = None,
    keep_lines: int = 2000,
) -> CommandResult:
    """Run argv (never through a shell). With on_line, stdout+stderr are merged and streamed line by line.

    A missing program gives missing=True; a timeout kills the whole process group and gives timed_out=True.
    Ctrl-C kills the child's process group and re-raises KeyboardInterrupt so callers can clean up.
    """
    argv = tuple(str(a) for a in argv)
    started = time.monotonic()
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if on_line else subprocess.PIPE,
            env=full_env,
            cwd=cwd,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        return CommandResult(argv, None, "", str(exc), time.monotonic() - started, missing=True)

    if on_line is None:
        try:
            out, err = proc.communicate(stdin_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            return CommandResult(argv, None, out or "", err or "", time.monotonic() - started, timed_out=True)
        except BaseException:
            _kill_group(proc)
            raise
        return CommandResult(argv, proc.returncode, out or "", err or "", time.monotonic() - started)

    kept: deque[str] = deque(maxlen=keep_lines)
    timed_out = threading.Event()

    def _watchdog() -> None:
        timed_out.set()
        _kill_group(proc)

    timer = threading.Timer(timeout, _watchdog) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        if stdin_data is not None and proc.stdin:
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            kept.append(line)
            on_line(line)
        proc.wait()
    except BaseException:  # Ctrl-C, or on_line failed (a closed pipe, a full disk): never leave the child running
        _kill_group(proc)
        raise
    finally:
        if timer:
            timer.cancel()
    return CommandResult(
        argv,
        None if timed_out.is_set() else proc.returncode,
        "\n".join(kept),
        "",
        time.monotonic() - started,
        timed_out=timed_out.is_set(),
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass

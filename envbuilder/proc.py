"""The one subprocess helper: run a command with a timeout, stream its lines, keep a tail for errors.

Every external program (probes, git, docker CLI, hadolint) goes through run_command so that a hung or
missing program becomes a CommandResult, never a hang or a traceback. The two that are not captured go through
here too: run_in_terminal (a program the user drives, `docker run -it`) and start_detached (a process that
outlives this one, a detached run's watcher). Must not import docker.
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


def run_in_terminal(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int | None:
    """Run argv on this process's own terminal (stdin, stdout, stderr inherited, same process group, so it can
    read the keyboard) and wait for it: its exit code, None when the program is missing.

    For programs the user drives (`docker run -it`). Ctrl-C belongs to the child while it runs: it decides
    what an interrupt means (the docker CLI passes it to the container), so this process waits on through it."""
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.Popen(list(argv), env=full_env)
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # pressed before SIGINT was ignored: the child got it too
                continue
    finally:
        signal.signal(signal.SIGINT, previous)


def start_detached(argv: Sequence[str], *, stdin_data: str, output: str | os.PathLike[str]) -> int:
    """Start argv in a session of its own that outlives this process (a watcher): stdin_data is written to its
    stdin, its output appended to `output`. Its process id; OSError when it cannot be started."""
    with open(output, "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    assert proc.stdin is not None
    try:
        proc.stdin.write(stdin_data.encode())
    finally:
        proc.stdin.close()
    # Reaped when it ends, should this process (a host application) live longer than the watcher.
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc.pid


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass

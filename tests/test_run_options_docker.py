"""The usual container options, for real (#10): `envbuilder shell` and `run -it` driven through a pseudo-terminal,
`run --detach` followed by `runs logs -f`, `--publish` reachable from the host, `--memory` and `--cpus` enforced,
and a progress bar redrawn with carriage returns stored as its last state. On the local base image, each in
seconds. Unit tests over FakeEngine: tests/test_run_options.py.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ENVBUILDER = [sys.executable, "-m", "envbuilder"]


@pytest.fixture
def project(tmp_path, base_image):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "marker.txt").write_text("from the project\n")
    return folder


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    monkeypatch.setenv("ENVBUILDER_HOME", str(path))
    return path


def on_terminal(argv: list[str], keys: list[tuple[bytes, bytes]], cwd: Path, timeout: float = 60) -> tuple[int, bytes]:
    """Run argv on a pseudo-terminal; for each (wait_for, type): read until wait_for shows, then type. Returns
    (exit code, everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: envbuilder on the terminal's slave side
        os.chdir(cwd)
        os.execv(argv[0], argv)
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        for wait_for, typed in keys:
            while wait_for not in seen:
                if time.monotonic() > deadline:
                    raise AssertionError(f"never saw {wait_for!r}; the terminal showed {seen.decode(errors='replace')!r}")
                ready, _, _ = select.select([fd], [], [], 0.2)
                if ready:
                    try:
                        seen += os.read(fd, 4096)
                    except OSError:  # the child closed the terminal
                        break
            os.write(fd, typed)
        while time.monotonic() < deadline:  # drain until the child exits and closes the terminal
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), seen
    finally:
        os.close(fd)


def test_shell_is_a_terminal_in_the_image_with_a_jobs_mounts_and_user(project, home, base_image):
    code, seen = on_terminal(
        [*ENVBUILDER, "shell", ".", "--image", base_image],
        [(b"/workspace/project", b'python -c "print(6*7)"\r'),
         (b"42\r\n", b"id -u; cat marker.txt; test -t 0 && echo on-a-tty; touch x 2>/dev/null || echo read-only\r"),
         (b"read-only", b"exit\r")],
        cwd=project)
    text = seen.decode(errors="replace")
    assert code == 0, text
    assert re.search(rf"[\r\n]{os.getuid()}\r\n", text), text  # the caller's uid, as a job runs
    assert "from the project" in text and "on-a-tty" in text
    run_id = next(word for word in text.split() if word.startswith("r-"))
    record = subprocess.run([*ENVBUILDER, "runs", "show", run_id, "--json"], capture_output=True, text=True, check=True)
    assert json.loads(record.stdout)["status"] == "completed"


def test_the_shells_exit_code_is_envbuilders(project, home, base_image):
    code, _ = on_terminal([*ENVBUILDER, "shell", ".", "--image", base_image], [(b"/workspace/project", b"exit 3\r")], cwd=project)
    assert code == 3


def test_run_it_gives_the_job_the_terminal(project, home, base_image):
    code, seen = on_terminal(
        [*ENVBUILDER, "run", ".", "-it", "--image", base_image, "--", "python", "-c",
         "import sys; print('tty' if sys.stdin.isatty() else 'pipe', input('name? ').upper())"],
        [(b"name? ", b"ada\r")], cwd=project)
    assert code == 0 and b"tty ADA" in seen, seen


def test_detach_returns_at_once_and_runs_logs_follows_the_run(cli, project, base_image):
    result = cli("run", str(project), "--detach", "--image", base_image, "--cpus", "1", "--", "python", "-c",
                 "import time; print('first loss=0.5', flush=True); time.sleep(4); print('last loss=0.25')")
    assert result.exit_code == 0, result.stderr
    run_id = result.stdout.strip()
    assert run_id.startswith("r-") and f"runs logs -f {run_id}" in result.stderr
    # it did not wait for the job, which is still running (and recorded so, by its watcher)
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "running"
    followed = cli("runs", "logs", "-f", run_id)
    assert followed.stdout == "first loss=0.5\nlast loss=0.25\n"
    record = json.loads(cli("runs", "show", run_id, "--json").stdout)
    assert record["status"] == "completed" and record["exit_code"] == 0
    assert record["args"]["cpus"] == 1.0


def test_publish_makes_the_port_reachable_from_the_host(cli, project, base_image):
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = cli("run", str(project), "-d", "--image", base_image, "--publish", f"127.0.0.1:{port}:8000", "--",
                 "python", "-m", "http.server", "8000")
    assert result.exit_code == 0, result.stderr
    run_id = result.stdout.strip()
    try:
        deadline, body = time.monotonic() + 20, None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/marker.txt", timeout=2) as response:
                    body = response.read()
            except OSError:
                time.sleep(0.2)
        assert body == b"from the project\n"
    finally:
        stopped = cli("runs", "stop", run_id)
    assert stopped.exit_code == 0, stopped.stderr
    assert json.loads(cli("runs", "show", run_id, "--json").stdout)["status"] == "stopped"


def test_a_job_over_its_memory_limit_is_recorded_as_such(cli, project, base_image):
    result = cli("run", str(project), "--image", base_image, "--memory", "32m", "--", "python", "-c",
                 "x = b'x' * (300 << 20)")
    assert result.exit_code == 137
    assert "more than its memory limit (--memory 32m)" in result.stderr


def test_a_progress_bar_is_stored_as_its_last_state(cli, project, base_image):
    result = cli("run", str(project), "--image", base_image, "--json", "--", "python", "-c",
                 "import sys, time\n"
                 "for i in range(1, 21):\n"
                 "    sys.stderr.write(f'\\r{i * 5:3d}%|' + '#' * i); sys.stderr.flush(); time.sleep(0.01)\n"
                 "sys.stderr.write('\\ndone\\n')")  # one stream: stdout and stderr have no order between them
    assert result.exit_code == 0, result.stderr
    log = Path(json.loads(result.stdout)["log_path"]).read_text()
    assert log.splitlines() == ["100%|" + "#" * 20, "done"]


def test_run_image_pulls_from_a_registry_and_a_failed_pull_is_diagnosed(cli, project, tmp_path, docker_engine):
    """A real registry on loopback (tests/support/registry.py). The image is a one-file `docker import` (pushing
    the base image would take far longer): pulling it is what is tested, not running it."""
    from support.registry import LocalRegistry, unavailable

    if unavailable():
        pytest.fail(unavailable())  # scripts/system-deps.sh installs it: a missing registry is a broken setup
    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    with LocalRegistry(tmp_path / "registry") as registry:
        ref = f"{registry.host}/tiny:1"
        docker_engine.import_image(rootfs, ref)
        subprocess.run(["docker", "push", ref], check=True, capture_output=True)
        docker_engine.remove_image(ref, force=True)
        assert docker_engine.image_inspect(ref) is None
        result = cli("run", str(project), "--image", ref, "--", "/hello.txt")
        assert f"envbuilder: pulling {ref} (not here yet)" in result.stderr.splitlines()
        assert docker_engine.image_inspect(ref) is not None  # pulled (the job itself cannot run: no program in it)
        docker_engine.remove_image(ref, force=True)
        missing = cli("run", str(project), "--image", f"{registry.host}/absent:1", "--", "true")
    assert missing.exit_code == 4
    assert missing.stderr.splitlines()[-1].startswith(f"envbuilder: image-not-found: pulling {registry.host}/absent:1")

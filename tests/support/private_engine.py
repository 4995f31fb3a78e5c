"""A private Docker engine for fault tests: one that a test may kill (SIGKILL) and start again.

It runs in its own network namespace (`unshare -n dockerd ...`), so its bridge, iptables rules and addresses can
never touch the host's docker0, with its own data root, exec root, socket and pid file. The shared engine at
/var/run/docker.sock is never touched, and dockerd is never given --bridge=none (on a shared host that
deletes docker0). The data root lives under /var/tmp so that the base image, loaded once with
`docker save | docker -H unix://S load` (~10 s), is reused by later sessions (a start then takes ~2 s).
Needs root, dockerd and unshare; the caller skips with the reason `unavailable()` gives.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(os.environ.get("ENVBUILDER_TEST_ENGINE_ROOT", "/var/tmp/envbuilder-fault-engine"))


def unavailable() -> str | None:
    """Why a private engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private Docker engine needs root (dockerd in its own network namespace)"
    for tool in ("dockerd", "unshare", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


class PrivateEngine:
    def __init__(self, root: Path = ROOT) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.pidfile = root / "docker.pid"
        self.log = root / "dockerd.log"
        self._lock = None
        self._process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def __enter__(self) -> "PrivateEngine":
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.root / "lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)  # one session at a time owns it
        self._kill_stale()
        self._unmount_build_roots()
        self.start()
        self._remove_containers()  # what an earlier session's failure left behind
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
            self._unmount_build_roots()
        finally:
            if self._lock is not None:
                self._lock.close()

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                ["unshare", "-n", "dockerd", "--data-root", str(self.root / "data"), "--exec-root",
                 str(self.root / "exec"), "-H", self.host, "--pidfile", str(self.pidfile)],
                stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"the private engine did not start; see {self.log}")

    def kill(self) -> None:
        """SIGKILL the engine and the containerd it manages, as a crash or the OOM killer would; the
        containers' shims live on (and the job with them), as they do on a real host."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(30)
        # A containerd left half shut down makes the next dockerd wait for it, then give up.
        self._kill_ours(self.root / "exec" / "containerd" / "containerd.pid")
        self._wait_socket_gone()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._remove_containers()
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)

    def _unmount_build_roots(self) -> None:
        """A build step's root file system stays mounted when the engine is killed under it: unmount ours."""
        prefix = f"{self.root / 'data' / 'buildkit' / 'executor'}/"
        for line in Path("/proc/self/mounts").read_text().splitlines():
            point = line.split()[1]
            if point.startswith(prefix):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)

    def _remove_containers(self) -> None:
        for container in self.docker("ps", "-aq", check=False).stdout.split():
            self.docker("rm", "-f", container, check=False)

    def load(self, image: str) -> None:
        """Make `image` (from the shared engine) available here, unless the same image id already is."""
        wanted = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", image], capture_output=True,
                                text=True, check=True).stdout.strip()
        have = self.docker("image", "inspect", "-f", "{{.Id}}", image, check=False).stdout.strip()
        if have == wanted:
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.host, "load", "-q"], stdin=save.stdout, check=True,
                       capture_output=True)
        save.wait(120)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", self.host, *args], capture_output=True, text=True, check=check,
                              timeout=120)

    def _kill_stale(self) -> None:
        """An engine left by a session that died: only ours (its command line names our folder)."""
        self._kill_ours(self.pidfile)
        self._kill_ours(self.root / "exec" / "containerd" / "containerd.pid")
        self._wait_socket_gone()

    def _kill_ours(self, pidfile: Path) -> None:
        """Kill the process the pid file names if it is ours, then remove the pid file: a zombie (or a reused
        pid) still answers kill(pid, 0), and dockerd would wait for that "running" containerd instead of
        starting its own."""
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            cmdline = ""
        if str(self.root) in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists() or _stat(pid).strip() == "Z":
                    break
                time.sleep(0.1)
        pidfile.unlink(missing_ok=True)

    def _wait_socket_gone(self) -> None:
        for _ in range(50):
            if self.docker("version", check=False).returncode != 0:
                return
            time.sleep(0.1)


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""

"""The Docker engine as a service: whether one answers (`engine_status`), starting one (`start_engine`), and
`check_engine`, the library function `envbuilder engine` calls.

The same steps as scripts/engine.sh, in Python so that an installed package (which has no scripts/) can start an
engine too: install Debian's docker.io when allowed, start dockerd detached, wait for it.
Must not import the docker SDK or the CLI.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.proc import run_command

DOCKER_SOCKET = Path("/var/run/docker.sock")
DOCKERD_LOG = Path(os.environ.get("ENVBUILDER_DOCKERD_LOG", "/var/log/envbuilder-dockerd.log"))
ENGINE_WAIT_S = 60.0


@dataclass(frozen=True)
class EngineStatus:
    running: bool
    server_version: str | None
    started: bool  # this call started (or installed) it
    build_cli: str | None = None  # the client used for BuildKit builds, "PATH (mode, version)"
    message: str = ""

    def to_json(self) -> dict:
        return {"running": self.running, "server_version": self.server_version, "started": self.started,
                "build_cli": self.build_cli, "message": self.message}

    def not_running_error(self) -> DockerError:
        return DockerError("docker-not-running", f"no Docker engine answers: {self.message}",
                           "run `envbuilder engine --start` (root) or start Docker yourself")


def check_engine(docker_binary: str | None = None, *, start: bool = False,
                 on_line: Callable[[str], None] | None = None) -> EngineStatus:
    """`envbuilder engine`: the engine's status, after starting it when asked to (start)."""
    return start_engine(docker_binary, on_line=on_line) if start else engine_status(docker_binary)


def engine_status(docker_binary: str | None = None) -> EngineStatus:
    """Whether an engine answers, its version, and which client would run builds."""
    from envbuilder.docker.buildkit import find_build_cli

    probe = run_command([docker_binary or "docker", "version", "--format", "{{.Server.Version}}"], timeout=20)
    if not probe.ok:
        return EngineStatus(False, None, False, message=probe.tail(2) or "docker is not installed")
    try:
        build_cli = find_build_cli(docker_binary).describe()
    except EnvbuilderError as exc:
        return EngineStatus(True, probe.stdout.strip(), False, None, exc.message)
    return EngineStatus(True, probe.stdout.strip(), False, build_cli)


def start_engine(docker_binary: str | None = None, *, on_line: Callable[[str], None] | None = None,
                 wait_s: float = ENGINE_WAIT_S) -> EngineStatus:
    """Make sure an engine answers: install docker.io (root only) and start dockerd detached when needed."""
    say = on_line or (lambda _line: None)
    status = engine_status(docker_binary)
    if status.running:
        return status
    if shutil.which("dockerd") is None:
        _install_docker_io(say)
    if not run_command(["pgrep", "-x", "dockerd"], timeout=10).ok:
        if os.geteuid() != 0:
            raise DockerError("engine-needs-root", "dockerd is not running and starting it needs root",
                                  "run `sudo envbuilder engine --start` or `sudo systemctl start docker`")
        for stale in (DOCKER_SOCKET, Path("/var/run/docker.pid")):
            stale.unlink(missing_ok=True)
        say(f"starting dockerd (log {DOCKERD_LOG}) ...")
        # Detached in its own session with its output in a file, so it outlives this process and no pipe
        # of ours keeps it (or us) waiting; the log path is an argument, never spliced into the script.
        run_command(["sh", "-c", 'setsid dockerd >"$1" 2>&1 </dev/null &', "sh", str(DOCKERD_LOG)], timeout=15)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        status = engine_status(docker_binary)
        if status.running:
            return EngineStatus(True, status.server_version, True, status.build_cli, status.message)
        time.sleep(0.5)
    raise DockerError("engine-start-failed", f"dockerd did not come up within {wait_s:.0f} s",
                          f"read {DOCKERD_LOG}", context={"log_tail": _log_tail()})


def _install_docker_io(say: Callable[[str], None]) -> None:
    if os.geteuid() != 0 or os.environ.get("ENVBUILDER_NO_INSTALL"):
        raise DockerError("engine-missing", "no Docker engine is installed",
                              "install docker.io (or Docker CE) and start it")
    say("installing docker.io ...")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "docker.io"]):
        result = run_command(argv, env=env, timeout=900)
        if not result.ok:
            raise DockerError("engine-install-failed", f"{' '.join(argv)} failed: {result.tail(1)}",
                                  "install docker.io yourself")


def _log_tail(lines: int = 20) -> str:
    try:
        return "\n".join(DOCKERD_LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""

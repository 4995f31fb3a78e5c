"""Interactive runs (`envbuilder shell`, `run -it`): the RunSpec's container on the user's terminal.

Owns docker_cli_argv (a RunSpec as a `docker run -i[t]` command line: the same mounts, user, variables, GPUs,
limits and labels as a followed job) and run_interactive, which runs it on this process's terminal.

Why the docker CLI rather than the Engine API: a terminal session needs the TTY attach (a hijacked HTTP
connection), raw mode on the local terminal, window-size changes forwarded (SIGWINCH), stdin closed right and
the detach keys; the docker CLI does all of it, on every platform it supports, and is installed wherever the
engine is. Doing it again here would be a second, weaker terminal client.
Must not import the docker SDK, pydantic or the CLI.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

from envbuilder.errors import DockerError
from envbuilder.run.spec import RunSpec

# A shell that exists in any image: bash when it is there, else POSIX sh.
DEFAULT_SHELL = ("sh", "-c", 'if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi')

# Variables the docker CLI reads itself: their values for the container go on its command line, not in its
# environment, or `HOME=/tmp` would move the CLI's own config (auth, contexts) away.
_CLI_OWN = ("HOME", "PATH", "USER", "TMPDIR", "XDG_CONFIG_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR",
            "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def docker_cli_argv(spec: RunSpec, run_id: str, *, docker: str, tty: bool) -> tuple[list[str], dict[str, str]]:
    """(argv, variables for the CLI's environment) of `docker run --rm -i[t]` carrying out spec.

    A variable's value goes through the CLI's environment (`-e NAME`), so a secret from --env-file never shows
    in the process list; the few the CLI itself reads (_CLI_OWN, DOCKER_*) go on the command line."""
    argv = [docker, "run", "--rm", "-i", *(["-t"] if tty else []), "--init"]
    for key, value in spec.labels(run_id).items():
        argv += ["--label", f"{key}={value}"]
    for source, target, read_only in spec.container_mounts():
        fields = ["type=bind", f"source={source}", f"target={target}"] + (["readonly"] if read_only else [])
        argv += ["--mount", ",".join(_csv_field(f) for f in fields)]
    passed: dict[str, str] = {}
    for name, value in spec.env.items():
        if name in _CLI_OWN or name.startswith(("DOCKER_", "BUILDX_")):
            argv += ["--env", f"{name}={value}"]
        else:
            argv += ["--env", name]
            passed[name] = value
    argv += ["--user", spec.user, "--workdir", spec.workdir, "--shm-size", spec.shm_size]
    if spec.gpus is not None:
        argv += ["--gpus", str(spec.gpus)]
    if spec.network:
        argv += ["--network", spec.network]
    for port in spec.publish:
        argv += ["--publish", str(port)]
    if spec.cpus is not None:
        argv += ["--cpus", f"{spec.cpus:g}"]
    if spec.memory is not None:
        argv += ["--memory", spec.memory]
    return [*argv, spec.image, *spec.argv], passed


def _csv_field(field: str) -> str:
    """--mount is read as CSV: a path with a comma or a quote is quoted, as encoding/csv expects."""
    return f'"{field.replace(chr(34), chr(34) * 2)}"' if ("," in field or '"' in field) else field


def find_docker_cli(preferred: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The docker CLI to run a terminal session with: `preferred` (--docker), else `docker` on PATH."""
    found = shutil.which(preferred or "docker", path=environ.get("PATH"))
    if found is None:
        raise DockerError("docker-cli-missing", f"no docker CLI found ({preferred or 'docker'} is not on PATH); "
                          "an interactive session runs through it",
                          "install the docker CLI (Debian: docker.io), or pass --docker PATH")
    return found


def run_interactive(spec: RunSpec, run_id: str, *, stdin_is_terminal: bool | None = None) -> int:
    """Run spec's container on this terminal until it exits; its exit code. With no terminal on stdin (a
    pipe, a script), the container gets stdin without a TTY, as `docker run -i` does."""
    from envbuilder.proc import run_in_terminal

    docker = find_docker_cli(spec.docker_cli)
    tty = sys.stdin.isatty() if stdin_is_terminal is None else stdin_is_terminal
    argv, env = docker_cli_argv(spec, run_id, docker=docker, tty=tty)
    code = run_in_terminal(argv, env=env)
    if code is None:
        raise DockerError("docker-cli-missing", f"cannot run {docker}", "pass --docker PATH naming a docker CLI")
    return code

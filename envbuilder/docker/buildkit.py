"""BuildKit builds through a docker CLI: which client can run them (`find_build_cli`), what one build asks for
(`BuildRequest`) and running it (`run_build`).

Builds go through a CLI (buildx when it is installed, else a client with built-in BuildKit, such as Debian's
20.10 `/usr/bin/docker`), not through the Engine API, because that is where secrets, cache mounts and host
networking live. Must not import the docker SDK or the CLI.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envbuilder.docker.diagnose import diagnose_docker
from envbuilder.errors import DockerError
from envbuilder.proc import CommandResult, run_command

# Clients older than 23.0 run BuildKit themselves when DOCKER_BUILDKIT=1; newer ones need buildx.
_BUILTIN_BUILDKIT_MAX_MAJOR = 22


@dataclass(frozen=True)
class BuildCli:
    """A docker client that can run BuildKit builds, and how to invoke it."""

    binary: str
    mode: str  # "buildx" | "builtin"
    client_version: str

    def build_argv(self) -> list[str]:
        return [self.binary, "buildx", "build", "--load"] if self.mode == "buildx" else [self.binary, "build"]

    def env(self) -> dict[str, str]:
        return {"DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}

    def describe(self) -> str:
        return f"{self.binary} ({self.mode}, {self.client_version})"


@dataclass(frozen=True)
class BuildRequest:
    dockerfile: Path
    context: Path
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, Path] = field(default_factory=dict)  # BuildKit secret id -> file
    network: str | None = None  # "host" to reach mirrors on loopback
    labels: Mapping[str, str] = field(default_factory=dict)
    no_cache: bool = False


def find_build_cli(preferred: str | None = None) -> BuildCli:
    """Pick the docker CLI for builds: the user's choice, else the first candidate that can do BuildKit."""
    candidates = [preferred] if preferred else _candidate_binaries()
    reasons: list[str] = []
    for binary in candidates:
        found = shutil.which(binary) if binary else None
        if not found:
            reasons.append(f"{binary}: not found")
            continue
        version = run_command([found, "version", "--format", "{{.Client.Version}}"], timeout=15)
        client_version = version.stdout.strip().splitlines()[0] if version.stdout.strip() else "?"
        if run_command([found, "buildx", "version"], timeout=15).ok:
            return BuildCli(found, "buildx", client_version)
        major = _major(client_version)
        if major is not None and major <= _BUILTIN_BUILDKIT_MAX_MAJOR:
            return BuildCli(found, "builtin", client_version)
        reasons.append(f"{found} (client {client_version}): no buildx plugin and no built-in BuildKit")
    raise DockerError(
        "buildkit-missing",
        "no docker client that can run BuildKit builds: " + "; ".join(reasons),
        "install docker buildx, or pass --docker PATH (ENVBUILDER_DOCKER) naming a client older than 23.0",
    )


def _candidate_binaries() -> list[str]:
    seen: list[str] = []
    for name in ("docker", "/usr/bin/docker", "/usr/local/bin/docker"):
        path = shutil.which(name)
        if path and os.path.realpath(path) not in {os.path.realpath(s) for s in seen}:
            seen.append(path)
    return seen or ["docker"]


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def build_argv(cli: BuildCli, request: BuildRequest) -> list[str]:
    """The command line of one build; sorted so that the same request always gives the same argv."""
    argv = cli.build_argv() + ["--progress=plain", "-f", str(request.dockerfile), "-t", request.tag]
    for key, value in sorted(request.build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for secret_id, path in sorted(request.secrets.items()):
        argv += ["--secret", f"id={secret_id},src={path}"]
    for key, value in sorted(request.labels.items()):
        argv += ["--label", f"{key}={value}"]
    if request.network:
        argv += ["--network", request.network]
    if request.no_cache:
        argv.append("--no-cache")
    argv.append(str(request.context))
    return argv


def run_build(cli: BuildCli, request: BuildRequest, *, on_line: Callable[[str], None],
              timeout: float | None = None) -> CommandResult:
    """Run one BuildKit build, streaming its plain progress lines. Raises a diagnosed DockerError on failure."""
    result = run_command(build_argv(cli, request), env=cli.env(), timeout=timeout, on_line=on_line, keep_lines=400)
    if not result.ok:
        if result.timed_out:
            raise DockerError("build-timeout", f"the build ran past {timeout:.0f} s", "raise --timeout or check the log")
        raise diagnose_docker(result.stdout, what="docker build")
    return result

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
    driver: str = "docker"  # buildx's builder driver; "docker" (the engine's own BuildKit) for builtin
    platforms: tuple[str, ...] = ()  # what the builder can build for ("linux/amd64", ...); () unknown

    @property
    def exports_cache(self) -> bool:
        """Whether the build itself can write a registry cache (--cache-to type=registry): buildx with a
        docker-container (or kubernetes, remote) builder. The engine's own BuildKit only embeds an inline cache."""
        return self.mode == "buildx" and self.driver != "docker"

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
    cache_from: tuple[str, ...] = ()  # images (or registry caches) whose layers the build may reuse
    cache_to: str | None = None  # where the build's cache goes: a registry cache, or the image itself (inline)
    platform: str | None = None  # "linux/arm64": build for another platform (buildx)


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
            driver, platforms = _buildx_builder(found)
            return BuildCli(found, "buildx", client_version, driver, platforms)
        major = _major(client_version)
        if major is not None and major <= _BUILTIN_BUILDKIT_MAX_MAJOR:
            return BuildCli(found, "builtin", client_version)
        reasons.append(f"{found} (client {client_version}): no buildx plugin and no built-in BuildKit")
    raise DockerError(
        "buildkit-missing",
        "no docker client that can run BuildKit builds: " + "; ".join(reasons),
        "install docker buildx, or pass --docker PATH (ENVBUILDER_DOCKER) naming a client older than 23.0",
    )


def _buildx_builder(binary: str) -> tuple[str, tuple[str, ...]]:
    """(driver, platforms) of the current buildx builder, from `docker buildx inspect`."""
    found = run_command([binary, "buildx", "inspect"], timeout=30)
    return parse_buildx_inspect(found.stdout if found.ok else "")


def parse_buildx_inspect(text: str) -> tuple[str, tuple[str, ...]]:
    """`docker buildx inspect` text -> (driver, platforms); ("docker", ()) when it says neither."""
    driver, platforms = "docker", ()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Driver" and value.strip():
            driver = value.strip()
        elif name.strip() == "Platforms" and value.strip():
            platforms = tuple(p.strip().rstrip("*") for p in value.split(",") if p.strip())
    return driver, platforms


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
    argv += cache_argv(cli, request)
    if request.platform:
        argv += ["--platform", request.platform]
    argv.append(str(request.context))
    return argv


def native_platform() -> str:
    """This machine's platform in Docker's spelling (linux/amd64, linux/arm64)."""
    import platform

    machine = platform.machine().lower()
    return "linux/" + {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def check_platform(cli: BuildCli, wanted: str) -> None:
    """Raise platform-unsupported when this client's builder cannot build for `wanted`."""
    if wanted == native_platform():
        return
    if cli.mode != "buildx":
        raise DockerError(
            "platform-unsupported",
            f"{cli.describe()} builds only for this machine ({native_platform()}), not {wanted}: building for "
            "another platform needs buildx",
            "install docker buildx and QEMU emulators (binfmt), or build on a machine of that platform "
            "(its image can then be reused from the registry with --push)")
    if cli.platforms and wanted not in cli.platforms:
        raise DockerError(
            "platform-unsupported",
            f"the buildx builder ({cli.driver}) cannot build for {wanted}; it builds for {', '.join(cli.platforms)}",
            "install QEMU emulators for it (binfmt), use a builder with a native node of that platform, or build "
            "on such a machine and reuse its image through the registry")


def cache_argv(cli: BuildCli, request: BuildRequest) -> list[str]:
    """--cache-from/--cache-to for this client. A registry cache (every layer, mode=max) where the builder can
    export one; else an inline cache (BUILDKIT_INLINE_CACHE=1: the image's config carries the cache metadata,
    and the engine's build pushes the image under the cache reference), which the engine's own BuildKit and
    buildx's docker driver read back through --cache-from."""
    argv: list[str] = []
    for ref in request.cache_from:
        argv += ["--cache-from", f"type=registry,ref={ref}" if cli.mode == "buildx" else ref]
    if request.cache_to:
        if cli.exports_cache:
            argv += ["--cache-to", f"type=registry,ref={request.cache_to},mode=max"]
        elif cli.mode == "buildx":
            argv += ["--cache-to", "type=inline"]
        else:
            argv += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    return argv


def run_build(cli: BuildCli, request: BuildRequest, *, on_line: Callable[[str], None],
              timeout: float | None = None, docker_host: str | None = None) -> CommandResult:
    """Run one BuildKit build, streaming its plain progress lines. Raises a diagnosed DockerError on failure.
    docker_host: the engine to build on (the engine object's own), else whatever DOCKER_HOST names."""
    env = {**cli.env(), **({"DOCKER_HOST": docker_host} if docker_host else {})}
    result = run_command(build_argv(cli, request), env=env, timeout=timeout, on_line=on_line, keep_lines=400)
    if not result.ok:
        if result.timed_out:
            raise DockerError("build-timeout", f"the build ran past {timeout:.0f} s", "raise --timeout or check the log")
        raise diagnose_docker(result.stdout, what="docker build")
    return result

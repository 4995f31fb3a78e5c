"""The one Docker wrapper.

BuildKit builds go through a docker CLI (buildx when it is installed, else a client with built-in BuildKit,
such as Debian's 20.10 `/usr/bin/docker`), because that is where secrets, cache mounts and host networking
live. Everything else (images, containers, logs) goes through the docker SDK, imported lazily so that
`envbuilder --help` never loads it. Docker failures become typed errors through errors.diagnose_docker.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from envbuilder.errors import EXIT_DOCKER, DockerError, EnvbuilderError, diagnose_docker
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
    raise EnvbuilderError(
        "buildkit-missing",
        "no docker client that can run BuildKit builds: " + "; ".join(reasons),
        "install docker buildx, or pass --docker PATH (ENVBUILDER_DOCKER) naming a client older than 23.0",
        exit_code=EXIT_DOCKER,
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


class Docker:
    """Docker for one process: a lazily connected SDK client plus the build CLI."""

    def __init__(self, docker_binary: str | None = None, *, timeout: int = 120) -> None:
        self._docker_binary = docker_binary
        self._timeout = timeout

    # --- SDK ---------------------------------------------------------------------------------------
    @cached_property
    def client(self) -> Any:
        import docker  # deferred: heavy import, and only commands that touch Docker need it

        try:
            client = docker.from_env(timeout=self._timeout)
            client.ping()
            return client
        except Exception as exc:  # the SDK raises several types for "no engine"
            raise diagnose_docker(str(exc), what="connecting to Docker") from None

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        import docker.errors

        try:
            return fn()
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise diagnose_docker(str(exc.explanation or exc), what=what) from None
        except docker.errors.DockerException as exc:
            raise diagnose_docker(str(exc), what=what) from None

    def image_inspect(self, ref: str) -> dict | None:
        """The image's inspect dict, or None when it does not exist locally."""
        import docker.errors

        try:
            return self._call(f"inspecting {ref}", lambda: self.client.api.inspect_image(ref))
        except docker.errors.NotFound:
            return None

    def image_exists(self, ref: str) -> bool:
        return self.image_inspect(ref) is not None

    def tag(self, image: str, ref: str) -> None:
        repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        self._call(f"tagging {ref}", lambda: self.client.api.tag(image, repo, tag, force=True))

    def import_image(self, tarball: Path, ref: str, *, changes: Iterable[str] = ()) -> str:
        """`docker import`: make an image from a root-filesystem tarball, with Dockerfile `changes`. Returns its id."""
        repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        self._call(
            f"importing {ref}",
            lambda: self.client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=list(changes)),
        )
        info = self.image_inspect(ref)
        if info is None:
            raise DockerError("import-failed", f"docker import did not produce {ref}", "rerun with -v", exit_code=EXIT_DOCKER)
        return info["Id"]

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        import docker.errors

        try:
            self._call(f"removing {ref}", lambda: self.client.api.remove_image(ref, force=force))
        except docker.errors.NotFound:
            pass

    def run_detached(
        self,
        image: str,
        command: list[str],
        *,
        name: str | None = None,
        mounts: Iterable[tuple[str, str, bool]] = (),  # (host path, container path, read_only)
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        gpus: str | int | None = None,  # "all", a count, or None
        shm_size: str | None = None,
        labels: Mapping[str, str] | None = None,
        network: str | None = None,
    ) -> str:
        """Start a container in the background and return its id."""
        from docker.types import DeviceRequest, Mount

        device_requests = None
        if gpus not in (None, "none", 0):
            count = -1 if gpus == "all" else int(gpus)
            device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
        container = self._call(
            f"starting a container of {image}",
            lambda: self.client.containers.run(
                image,
                command,
                name=name,
                detach=True,
                mounts=[Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in mounts],
                environment=dict(env or {}),
                user=user,
                working_dir=workdir,
                device_requests=device_requests,
                shm_size=shm_size,
                labels=dict(labels or {}),
                network_mode=network,
                init=True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
            ),
        )
        return container.id

    def container_state(self, container_id: str) -> dict | None:
        """The container's State dict (Status, ExitCode, …), or None when it no longer exists."""
        import docker.errors

        try:
            info = self._call("inspecting a container", lambda: self.client.api.inspect_container(container_id))
        except docker.errors.NotFound:
            return None
        return info.get("State")

    def stream_logs(self, container_id: str, on_line: Callable[[str], None]) -> None:
        """Follow the container's output until it exits, calling on_line for each line."""
        stream = self._call("reading logs", lambda: self.client.api.logs(container_id, stream=True, follow=True))
        pending = b""
        for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                on_line(line.decode("utf-8", "replace").rstrip("\r"))
        if pending:
            on_line(pending.decode("utf-8", "replace").rstrip("\r"))

    def wait(self, container_id: str) -> int:
        result = self._call("waiting for a container", lambda: self.client.api.wait(container_id))
        return int(result.get("StatusCode", -1))

    def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the grace period (docker stop semantics)."""
        import docker.errors

        try:
            self._call("stopping a container", lambda: self.client.api.stop(container_id, timeout=int(grace_s)))
        except docker.errors.NotFound:
            pass

    def remove_container(self, container_id: str) -> None:
        import docker.errors

        try:
            self._call("removing a container", lambda: self.client.api.remove_container(container_id, force=True))
        except docker.errors.NotFound:
            pass

    def containers_labelled(self, key: str, value: str) -> list[str]:
        """Ids of every container (any state, created included) with label key=value."""
        found = self._call(
            "listing containers",
            lambda: self.client.api.containers(all=True, quiet=True, filters={"label": f"{key}={value}"}),
        )
        return [item["Id"] for item in found]

    # --- CLI (BuildKit) ----------------------------------------------------------------------------
    @cached_property
    def build_cli(self) -> BuildCli:
        return find_build_cli(self._docker_binary)

    def build(self, request: BuildRequest, *, on_line: Callable[[str], None], timeout: float | None = None) -> CommandResult:
        """Run one BuildKit build, streaming its plain progress lines. Raises a diagnosed DockerError on failure."""
        cli = self.build_cli
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
        result = run_command(argv, env=cli.env(), timeout=timeout, on_line=on_line, keep_lines=400)
        if not result.ok:
            if result.timed_out:
                raise DockerError("build-timeout", f"the build ran past {timeout:.0f} s", "raise --timeout or check the log", exit_code=EXIT_DOCKER)
            raise diagnose_docker(result.stdout, what="docker build")
        return result

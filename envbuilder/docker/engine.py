"""The one Docker engine interface: `Engine`, every operation the rest of envbuilder asks of Docker, and
`open_engine` (also called `Docker`), which picks its implementation once.

A container's lifecycle and image work go, on a local engine, through `SocketEngine` (socket_engine.py): a small
Engine API client on the standard library over the unix socket, because importing the docker SDK alone
(requests, urllib3: ~0.1-0.15 s) costs more than everything else `envbuilder run --image` adds to a `docker run`.
Remote or TLS engines (tcp://, ssh://, DOCKER_TLS_VERIFY, another DOCKER_CONTEXT) go through `SdkEngine`
(sdk_engine.py), imported only when chosen. Builds go through a docker CLI (buildkit.py) with either.

Both build on `EngineBase` (base_engine.py). Docker failures from either become typed errors through diagnose.diagnose_docker.
Must not import the docker SDK, requests, urllib3 or the CLI: `envbuilder run --image` and `--help` load this.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

if TYPE_CHECKING:
    from envbuilder.docker.buildkit import BuildRequest
    from envbuilder.proc import CommandResult

DEFAULT_SOCKET = "/var/run/docker.sock"
TRANSPORTS = ("auto", "socket", "sdk")


class Engine(Protocol):
    """Every Docker operation envbuilder uses. Failures are diagnosed DockerErrors; "missing" answers are None
    where a method says so, and removing or stopping what is already gone is no error."""

    @property
    def transport(self) -> str:
        """"socket" or "sdk": what talks to the engine."""
        ...

    def ping(self) -> None:
        """Connect now: raises the diagnosed DockerError (docker-not-running, ...) when no engine answers."""
        ...

    def image_inspect(self, ref: str) -> dict | None:
        """The image's inspect dict, or None when it does not exist locally."""
        ...

    def tag(self, image: str, ref: str) -> None: ...

    def import_image(self, tarball: Path, ref: str, *, changes: Iterable[str] = ()) -> str:
        """`docker import`: make an image from a root-filesystem tarball, with Dockerfile `changes`; its id."""
        ...

    def remove_image(self, ref: str, *, force: bool = False) -> None: ...

    def save_images(self, refs: Sequence[str]) -> Iterator[bytes]:
        """`docker save`: one docker-archive tar of the images with their tags (shared layers once), streamed."""
        ...

    def load_images(self, data: BinaryIO) -> tuple[str, ...]:
        """`docker load` from a docker-archive tar stream; what the engine loaded (tags, or ids when untagged)."""
        ...

    def build(self, request: BuildRequest, *, on_line: Callable[[str], None],
              timeout: float | None = None) -> CommandResult:
        """Run one BuildKit build, streaming its plain progress lines."""
        ...

    def push(self, ref: str, *, on_line: Callable[[str], None] | None = None) -> str:
        """`docker push REF` (auth as pull); the manifest digest the registry stored, "sha256:..."."""
        ...

    def registry_digest(self, ref: str) -> str | None:
        """The manifest digest the registry holds for REF (the engine asks the registry, GET
        /distribution/REF/json, with the engine's TLS trust and the config's auth); None when it has no such tag."""
        ...

    def login(self, registry: str, username: str, password: str) -> str:
        """`docker login REGISTRY -u USER --password-stdin`: checks the credentials and stores them in Docker's
        config (or its credential helper). The password goes on stdin only. The docker CLI's answer."""
        ...

    def run_detached(self, image: str, command: list[str], *, name: str | None = None,
                     mounts: Iterable[tuple[str, str, bool]] = (), env: Mapping[str, str] | None = None,
                     user: str | None = None, workdir: str | None = None, gpus: str | int | None = None,
                     shm_size: str | None = None, labels: Mapping[str, str] | None = None,
                     network: str | None = None, attach: bool = False,
                     ports: Iterable[tuple[str, int, int, str]] = (), cpus: float | None = None,
                     memory: str | None = None, while_creating: Callable[[], None] | None = None) -> str:
        """Start a container in the background (pulling a missing image first); its id. A container the engine
        created but would not start (no NVIDIA runtime, a port in use) is removed before the error is raised.

        ports: (host IP, "" for every interface as `docker run -p` does; host port; container port; tcp|udp)
        published; cpus: `docker run --cpus`; memory: `docker run --memory`, in Docker's size syntax.
        while_creating: called once before the container starts, while the engine creates it where the engine
        allows (the socket engine; the SDK engine calls it first): work that must come before the start but need
        not delay the creation, such as recording the run. If it raises, the container is removed and its
        exception is raised."""
        ...

    def pull(self, ref: str, *, what: str | None = None) -> None:
        """`docker pull` with the registry auth of Docker's own config; failures are diagnosed DockerErrors."""
        ...

    def run_once(self, image: str, command: list[str], **run_options: Any) -> tuple[int, list[str]]:
        """Run a throwaway container to completion: (exit code, every output line)."""
        ...

    def container_state(self, container_id: str) -> dict | None:
        """The container's State dict (Status, ExitCode, ...), or None when it no longer exists."""
        ...

    def stream_logs(self, container_id: str, on_line: Callable[[str], None],
                    on_progress: Callable[[str], None] | None = None) -> None:
        """Follow the container's output until it exits, one call of on_line per line; a line redrawn with
        carriage returns (a progress bar) comes once, in its last state, and each earlier state to on_progress."""
        ...

    def log_lines(self, container_id: str) -> list[str]:
        """Everything the container has written so far, split as stream_logs splits it."""
        ...

    def follow_to_exit(self, container_id: str, on_line: Callable[[str], None],
                       on_progress: Callable[[str], None] | None = None) -> int:
        """Every line of the container's output until it exits (split as stream_logs splits it); its exit code."""
        ...

    def wait(self, container_id: str) -> int: ...

    def stop(self, container_id: str, grace_s: float = 10.0) -> None: ...

    def kill(self, container_id: str, signal: str = "KILL") -> None: ...

    def remove_container(self, container_id: str) -> None: ...

    def containers_labelled(self, key: str, value: str) -> list[str]:
        """Ids of every container (any state, created included) with label key=value."""
        ...

    def images_labelled(self, key: str, value: str | None = None) -> list[dict]:
        """`docker images --filter label=key[=value]`: each image's summary (Id, RepoTags, Created, Size, Labels)."""
        ...


def local_socket(environ: Mapping[str, str] = os.environ) -> str | None:
    """The unix socket of the engine DOCKER_HOST names when it is local and plain (no TLS, no other context)
    and the socket exists; None means a remote or TLS engine, or none at all: the SDK handles those."""
    host = environ.get("DOCKER_HOST", "")
    if environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CONTEXT", "default") != "default":
        return None
    if not host:
        path = DEFAULT_SOCKET
    elif host.startswith("unix://"):
        path = host[len("unix://"):]
    else:
        return None
    try:
        return path if stat.S_ISSOCK(os.stat(path).st_mode) else None
    except OSError:
        return None


def open_engine(docker_binary: str | None = None, *, timeout: int = 120, transport: str = "auto") -> Engine:
    """The engine for this process. transport: "auto" (the socket client when the engine is local and plain,
    see local_socket(); else the SDK), "socket" or "sdk". Both give the same results and the same typed errors.
    docker_binary: the docker CLI builds use (None: the first one that can run BuildKit)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
    path = None if transport == "sdk" else local_socket()
    if path is None and transport == "socket":
        host = os.environ.get("DOCKER_HOST", "")
        path = host[len("unix://"):] if host.startswith("unix://") else DEFAULT_SOCKET
    if path is not None:
        from envbuilder.docker.socket_engine import SocketEngine

        return SocketEngine(path, docker_binary=docker_binary, timeout=timeout)
    from envbuilder.docker.sdk_engine import SdkEngine

    return SdkEngine(docker_binary=docker_binary, timeout=timeout)


def Docker(docker_binary: str | None = None, *, timeout: int = 120, transport: str = "auto") -> Engine:  # noqa: N802
    """The name callers have always constructed: the engine open_engine() chooses. It looks open_engine up when
    called, so that open_engine stays the one place an engine is chosen (tests put a fake engine there)."""
    return open_engine(docker_binary, timeout=timeout, transport=transport)

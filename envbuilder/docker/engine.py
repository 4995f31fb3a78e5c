"""The one Docker wrapper.

BuildKit builds go through a docker CLI (buildx when it is installed, else a client with built-in BuildKit,
such as Debian's 20.10 `/usr/bin/docker`), because that is where secrets, cache mounts and host networking
live. A container's lifecycle (create, start, logs, wait, stop, kill, inspect, remove, list) and image
inspection go, on a local engine, through `EngineSocket`: a small Engine API client built on the standard
library over the unix socket, because importing the docker SDK alone (requests, urllib3: ~0.1-0.15 s) costs
more than everything else `envbuilder run --image` adds to a `docker run`. Remote or TLS engines (tcp://,
ssh://, DOCKER_TLS_VERIFY, another DOCKER_CONTEXT), and the rest of the image work (tag, import, remove,
pull), go through the docker SDK, imported lazily so that `envbuilder --help` never loads it.
Docker failures from either become typed errors through errors.diagnose_docker. Must not import the CLI.
"""

from __future__ import annotations

import hashlib

import functools
import json
import os
import re
import shutil
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
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


# --- the local engine's socket, without the SDK ----------------------------------------------------------

DEFAULT_SOCKET = "/var/run/docker.sock"
# The Engine API version these requests were written against: Docker 20.10's. Every field used here
# (DeviceRequests since 1.40, Init since 1.25) means the same in later versions.
PREFERRED_API_VERSION = "1.41"
TRANSPORTS = ("auto", "socket", "sdk")
_LOG_READ_BYTES = 1 << 16
_FRAME_HEADER = 8  # stream type (1 byte), 3 zero bytes, payload size (uint32, big-endian)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s?([kmgtp]?)i?b?$", re.IGNORECASE)


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


def pick_api_version(server: str | None, server_min: str | None) -> str:
    """The API version to speak: ours (1.41) when the engine accepts it, else the nearest it accepts."""
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    if server and key(server) < key(PREFERRED_API_VERSION):
        return server
    if server_min and key(server_min) > key(PREFERRED_API_VERSION):
        return server_min
    return PREFERRED_API_VERSION


def size_bytes(size: str | int) -> int:
    """Docker's size syntax (`--shm-size 2g`, go-units RAMInBytes: powers of 1024, optional i and b) in bytes."""
    if isinstance(size, int):
        return size
    match = _SIZE.match(size.strip())
    if not match:
        raise DockerError("bad-size", f"invalid size {size!r}", "use Docker's size syntax, like 512m or 2g", exit_code=EXIT_DOCKER)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def demux_frames(buffer: bytearray) -> bytes:
    """The payloads of the complete frames at the start of a non-TTY attach/logs stream, removed from buffer.

    stdout and stderr frames are joined in arrival order, as the SDK's log stream yields them."""
    return b"".join(payload for _, payload in demux_stream_frames(buffer))


def demux_stream_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """(stream, payload) of the complete frames at the start of buffer, removed from it (1 stdout, 2 stderr)."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while len(buffer) - offset >= _FRAME_HEADER:
        size = int.from_bytes(buffer[offset + 4 : offset + _FRAME_HEADER], "big")
        if len(buffer) - offset - _FRAME_HEADER < size:
            break
        frames.append((buffer[offset], bytes(buffer[offset + _FRAME_HEADER : offset + _FRAME_HEADER + size])))
        offset += _FRAME_HEADER + size
    del buffer[:offset]
    return frames


def _demuxed(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        yield from demux_stream_frames(buffer)
    if len(buffer) > _FRAME_HEADER:  # a frame cut short by the engine: what arrived of it
        yield buffer[0], bytes(buffer[_FRAME_HEADER:])


@functools.cache
def _unix_connection_class() -> type:
    import http.client  # deferred: ~20 ms, and only commands that talk to the engine need it

    class UnixHTTPConnection(http.client.HTTPConnection):
        """HTTP/1.1 over a unix socket (keep-alive as usual; the host name is only for the Host header)."""

        def __init__(self, path: str, timeout: float | None) -> None:
            super().__init__("localhost", timeout=timeout)
            self.socket_path = path
            self.requests = 0

        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    return UnixHTTPConnection


class EngineSocket:
    """A minimal Docker Engine API client on the standard library: JSON over HTTP/1.1 on the engine's unix
    socket, idle connections kept alive for reuse (one per request in flight, so threads may share it), the
    API version negotiated once (GET /version). Errors: HTTP status >= 400 becomes a diagnosed DockerError
    naming what was being done, with 404 answered as None where the caller asks for it (missing_ok)."""

    def __init__(self, path: str, *, timeout: float | None = 120) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @cached_property
    def version(self) -> str:
        info = self.call("GET", "/version", what="connecting to Docker", versioned=False) or {}
        return pick_api_version(info.get("ApiVersion"), info.get("MinAPIVersion"))

    def call(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None, body: Any = None,
             timeout: float | None | str = "default", missing_ok: bool = False, versioned: bool = True) -> Any:
        """One request; its JSON answer (None for an empty one, or for a 404 when missing_ok)."""
        response, conn = self._send(method, path, what=what, query=query, body=body, timeout=timeout, versioned=versioned)
        try:
            data = response.read()
        except OSError as exc:  # timed out, or the engine went away
            conn.close()
            raise self._unreachable(exc, what) from None
        except BaseException:
            conn.close()
            raise
        self._release(conn, response)
        if response.status >= 400:
            if response.status == 404 and missing_ok:
                return None
            raise diagnose_docker(_error_message(response.status, data), what=what)
        return json.loads(data) if data.strip() else None

    def stream(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None) -> Iterator[bytes]:
        """A streaming request (no read timeout): its body as it arrives, chunked transfer decoded."""
        response, conn = self._send(method, path, what=what, query=query, body=None, timeout=None, versioned=True)
        if response.status >= 400:
            data = response.read()
            self._release(conn, response)
            raise diagnose_docker(_error_message(response.status, data), what=what)
        return self._body(response, conn)

    def _body(self, response: Any, conn: Any) -> Iterator[bytes]:
        import http.client

        try:
            while True:
                try:
                    chunk = response.read1(_LOG_READ_BYTES)
                except http.client.IncompleteRead as exc:  # the engine went away mid-stream
                    chunk, response = exc.partial, None
                if chunk:
                    yield chunk
                if not chunk or response is None:
                    break
        except BaseException:  # the caller stopped reading (Ctrl-C, an error): never reuse a half-read stream
            conn.close()
            raise
        if response is None:
            conn.close()
        else:
            self._release(conn, response)

    def _send(self, method, path, *, what, query, body, timeout, versioned):
        import http.client
        from urllib.parse import urlencode

        url = (f"/v{self.version}{path}" if versioned else path) + (f"?{urlencode(query)}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            conn = self._acquire(self.timeout if timeout == "default" else timeout)
            reused = conn.requests > 0
            try:
                conn.request(method, url, body=payload, headers=headers)
                conn.requests += 1
                return conn.getresponse(), conn
            except (ConnectionResetError, BrokenPipeError) as exc:  # RemoteDisconnected is a ConnectionResetError
                conn.close()
                if reused and attempt == 1:  # the engine closed an idle keep-alive connection: one fresh try
                    continue
                raise self._unreachable(exc, what) from None
            except (OSError, http.client.HTTPException) as exc:  # no socket, refused, permission denied, timed out
                conn.close()
                raise self._unreachable(exc, what) from None
        raise AssertionError("unreachable")

    def _unreachable(self, exc: BaseException, what: str) -> DockerError:
        if isinstance(exc, PermissionError):
            text = f"permission denied while trying to connect to the Docker daemon socket at unix://{self.path}"
        elif isinstance(exc, TimeoutError):
            text = f"the Docker engine at unix://{self.path} did not answer in time ({exc})"
        else:
            text = f"Cannot connect to the Docker daemon at unix://{self.path}. Is the docker daemon running? ({exc})"
        return diagnose_docker(text, what=what)

    def _acquire(self, timeout: float | None) -> Any:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _unix_connection_class()(self.path, timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def _release(self, conn: Any, response: Any) -> None:
        if response.will_close or conn.sock is None:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _error_message(status: int, data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text or f"HTTP {status}")


def _split_lines(frames: Iterable[tuple[int, bytes]]) -> Iterator[str]:
    """Lines from (stream, bytes) pieces, each stream split on its own: a partial stdout line is never glued
    to a stderr line that arrived in between."""
    pending: dict[int, bytes] = {}
    for stream, chunk in frames:
        *lines, pending[stream] = (pending.get(stream, b"") + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    for stream in sorted(pending):
        if pending[stream]:
            yield pending[stream].decode("utf-8", "replace").rstrip("\r")


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="/:@")


class Docker:
    """Docker for one process: the lifecycle of containers over the local socket (or the SDK), images through
    a lazily connected SDK client, builds through the docker CLI.

    transport: "auto" (the socket client when the engine is local and plain, see local_socket(); else the SDK),
    "socket" or "sdk". Both give the same results and the same typed errors.
    """

    def __init__(self, docker_binary: str | None = None, *, timeout: int = 120, transport: str = "auto") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        self._docker_binary = docker_binary
        self._timeout = timeout
        self._transport = transport
        self._attached: dict[str, Iterator[bytes]] = {}  # container id -> its output, attached before start

    @cached_property
    def engine(self) -> EngineSocket | None:
        """The socket client, or None when the SDK does the container work."""
        if self._transport == "sdk":
            return None
        path = local_socket()
        if path is None and self._transport == "socket":
            host = os.environ.get("DOCKER_HOST", "")
            path = host[len("unix://"):] if host.startswith("unix://") else DEFAULT_SOCKET
        return EngineSocket(path, timeout=self._timeout) if path else None

    @property
    def transport(self) -> str:
        """"socket" or "sdk": what talks to the engine for containers."""
        return "socket" if self.engine is not None else "sdk"

    def ping(self) -> None:
        """Connect now: raises the diagnosed DockerError (docker-not-running, ...) when no engine answers."""
        if self.engine is not None:
            self.engine.version  # noqa: B018 - the first request negotiates the API version
        else:
            self.client  # noqa: B018

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

    def _call(self, what: str, fn: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        """fn() through the SDK; None for a 404 when missing_ok, else any failure as a diagnosed DockerError."""
        import docker.errors

        try:
            return fn()
        except docker.errors.NotFound as exc:
            if missing_ok:
                return None
            raise diagnose_docker(str(exc.explanation or exc), what=what) from None
        except docker.errors.APIError as exc:
            raise diagnose_docker(str(exc.explanation or exc), what=what) from None
        except docker.errors.DockerException as exc:
            raise diagnose_docker(str(exc), what=what) from None

    def image_inspect(self, ref: str) -> dict | None:
        """The image's inspect dict, or None when it does not exist locally."""
        what = f"inspecting {ref}"
        if self.engine is not None:
            return self.engine.call("GET", f"/images/{_quote(ref)}/json", what=what, missing_ok=True)
        return self._call(what, lambda: self.client.api.inspect_image(ref), missing_ok=True)

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
        self._call(f"removing {ref}", lambda: self.client.api.remove_image(ref, force=force), missing_ok=True)

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
        attach: bool = False,
    ) -> str:
        """Start a container in the background and return its id. An image that is not here is pulled first.

        attach: on the local engine, attach to its output before it starts, as `docker run` does, so that
        follow_to_exit gets every line from that stream. (A logs follow on a loaded engine can end before the
        last lines, moby/moby#43860; without attach, follow_to_exit reads the output again to make up for it.)
        """
        what = f"starting a container of {image}"
        mounts = list(mounts)
        count = None if gpus in (None, "none", 0) else (-1 if gpus == "all" else int(gpus))
        if self.engine is None:
            return self._run_detached_sdk(what, image, command, name=name, mounts=mounts, env=env, user=user,
                                          workdir=workdir, gpu_count=count, shm_size=shm_size, labels=labels,
                                          network=network)
        host_config: dict[str, Any] = {
            "Mounts": [{"Type": "bind", "Source": src, "Target": dst, "ReadOnly": ro} for src, dst, ro in mounts],
            "NetworkMode": network or "default",
            "Init": True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
        }
        if shm_size is not None:
            host_config["ShmSize"] = size_bytes(shm_size)
        if count is not None:
            host_config["DeviceRequests"] = [{"Driver": "", "Count": count, "DeviceIDs": None,
                                              "Capabilities": [["gpu"]], "Options": {}}]
        body: dict[str, Any] = {
            "Image": image, "Cmd": list(command), "Env": [f"{k}={v}" for k, v in (env or {}).items()],
            "Labels": dict(labels or {}), "Tty": False, "OpenStdin": False,
            "AttachStdin": False, "AttachStdout": attach, "AttachStderr": attach, "HostConfig": host_config,
        }
        if user:
            body["User"] = user
        if workdir:
            body["WorkingDir"] = workdir
        query = {"name": name} if name else None
        created = self.engine.call("POST", "/containers/create", what=what, query=query, body=body, missing_ok=True)
        if created is None:  # 404: no such image here; `docker run` pulls it (with the SDK's registry auth)
            self._call(what, lambda: self.client.images.pull(image))
            created = self.engine.call("POST", "/containers/create", what=what, query=query, body=body)
        container_id = created["Id"]
        if attach:
            self._attached[container_id] = self.engine.stream(
                "POST", f"/containers/{container_id}/attach", what=what, query={"stream": 1, "stdout": 1, "stderr": 1})
        try:
            self.engine.call("POST", f"/containers/{container_id}/start", what=what)
        except BaseException:
            self._drop_attached(container_id)
            raise
        return container_id

    def _drop_attached(self, container_id: str) -> None:
        stream = self._attached.pop(container_id, None)
        if stream is not None:
            stream.close()  # closes its connection: a half-read stream is never reused

    def _run_detached_sdk(self, what, image, command, *, name, mounts, env, user, workdir, gpu_count, shm_size, labels,
                          network) -> str:
        from docker.types import DeviceRequest, Mount

        device_requests = None if gpu_count is None else [DeviceRequest(count=gpu_count, capabilities=[["gpu"]])]
        container = self._call(
            what,
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
                shm_size=None if shm_size is None else size_bytes(shm_size),
                labels=dict(labels or {}),
                network_mode=network,
                init=True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
            ),
        )
        return container.id

    def container_state(self, container_id: str) -> dict | None:
        """The container's State dict (Status, ExitCode, …), or None when it no longer exists."""
        what = "inspecting a container"
        if self.engine is not None:
            info = self.engine.call("GET", f"/containers/{_quote(container_id)}/json", what=what, missing_ok=True)
        else:
            info = self._call(what, lambda: self.client.api.inspect_container(container_id), missing_ok=True)
        return None if info is None else info.get("State")

    def stream_logs(self, container_id: str, on_line: Callable[[str], None]) -> None:
        """Follow the container's output (stdout and stderr) until it exits, calling on_line for each line.

        A loaded engine can end the follow at the container's exit before sending the last lines
        (moby/moby#43860): callers that need every line read them again with `log_lines` after `wait`.
        """
        for line in _split_lines(self._log_chunks(container_id, follow=True)):
            on_line(line)

    def follow_to_exit(self, container_id: str, on_line: Callable[[str], None]) -> int:
        """Stream the container's lines until it exits, then pass on any the follow dropped; its exit code.

        A loaded engine can end a follow at the container's exit before sending the last lines
        (moby/moby#43860), which is where results and final metrics are printed: the whole output is read
        once more and what the follow missed (checked by a digest of the prefix) is passed on in order.
        """
        attached = self._attached.pop(container_id, None)
        if attached is not None:
            for line in _split_lines(_demuxed(attached)):
                on_line(line)
            return self.wait(container_id)
        seen = hashlib.sha256()
        count = 0

        def forward(line: str) -> None:
            nonlocal count
            seen.update(line.encode("utf-8", "surrogatepass") + b"\n")
            count += 1
            on_line(line)

        self.stream_logs(container_id, forward)
        code = self.wait(container_id)
        everything = self.log_lines(container_id)
        prefix = hashlib.sha256()
        for line in everything[:count]:
            prefix.update(line.encode("utf-8", "surrogatepass") + b"\n")
        if len(everything) > count and prefix.digest() == seen.digest():
            for line in everything[count:]:
                on_line(line)
        return code

    def run_once(self, image: str, command: list[str], **run_options: Any) -> tuple[int, list[str]]:
        """Run a throwaway container to completion: (exit code, every output line). It is removed afterwards."""
        container = self.run_detached(image, command, attach=True, **run_options)
        lines: list[str] = []
        try:
            return self.follow_to_exit(container, lines.append), lines
        finally:
            self.remove_container(container)

    def log_lines(self, container_id: str) -> list[str]:
        """Everything the container has written so far, split into lines exactly as stream_logs splits them."""
        return list(_split_lines(self._log_chunks(container_id, follow=False)))

    def _log_chunks(self, container_id: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        what = "reading logs"
        if self.engine is not None:
            return _demuxed(self.engine.stream("GET", f"/containers/{_quote(container_id)}/logs", what=what,
                                               query={"follow": int(follow), "stdout": 1, "stderr": 1}))
        # The SDK joins stdout and stderr: one stream.
        if follow:
            chunks = self._call(what, lambda: self.client.api.logs(container_id, stream=True, follow=True))
        else:
            chunks = [self._call(what, lambda: self.client.api.logs(container_id, stream=False, follow=False))]
        return ((0, chunk) for chunk in chunks)

    def wait(self, container_id: str) -> int:
        """Block until the container exits; its exit code."""
        what = "waiting for a container"
        if self.engine is not None:
            result = self.engine.call("POST", f"/containers/{_quote(container_id)}/wait", what=what, timeout=None)
        else:
            result = self._call(what, lambda: self.client.api.wait(container_id))
        return int((result or {}).get("StatusCode", -1))

    def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the grace period (docker stop semantics). A gone container is no error."""
        what = "stopping a container"
        if self.engine is not None:
            # The engine answers once the container is down: allow the grace period on top of the usual timeout.
            timeout = None if self._timeout is None else self._timeout + int(grace_s)
            self.engine.call("POST", f"/containers/{_quote(container_id)}/stop", what=what, query={"t": int(grace_s)},
                             timeout=timeout, missing_ok=True)
        else:
            self._call(what, lambda: self.client.api.stop(container_id, timeout=int(grace_s)), missing_ok=True)

    def kill(self, container_id: str, signal: str = "KILL") -> None:
        """`docker kill`: send the signal now. A gone container is no error; one that is not running is."""
        what = "killing a container"
        if self.engine is not None:
            self.engine.call("POST", f"/containers/{_quote(container_id)}/kill", what=what, query={"signal": signal},
                             missing_ok=True)
        else:
            self._call(what, lambda: self.client.api.kill(container_id, signal=signal), missing_ok=True)

    def remove_container(self, container_id: str) -> None:
        """Remove it, running or not (force). A gone container is no error."""
        self._drop_attached(container_id)
        what = "removing a container"
        if self.engine is not None:
            self.engine.call("DELETE", f"/containers/{_quote(container_id)}", what=what, query={"force": 1},
                             missing_ok=True)
        else:
            self._call(what, lambda: self.client.api.remove_container(container_id, force=True), missing_ok=True)

    def containers_labelled(self, key: str, value: str) -> list[str]:
        """Ids of every container (any state, created included) with label key=value."""
        what = "listing containers"
        if self.engine is not None:
            found = self.engine.call("GET", "/containers/json", what=what,
                                     query={"all": 1, "filters": json.dumps({"label": [f"{key}={value}"]})})
        else:
            found = self._call(what, lambda: self.client.api.containers(
                all=True, quiet=True, filters={"label": f"{key}={value}"}))
        return [item["Id"] for item in found or ()]

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

"""The local engine over its unix socket, on the standard library: `EngineSocket` (JSON over HTTP/1.1 through
unixhttp.py, the API version negotiated only when the engine refuses ours) and `SocketEngine`, the Engine
(see engine.py) built on it.

Chosen for a local, plain engine because the docker SDK's import alone (requests, urllib3) costs more than
everything else `envbuilder run --image` adds to a `docker run`. Pulling (which needs the registry auth the SDK
reads) and `docker import` (a streamed tarball upload) are handed to the SDK engine, loaded only then.
Must not import the docker SDK, requests or urllib3 at module level, nor the CLI.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from envbuilder.docker.diagnose import diagnose_docker
from envbuilder.docker.base_engine import EngineBase, gpu_count, shm_bytes, split_ref
from envbuilder.docker.streams import demuxed
from envbuilder.docker.unixhttp import Response, UnixConnection
from envbuilder.errors import DockerError

# The Engine API version these requests were written against: Docker 20.10's. Every field used here
# (DeviceRequests since 1.40, Init since 1.25) means the same in later versions.
PREFERRED_API_VERSION = "1.41"
_LOG_READ_BYTES = 1 << 16


def pick_api_version(server: str | None, server_min: str | None) -> str:
    """The API version to speak: ours (1.41) when the engine accepts it, else the nearest it accepts."""
    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split(".") if part.isdigit())

    if server and key(server) < key(PREFERRED_API_VERSION):
        return server
    if server_min and key(server_min) > key(PREFERRED_API_VERSION):
        return server_min
    return PREFERRED_API_VERSION


class EngineSocket:
    """A minimal Docker Engine API client on the standard library: JSON over HTTP/1.1 (unixhttp.py) on the
    engine's unix socket, idle connections kept alive for reuse (one per request in flight, so threads may
    share it). Requests speak our API version (1.41) at once, as the docker CLI does after its ping; an engine
    that refuses it answers 400 naming its range, and then the version is negotiated (GET /version) and the
    request sent again: one round trip saved on every command, since every engine from Docker 20.10 to those
    that dropped 1.41 says so the same way. Errors: HTTP status >= 400 becomes a diagnosed DockerError naming
    what was being done, with 404 answered as None where the caller asks for it (missing_ok)."""

    def __init__(self, path: str, *, timeout: float | None = 120) -> None:
        self.path = path
        self.timeout = timeout
        self._idle: list[UnixConnection] = []
        self._lock = threading.Lock()
        self._negotiated: str | None = None

    @property
    def version(self) -> str:
        """The API version requests speak: ours until the engine refused it, then the one negotiated."""
        return self._negotiated or PREFERRED_API_VERSION

    def negotiate(self) -> str:
        """Ask the engine which API versions it speaks (GET /version) and pick ours or the nearest; once."""
        if self._negotiated is None:
            info = self.call("GET", "/version", what="connecting to Docker", versioned=False) or {}
            self._negotiated = pick_api_version(info.get("ApiVersion"), info.get("MinAPIVersion"))
        return self._negotiated

    def call(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None, body: Any = None,
             timeout: float | None | str = "default", missing_ok: bool = False, versioned: bool = True,
             while_waiting: Callable[[], None] | None = None) -> Any:
        """One request; its JSON answer (None for an empty one, or for a 404 when missing_ok).
        while_waiting: called once the request is sent, before the answer is read (it must not raise)."""
        response, conn = self._send(method, path, what=what, query=query, body=body, timeout=timeout,
                                    versioned=versioned, while_waiting=while_waiting)
        data = self._read_all(response, conn, what)
        if response.status >= 400:
            if response.status == 404 and missing_ok:
                return None
            message = _error_message(response.status, data)
            if versioned and self._refuses_version(response.status, message):
                return self.call(method, path, what=what, query=query, body=body, timeout=timeout,
                                 missing_ok=missing_ok, versioned=versioned)
            raise diagnose_docker(message, what=what)
        return json.loads(data) if data.strip() else None

    def stream(self, method: str, path: str, *, what: str, query: Mapping[str, Any] | None = None) -> Iterator[bytes]:
        """A streaming request (no read timeout): its body as it arrives, chunked transfer decoded."""
        response, conn = self._send(method, path, what=what, query=query, body=None, timeout=None, versioned=True,
                                    while_waiting=None)
        if response.status >= 400:
            message = _error_message(response.status, self._read_all(response, conn, what))
            if self._refuses_version(response.status, message):
                return self.stream(method, path, what=what, query=query)
            raise diagnose_docker(message, what=what)
        return self._body(response, conn)

    def _refuses_version(self, status: int, message: str) -> bool:
        """Whether the engine refused our API version (then negotiated now, so the caller sends it again).
        Docker answers 400 "client version 1.41 is too new. Maximum supported API version is 1.40" (or "too
        old. Minimum ..."); engines before 17.04 said "client is newer than server"."""
        if status != 400 or self._negotiated is not None:
            return False
        if not ("client version" in message and (" is too new" in message or " is too old" in message)
                or "client is newer than server" in message):
            return False
        return self.negotiate() != PREFERRED_API_VERSION

    def _read_all(self, response: Response, conn: UnixConnection, what: str) -> bytes:
        try:
            data = response.read()
        except OSError as exc:  # timed out, or the engine went away
            conn.close()
            raise self._unreachable(exc, what) from None
        except BaseException:
            conn.close()
            raise
        self._release(conn, response)
        return data

    def _body(self, response: Response, conn: UnixConnection) -> Iterator[bytes]:
        try:
            while chunk := response.read1(_LOG_READ_BYTES):
                yield chunk
        except BaseException:  # the caller stopped reading (Ctrl-C, an error), or the engine went away mid-stream:
            conn.close()  # never reuse a half-read stream
            raise
        self._release(conn, response)  # a stream the engine cut short (response.truncated) is closed there

    def _send(self, method, path, *, what, query, body, timeout, versioned,
              while_waiting) -> tuple[Response, UnixConnection]:
        from urllib.parse import urlencode

        url = (f"/v{self.version}{path}" if versioned else path) + (f"?{urlencode(query)}" if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            conn = self._acquire(self.timeout if timeout == "default" else timeout)
            reused = conn.requests > 0
            try:
                conn.request(method, url, body=payload, headers=headers)
                if while_waiting is not None:  # once: a request sent again after a dropped connection does not
                    while_waiting, run_now = None, while_waiting
                    run_now()
                response = conn.getresponse(method)
                conn.requests += 1
                return response, conn
            except (ConnectionResetError, BrokenPipeError) as exc:  # RemoteDisconnected is a ConnectionResetError
                conn.close()
                if reused and attempt == 1:  # the engine closed an idle keep-alive connection: one fresh try
                    continue
                raise self._unreachable(exc, what) from None
            except OSError as exc:  # no socket, refused, permission denied, timed out, not HTTP
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

    def _acquire(self, timeout: float | None) -> UnixConnection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = UnixConnection(self.path, timeout)
        conn.settimeout(timeout)
        return conn

    def _release(self, conn: UnixConnection, response: Response) -> None:
        if response.will_close or conn.sock is None:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)


def _error_message(status: int, data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text or f"HTTP {status}")


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="/:@")


class SocketEngine(EngineBase):
    """The Engine over the local socket (see EngineSocket); pulls and imports through the SDK engine."""

    transport = "socket"

    def __init__(self, path: str, *, docker_binary: str | None = None, timeout: int | None = 120) -> None:
        super().__init__(docker_binary=docker_binary, timeout=timeout)
        self.path = path
        self.docker_host = f"unix://{path}"  # for the docker CLI (builds): the same engine, whatever DOCKER_HOST says
        self.api = EngineSocket(path, timeout=timeout)

    @cached_property
    def _sdk(self) -> Any:
        from envbuilder.docker.sdk_engine import SdkEngine

        return SdkEngine(docker_binary=self._docker_binary, timeout=self._timeout, base_url=self.docker_host)

    @property
    def client(self) -> Any:
        """The docker SDK client (imported on first use), as SdkEngine.client: for what the Engine does not cover."""
        return self._sdk.client

    def ping(self) -> None:
        self.api.negotiate()

    def image_inspect(self, ref: str) -> dict | None:
        return self.api.call("GET", f"/images/{_quote(ref)}/json", what=f"inspecting {ref}", missing_ok=True)

    def tag(self, image: str, ref: str) -> None:
        repo, tag = split_ref(ref)
        self.api.call("POST", f"/images/{_quote(image)}/tag", what=f"tagging {ref}", query={"repo": repo, "tag": tag})

    def import_image(self, tarball: Path, ref: str, *, changes: Iterable[str] = ()) -> str:
        return self._sdk.import_image(tarball, ref, changes=changes)

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self.api.call("DELETE", f"/images/{_quote(ref)}", what=f"removing {ref}", query={"force": int(force)},
                      missing_ok=True)

    def save_images(self, refs: Sequence[str]) -> Iterator[bytes]:
        # Repeated `names` parameters (GET /images/get): one archive, so layers the images share are stored once.
        return self.api.stream("GET", "/images/get", what=f"saving {', '.join(refs)}",
                               query=[("names", ref) for ref in refs])  # type: ignore[arg-type]

    def load_images(self, data: BinaryIO) -> tuple[str, ...]:
        return self._sdk.load_images(data)  # a streamed tarball upload, like import_image

    # Registry work needs Docker's auth (config.json, credential helpers), which the SDK reads: handed over.
    def push(self, ref: str, *, on_line: Callable[[str], None] | None = None) -> str:
        return self._sdk.push(ref, on_line=on_line)

    def registry_digest(self, ref: str) -> str | None:
        return self._sdk.registry_digest(ref)

    def _credentials_changed(self) -> None:
        if "_sdk" in self.__dict__:
            self._sdk._credentials_changed()

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
        ports: Iterable[tuple[str, int, int, str]] = (),  # (host IP, host port, container port, tcp|udp)
        cpus: float | None = None,
        memory: str | None = None,
        while_creating: Callable[[], None] | None = None,
    ) -> str:
        """Start a container in the background and return its id. An image that is not here is pulled first; a
        container the engine created but would not start is removed before the error is raised.
        while_creating runs between sending the create request and reading its answer: the engine creates the
        container (~8 ms) while it runs.

        attach: attach to its output before it starts, as `docker run` does, so that follow_to_exit gets every
        line from that stream (a logs follow on a loaded engine can end before the last lines, moby/moby#43860).
        """
        what = f"starting a container of {image}"
        body = _create_body(image, command, mounts=mounts, env=env, user=user, workdir=workdir, gpus=gpus,
                            shm_size=shm_size, labels=labels, network=network, attach=attach)
        _add_ports_and_limits(body, ports, cpus, memory)
        query = {"name": name} if name else None
        failed: list[BaseException] = []  # what while_creating raised, raised once the container is removed

        def before_the_answer() -> None:
            try:
                while_creating()
            except BaseException as exc:  # noqa: BLE001 - Ctrl-C too: the container being created must not stay
                failed.append(exc)

        try:
            created = self.api.call("POST", "/containers/create", what=what, query=query, body=body, missing_ok=True,
                                    while_waiting=before_the_answer if while_creating is not None else None)
        except BaseException:
            if failed:
                raise failed[0] from None
            raise
        if failed:
            if created is not None:
                with contextlib.suppress(Exception):
                    self.remove_container(created["Id"])
            raise failed[0]
        if created is None:  # 404: no such image here; `docker run` pulls it (with the SDK's registry auth)
            self.pull(image, what=what)
            created = self.api.call("POST", "/containers/create", what=what, query=query, body=body)
        container_id = created["Id"]
        if attach:
            self._attached[container_id] = self.api.stream(
                "POST", f"/containers/{container_id}/attach", what=what, query={"stream": 1, "stdout": 1, "stderr": 1})
        try:
            self.api.call("POST", f"/containers/{container_id}/start", what=what)
        except BaseException:
            # A refused start (no NVIDIA runtime, a port in use) leaves a `created` container: nothing stays behind.
            with contextlib.suppress(Exception):
                self.remove_container(container_id)
            raise
        return container_id

    def pull(self, ref: str, *, what: str | None = None) -> None:
        """Pulled through the SDK engine: it reads the registry auth (Docker's config, credential helpers)."""
        self._sdk.pull(ref, what=what)

    def container_state(self, container_id: str) -> dict | None:
        info = self.api.call("GET", f"/containers/{_quote(container_id)}/json", what="inspecting a container",
                             missing_ok=True)
        return None if info is None else info.get("State")

    def _log_chunks(self, container_id: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        return demuxed(self.api.stream("GET", f"/containers/{_quote(container_id)}/logs", what="reading logs",
                                       query={"follow": int(follow), "stdout": 1, "stderr": 1}))

    def wait(self, container_id: str) -> int:
        result = self.api.call("POST", f"/containers/{_quote(container_id)}/wait", what="waiting for a container",
                               timeout=None)
        return int((result or {}).get("StatusCode", -1))

    def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after the grace period (docker stop semantics). A gone container is no error."""
        # The engine answers once the container is down: allow the grace period on top of the usual timeout.
        timeout = None if self._timeout is None else self._timeout + int(grace_s)
        self.api.call("POST", f"/containers/{_quote(container_id)}/stop", what="stopping a container",
                      query={"t": int(grace_s)}, timeout=timeout, missing_ok=True)

    def kill(self, container_id: str, signal: str = "KILL") -> None:
        """`docker kill`: send the signal now. A gone container is no error; one that is not running is."""
        self.api.call("POST", f"/containers/{_quote(container_id)}/kill", what="killing a container",
                      query={"signal": signal}, missing_ok=True)

    def remove_container(self, container_id: str) -> None:
        """Remove it, running or not (force). A gone container is no error."""
        self._drop_attached(container_id)
        self.api.call("DELETE", f"/containers/{_quote(container_id)}", what="removing a container",
                      query={"force": 1}, missing_ok=True)

    def containers_labelled(self, key: str, value: str) -> list[str]:
        found = self.api.call("GET", "/containers/json", what="listing containers",
                              query={"all": 1, "filters": json.dumps({"label": [f"{key}={value}"]})})
        return [item["Id"] for item in found or ()]

    def images_labelled(self, key: str, value: str | None = None) -> list[dict]:
        label = key if value is None else f"{key}={value}"
        found = self.api.call("GET", "/images/json", what="listing images", query={"filters": json.dumps({"label": [label]})})
        return list(found or ())


def _create_body(image: str, command: list[str], *, mounts: Iterable[tuple[str, str, bool]],
                 env: Mapping[str, str] | None, user: str | None, workdir: str | None, gpus: str | int | None,
                 shm_size: str | None, labels: Mapping[str, str] | None, network: str | None,
                 attach: bool) -> dict[str, Any]:
    """The POST /containers/create body of `docker run --init` with these settings."""
    host_config: dict[str, Any] = {
        "Mounts": [{"Type": "bind", "Source": src, "Target": dst, "ReadOnly": ro} for src, dst, ro in mounts],
        "NetworkMode": network or "default",
        "Init": True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
    }
    if shm_size is not None:
        host_config["ShmSize"] = shm_bytes(shm_size)
    count = gpu_count(gpus)
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
    return body


def _add_ports_and_limits(body: dict[str, Any], ports: Iterable[tuple[str, int, int, str]], cpus: float | None,
                          memory: str | None) -> None:
    """`docker run -p/--cpus/--memory` in a create body: what the docker CLI sends for them."""
    host_config = body["HostConfig"]
    for host_ip, host_port, container_port, protocol in ports:
        key = f"{container_port}/{protocol}"
        body.setdefault("ExposedPorts", {})[key] = {}
        host_config.setdefault("PortBindings", {}).setdefault(key, []).append(
            {"HostIp": host_ip, "HostPort": str(host_port)})
    if cpus is not None:
        host_config["NanoCpus"] = int(round(cpus * 1e9))  # --cpus 1.5 is 1.5e9 nano-CPUs, as the CLI sends it
    if memory is not None:
        host_config["Memory"] = shm_bytes(memory)

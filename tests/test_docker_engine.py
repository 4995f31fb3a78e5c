"""The Engine's container lifecycle over both transports: the stdlib socket client and the docker SDK.

The pure parts (transport choice, API version, sizes, stream frames) run without an engine; a fake engine on
a unix socket (http.server) checks error mapping, version negotiation, chunked frames and stale keep-alive
connections; the `docker` tests run every lifecycle step against the real engine with each transport and
expect the same answers from both.
"""

from __future__ import annotations

import http.server
import inspect
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import uuid

import pytest

from envbuilder.docker.base_engine import shm_bytes, split_ref
from envbuilder.docker.engine import Docker, Engine, local_socket
from envbuilder.docker.sdk_engine import SdkEngine
from envbuilder.docker.socket_engine import PREFERRED_API_VERSION, SocketEngine, pick_api_version
from envbuilder.docker.streams import demux_stream_frames, split_lines
from envbuilder.errors import DockerError, EnvbuilderError
from support.fake_engine import FakeEngine

TRANSPORTS = ("socket", "sdk")
LABEL = "org.envbuilder.test-engine"


def frame(payload: bytes, stream: int = 1) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


# --- pure ------------------------------------------------------------------------------------------------


@pytest.fixture
def unix_socket(tmp_path):
    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    yield str(path)
    server.close()


def test_local_socket_only_for_a_plain_local_engine(unix_socket, tmp_path):
    assert local_socket({"DOCKER_HOST": f"unix://{unix_socket}"}) == unix_socket
    assert local_socket({"DOCKER_HOST": f"unix://{unix_socket}", "DOCKER_CONTEXT": "default"}) == unix_socket
    assert local_socket({"DOCKER_HOST": "tcp://10.0.0.1:2376"}) is None
    assert local_socket({"DOCKER_HOST": "ssh://me@box"}) is None
    assert local_socket({"DOCKER_HOST": f"unix://{unix_socket}", "DOCKER_TLS_VERIFY": "1"}) is None
    assert local_socket({"DOCKER_HOST": f"unix://{unix_socket}", "DOCKER_CONTEXT": "remote"}) is None
    assert local_socket({"DOCKER_HOST": f"unix://{tmp_path / 'missing.sock'}"}) is None
    (tmp_path / "file.sock").write_text("")
    assert local_socket({"DOCKER_HOST": f"unix://{tmp_path / 'file.sock'}"}) is None  # not a socket


def test_transport_follows_the_environment(unix_socket, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{unix_socket}")
    assert Docker().transport == "socket" and Docker().path == unix_socket
    assert Docker(transport="sdk").transport == "sdk"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    assert Docker().transport == "sdk"
    assert Docker(transport="socket").path == "/var/run/docker.sock"
    with pytest.raises(ValueError):
        Docker(transport="http")


@pytest.mark.parametrize(("server", "server_min", "expected"), [
    ("1.41", "1.12", "1.41"),  # Docker 20.10
    ("1.47", "1.24", PREFERRED_API_VERSION),  # newer engines still speak ours
    ("1.52", "1.44", "1.44"),  # an engine that dropped ours: the oldest it takes
    ("1.40", "1.12", "1.40"),  # an older engine: its own
    (None, None, PREFERRED_API_VERSION),
])
def test_api_version(server, server_min, expected):
    assert pick_api_version(server, server_min) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2g", 2 << 30), ("512m", 512 << 20), ("64MiB", 64 << 20), ("1.5g", 3 << 29), ("100", 100), ("100b", 100),
    ("4 k", 4096), ("2GB", 2 << 30), (1234, 1234),
])
def test_shm_bytes(text, expected):
    assert shm_bytes(text) == expected


def test_shm_bytes_refuses_nonsense():
    with pytest.raises(EnvbuilderError) as err:
        shm_bytes("lots")
    assert err.value.code == "bad-size"


def test_demux_frames_keeps_partial_frames_for_the_next_chunk():
    stream = frame(b"out 1\n") + frame(b"err 1\n", 2) + frame(b"") + frame(b"out 2")
    buffer = bytearray()
    frames = []
    for cut in range(0, len(stream), 5):  # 5-byte chunks: headers and payloads split anywhere
        buffer += stream[cut : cut + 5]
        frames += demux_stream_frames(buffer)
    assert frames == [(1, b"out 1\n"), (2, b"err 1\n"), (1, b""), (1, b"out 2")] and buffer == bytearray()


def test_split_ref_keeps_a_registry_port_in_the_repository():
    assert split_ref("envbuilder/x:1") == ("envbuilder/x", "1")
    assert split_ref("envbuilder/x") == ("envbuilder/x", "latest")
    assert split_ref("localhost:5000/x") == ("localhost:5000/x", "latest")
    assert split_ref("localhost:5000/x:2") == ("localhost:5000/x", "2")


# --- one interface: both engines and the shared test fake implement every operation alike -----------------


def _parameters(fn) -> list[tuple]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def _protocol_methods() -> list[str]:
    return [name for name, value in vars(Engine).items() if not name.startswith("_") and callable(value)]


@pytest.mark.parametrize("implementation", [SocketEngine, SdkEngine, FakeEngine], ids=lambda cls: cls.__name__)
def test_every_engine_implements_the_whole_protocol(implementation):
    assert len(_protocol_methods()) >= 15 and "transport" in vars(Engine)
    for name in _protocol_methods():
        assert _parameters(getattr(implementation, name)) == _parameters(getattr(Engine, name)), name
    assert hasattr(implementation, "transport")


def test_open_engine_returns_an_engine_of_the_chosen_transport(unix_socket, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{unix_socket}")
    assert isinstance(Docker(), SocketEngine) and isinstance(Docker(transport="sdk"), SdkEngine)


def test_fake_engine_scripts_containers_and_records_calls():
    fake = FakeEngine()
    fake.add_image("img:1", labels={"org.envbuilder.python": "3.11"})
    fake.script(["epoch 1", "done"], 3)
    assert fake.run_once("img:1", ["python", "train.py"]) == (3, ["epoch 1", "done"])
    assert fake.image_inspect("img:1")["Config"]["Labels"] == {"org.envbuilder.python": "3.11"}
    container = fake.run_detached("img:1", ["sleep", "60"], labels={"run": "r1"})
    assert fake.containers_labelled("run", "r1") == [container]
    fake.stop(container, 2)
    assert fake.container_state(container)["ExitCode"] == 143 and fake.wait(container) == 143
    fake.remove_container(container)
    assert fake.container_state(container) is None
    assert ("stop", container, 2) in fake.calls and fake.calls[0] == ("run_detached", "img:1", ["python", "train.py"])


def test_fake_engine_breaks_a_watch_and_fails_a_call_once_on_request():
    fake = FakeEngine()
    fake.script(["one", "two", "three"], 137, break_after=2,
                break_with=DockerError("docker-not-running", "Cannot connect to the Docker daemon"))
    container = fake.run_detached("img:1", ["train"])
    seen: list[str] = []
    with pytest.raises(DockerError):
        fake.follow_to_exit(container, seen.append)
    assert seen == ["one", "two"] and fake.container_state(container)["Running"]  # the job goes on
    assert fake.log_lines(container) == ["one", "two", "three"]
    assert fake.follow_to_exit(container, seen.append) == 137  # the engine is back: a new watch sees it all
    fake.fail_next("stop", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        fake.stop(container, 5)
    fake.stop(container, 5)  # once only
    assert [c for c in fake.calls if c[0] == "stop"] == [("stop", container, 5)] * 2
    fake.remove_container(container)
    assert fake.started[0].options["labels"] == {} and fake.started[0].command == ["train"]  # kept after removal


def test_the_fake_engine_fixture_is_what_envbuilder_opens(fake_engine):
    import envbuilder.docker.engine

    assert Docker("/usr/bin/docker") is fake_engine and envbuilder.docker.engine.open_engine() is fake_engine
    assert fake_engine.opened == ["/usr/bin/docker", None]


# --- a fake engine on a unix socket: the HTTP side of the socket client ------------------------------------


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


class EngineApiServer(http.server.BaseHTTPRequestHandler):
    """The Engine API on a unix socket, for the socket client's HTTP side: answers `routes`, records `seen`."""

    protocol_version = "HTTP/1.1"
    routes: dict = {}
    seen: list = []
    drop_after_response = False  # close the connection without saying so, like an engine's idle timeout
    min_api = "1.44"  # an engine that dropped our API version (1.41): every request is refused until negotiated

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append((self.command, self.path, body))
        status, reply = self.routes.get((self.command, self.path.split("?")[0]), (404, {"message": "page not found"}))
        asked = self.path.split("/")[1][1:] if self.path.startswith("/v1.") else None
        if asked and _version_key(asked) < _version_key(self.min_api):  # as moby's version middleware answers
            status, reply = 400, {"message": f"client version {asked} is too old. Minimum supported API version is "
                                             f"{self.min_api}, please upgrade your client to a newer version"}
        if isinstance(reply, list):  # chunked raw stream
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.docker.raw-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in reply + [b""]:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        else:
            data = json.dumps(reply).encode() if reply is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()
        if self.drop_after_response:
            self.close_connection = True

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def engine_api(tmp_path, monkeypatch):
    path = str(tmp_path / "fake.sock")
    EngineApiServer.seen, EngineApiServer.drop_after_response, EngineApiServer.min_api = [], False, "1.44"
    EngineApiServer.routes = {("GET", "/version"): (200, {"ApiVersion": "1.52", "MinAPIVersion": "1.44"})}
    server = socketserver.ThreadingUnixStreamServer(path, EngineApiServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    yield EngineApiServer
    server.shutdown()
    server.server_close()


def test_engine_api_create_body_version_and_error_mapping(engine_api):
    engine_api.routes[("POST", "/v1.44/containers/create")] = (201, {"Id": "c1", "Warnings": []})
    engine_api.routes[("POST", "/v1.44/containers/c1/start")] = (
        500, {"message": 'could not select device driver "" with capabilities: [[gpu]]'})
    docker = Docker(transport="socket")
    with pytest.raises(DockerError) as err:
        docker.run_detached("img:1", ["python", "train.py"], name="n1", mounts=[("/src", "/dst", True)],
                            env={"A": "1"}, user="1000:1000", workdir="/w", gpus=2, shm_size="1g",
                            labels={"k": "v"}, network="host")
    assert err.value.code == "nvidia-runtime-missing" and "starting a container of img:1" in err.value.message
    [(_, create_path, body)] = [s for s in engine_api.seen if s[1].startswith("/v1.44/containers/create")]
    assert create_path == "/v1.44/containers/create?name=n1"
    assert body["Image"] == "img:1" and body["Cmd"] == ["python", "train.py"] and body["Env"] == ["A=1"]
    assert (body["User"], body["WorkingDir"], body["Labels"]) == ("1000:1000", "/w", {"k": "v"})
    host = body["HostConfig"]
    assert host["Mounts"] == [{"Type": "bind", "Source": "/src", "Target": "/dst", "ReadOnly": True}]
    assert (host["NetworkMode"], host["ShmSize"], host["Init"]) == ("host", 1 << 30, True)
    assert host["DeviceRequests"][0]["Count"] == 2 and host["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert [s[1] for s in engine_api.seen].count("/version") == 1  # negotiated once


def test_engine_api_404s_and_other_errors(engine_api):
    engine_api.routes[("GET", "/v1.44/containers/gone/json")] = (404, {"message": "No such container: gone"})
    engine_api.routes[("POST", "/v1.44/containers/gone/stop")] = (404, {"message": "No such container: gone"})
    engine_api.routes[("DELETE", "/v1.44/containers/gone")] = (404, {"message": "No such container: gone"})
    engine_api.routes[("POST", "/v1.44/containers/gone/wait")] = (404, {"message": "No such container: gone"})
    engine_api.routes[("GET", "/v1.44/containers/json")] = (500, {"message": "write /var/lib/docker: no space left on device"})
    docker = Docker(transport="socket")
    assert docker.container_state("gone") is None
    docker.stop("gone", 1)
    docker.remove_container("gone")
    with pytest.raises(DockerError) as err:
        docker.wait("gone")
    assert err.value.code == "docker-failed" and "No such container: gone" in err.value.message
    with pytest.raises(DockerError) as err:
        docker.containers_labelled("a", "b")
    assert err.value.code == "disk-full"


def test_engine_api_logs_chunked_and_multiplexed(engine_api):
    stream = frame(b"epoch 1 loss=0.5\nhalf ") + frame(b"warning\n", 2) + frame(b"a line\r\n") + frame(b"\xffend")
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]  # chunk boundaries cut frames anywhere
    engine_api.routes[("GET", "/v1.44/containers/c1/logs")] = (200, pieces)
    engine_api.routes[("GET", "/v1.44/containers/c1/json")] = (200, {"State": {"Status": "exited", "ExitCode": 0}})
    docker = Docker(transport="socket")
    lines: list[str] = []
    docker.stream_logs("c1", lines.append)
    # Each stream is split on its own: stdout's "half " waits for its own newline, stderr's line is whole.
    assert lines == ["epoch 1 loss=0.5", "warning", "half a line", "\ufffdend"]
    assert docker.container_state("c1") == {"Status": "exited", "ExitCode": 0}  # the stream's connection is reused
    [logs] = [path for _, path, _ in engine_api.seen if path.startswith("/v1.44/containers/c1/logs")]
    assert "follow=1" in logs and "stderr=1" in logs


def test_engine_api_closing_idle_connections(engine_api):
    engine_api.drop_after_response = True
    engine_api.routes[("GET", "/v1.44/containers/c1/json")] = (200, {"State": {"Status": "running"}})
    docker = Docker(transport="socket")
    for _ in range(3):  # each request after the first meets a connection the engine already closed
        assert docker.container_state("c1") == {"Status": "running"}


def test_our_api_version_is_spoken_at_once_and_negotiated_only_when_refused(engine_api):
    engine_api.min_api = "1.12"  # Docker 20.10's range: 1.41 is taken, so no GET /version round trip
    engine_api.routes[("GET", "/v1.41/containers/c1/json")] = (200, {"State": {"Status": "running"}})
    docker = Docker(transport="socket")
    assert docker.container_state("c1") == {"Status": "running"} == docker.container_state("c1")
    assert [path for _, path, _ in engine_api.seen] == ["/v1.41/containers/c1/json"] * 2
    engine_api.seen.clear()
    engine_api.min_api = "1.44"  # an engine that dropped 1.41: refused once, negotiated once, sent again
    engine_api.routes[("GET", "/v1.44/containers/c1/json")] = (200, {"State": {"Status": "exited"}})
    docker = Docker(transport="socket")
    assert docker.container_state("c1") == {"Status": "exited"} == docker.container_state("c1")
    assert [path for _, path, _ in engine_api.seen] == [
        "/v1.41/containers/c1/json", "/version", "/v1.44/containers/c1/json", "/v1.44/containers/c1/json"]


def test_a_refusal_that_is_not_about_the_version_is_an_error(engine_api):
    engine_api.min_api = "1.12"
    engine_api.routes[("POST", "/v1.41/containers/create")] = (400, {"message": "invalid mount config"})
    with pytest.raises(DockerError) as err:
        Docker(transport="socket").run_detached("img:1", ["true"])
    assert "invalid mount config" in err.value.message
    assert "/version" not in [path for _, path, _ in engine_api.seen]


def test_talking_to_the_engine_loads_no_http_client_ssl_or_hashes(engine_api):
    # `run --image` may add little to a `docker run`: http.client (email.parser, ssl) alone was ~15-20 ms of it.
    engine_api.routes[("GET", "/v1.44/containers/c1/json")] = (200, {"State": {"Status": "running"}})
    probe = ("import sys\nfrom envbuilder.docker.engine import Docker\n"
             "assert Docker(transport='socket').container_state('c1') == {'Status': 'running'}\n"
             "print(sorted(m for m in ('http.client', 'ssl', 'email.parser', 'hashlib', 'docker') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


# --- unixhttp: HTTP/1.1 framing as the engine sends it, byte for byte -----------------------------------


@pytest.fixture
def raw_engine(tmp_path):
    """A unix socket that answers each request with scripted bytes: replies[(method, path)] is the whole
    answer, or (answer, "close") to close the connection after it. Requests are recorded in `seen`."""
    path = str(tmp_path / "raw.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    state = {"replies": {}, "seen": [], "connections": 0}

    def serve(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while line := reader.readline():
                method, target, _ = line.decode().split(" ", 2)
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    if header.lower().startswith(b"content-length:"):
                        length = int(header.split(b":")[1])
                reader.read(length)
                state["seen"].append((method, target))
                reply = state["replies"].get((method, target.split("?")[0]), b"HTTP/1.1 404 Not Found\r\n"
                                             b"Content-Length: 27\r\n\r\n{\"message\": \"no such thing\"}")
                data, close = reply if isinstance(reply, tuple) else (reply, None)
                conn.sendall(data)
                if close:
                    return

    # The accept loop must end before the socket closes: a thread left in accept() on a closed descriptor took the
    # connections of the next socket given that number (the session's package index answered uv 404 at random).
    stop = threading.Event()
    server.settimeout(0.05)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            state["connections"] += 1
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield path, state
    stop.set()
    acceptor.join(5)
    server.close()


def _socket_engine(path: str) -> SocketEngine:
    engine = SocketEngine(path, timeout=5)
    engine.api._negotiated = "1.41"  # the raw scripts answer /v1.41 paths
    return engine


def _json_reply(status: str, payload: bytes, *extra: bytes) -> bytes:
    return b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json\r\n" + b"".join(extra) + \
        b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload


def test_unixhttp_attach_hijack_chunked_wait_and_keep_alive(raw_engine):
    path, state = raw_engine
    attached = frame(b"hello\nwor") + frame(b"oops\n", 2) + frame(b"ld")
    state["replies"].update({
        ("POST", "/v1.41/containers/create"): _json_reply("201 Created", b'{"Id": "c9"}'),
        # the engine hijacks the connection: no length, no chunks, the stream ends when the container does
        ("POST", "/v1.41/containers/c9/attach"): (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n" + attached, "close"),
        ("POST", "/v1.41/containers/c9/start"): b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ("POST", "/v1.41/containers/c9/wait"): (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                 b"9;ext=1\r\n{\"StatusC\r\n10\r\node\": 3, \"Error\"\r\n"
                                                 b"7\r\n: null}\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        ("DELETE", "/v1.41/containers/c9"): b"HTTP/1.1 204 No Content\r\n\r\n",
    })
    engine = _socket_engine(path)
    container = engine.run_detached("img:1", ["true"], attach=True)
    lines: list[str] = []
    assert (container, engine.follow_to_exit(container, lines.append)) == ("c9", 3)
    assert lines == ["hello", "oops", "world"]
    engine.remove_container(container)
    assert [m + " " + t.split("?")[0] for m, t in state["seen"]] == [
        "POST /v1.41/containers/create", "POST /v1.41/containers/c9/attach", "POST /v1.41/containers/c9/start",
        "POST /v1.41/containers/c9/wait", "DELETE /v1.41/containers/c9"]
    assert state["connections"] == 2  # the hijacked one, and one kept alive for everything else


def test_unixhttp_a_stream_cut_short_keeps_what_arrived_and_drops_the_connection(raw_engine):
    path, state = raw_engine
    first = frame(b"first line\n")
    state["replies"][("GET", "/v1.41/containers/c1/logs")] = (  # the second chunk promises 0x40 bytes; 11 come
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + f"{len(first):x}\r\n".encode() + first
        + b"\r\n40\r\n" + frame(b"sec"), "close")
    state["replies"][("GET", "/v1.41/containers/c1/json")] = _json_reply("200 OK", b'{"State": {"Status": "exited"}}')
    engine = _socket_engine(path)
    lines: list[str] = []
    engine.stream_logs("c1", lines.append)
    assert lines == ["first line", "sec"]
    assert engine.container_state("c1") == {"Status": "exited"} and state["connections"] == 2


@pytest.mark.parametrize("reply", [
    (_json_reply("200 OK", b'{"Id": "sha256:1"}')[:-4], "close"),  # a body shorter than its Content-Length
    (b"SSH-2.0-OpenSSH_9.6\r\n", "close"),  # not HTTP at all
    (b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}", "close"),
    (b"", "close"),  # closed without an answer, on a fresh connection
])
def test_unixhttp_broken_answers_are_docker_errors(raw_engine, reply):
    path, state = raw_engine
    state["replies"][("GET", "/v1.41/images/img:1/json")] = reply
    with pytest.raises(DockerError) as err:
        _socket_engine(path).image_inspect("img:1")
    assert "inspecting img:1" in err.value.message


def test_no_engine_is_docker_not_running(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'gone.sock'}")
    with pytest.raises(DockerError) as err:
        Docker(transport="socket").image_inspect("img:1")
    assert err.value.code == "docker-not-running"


# --- the real engine, both transports -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def image():
    from envbuilder.build.base import bootstrap_base

    return bootstrap_base(Docker()).name


@pytest.fixture(params=TRANSPORTS)
def docker(request):
    docker = Docker(transport=request.param)
    assert docker.transport == request.param
    docker.ping()
    started: list[str] = []
    original = docker.run_detached

    def run_detached(*args, **kwargs):
        kwargs.setdefault("labels", {LABEL: "1"})
        started.append(original(*args, **kwargs))
        return started[-1]

    docker.run_detached = run_detached
    yield docker
    for container in started:
        docker.remove_container(container)


def run_to_end(docker, image, command, **kwargs) -> tuple[list[str], int, str]:
    container = docker.run_detached(image, command, **kwargs)
    lines: list[str] = []
    docker.stream_logs(container, lines.append)
    return lines, docker.wait(container), container


def lines_after_exit(docker, container) -> tuple[int, list[str]]:
    code = docker.wait(container)
    lines: list[str] = []
    docker.stream_logs(container, lines.append)
    return code, lines


@pytest.mark.docker
def test_lifecycle_output_and_exit_code(docker, image):
    lines, code, container = run_to_end(docker, image, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert code == 7 and sorted(lines) == ["err", "out"]
    state = docker.container_state(container)
    assert (state["Status"], state["ExitCode"]) == ("exited", 7)


@pytest.mark.docker
def test_logs_of_an_exited_container_end_with_its_last_partial_line(docker, image):
    # Read after the exit (as base.py's probe does): a followed stream may end before the engine has logged
    # a last line without a newline, with either transport (moby/moby#43860).
    container = docker.run_detached(image, ["sh", "-c", "echo first; printf 'no newline'"])
    assert lines_after_exit(docker, container) == (0, ["first", "no newline"])


@pytest.mark.docker
def test_lifecycle_settings_reach_the_container(docker, image, tmp_path):
    (tmp_path / "in.txt").write_text("mounted")
    script = ("import os, time; print(os.getuid(), os.getcwd(), os.environ['GREETING'], open('/data/in.txt').read());"
              "st = os.statvfs('/dev/shm'); print(st.f_frsize * st.f_blocks, flush=True); time.sleep(0.3);"
              "open('/data/x', 'w')")
    lines, code, _ = run_to_end(docker, image, ["python", "-c", script], mounts=[(str(tmp_path), "/data", True)],
                                env={"GREETING": "hi"}, user=f"{os.getuid()}:{os.getgid()}", workdir="/tmp", shm_size="96m",
                                name=f"envbuilder-test-{uuid.uuid4().hex[:8]}")
    assert lines[:2] == [f"{os.getuid()} /tmp hi mounted", str(96 << 20)], lines
    assert code == 1 and "Read-only file system" in lines[-1]


@pytest.mark.docker
def test_ten_thousand_lines_arrive_in_order(docker, image):
    # Read after the exit: on a loaded Docker 20.10 a followed stream can end at the exit before the engine has
    # sent every logged line, with either transport (moby/moby#43860 is the partial-last-line case of it).
    container = docker.run_detached(image, ["seq", "1", "10000"])
    assert lines_after_exit(docker, container) == (0, [str(i) for i in range(1, 10001)])


@pytest.mark.docker
def test_bytes_that_are_not_utf8(docker, image):
    lines, code, _ = run_to_end(docker, image, ["printf", r"\377\376 raw\r\nok \303\251\n"])
    assert code == 0 and lines == ["\ufffd\ufffd raw", "ok é"]


SIGTERM_TRAP = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: (print("SIGTERM: saving", flush=True), time.sleep(0.5), sys.exit(143)))
print("ready", flush=True)
time.sleep(60)
"""


def _stream_in_thread(docker, container) -> tuple[list[str], threading.Thread]:
    lines: list[str] = []
    thread = threading.Thread(target=docker.stream_logs, args=(container, lines.append), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "ready" not in lines and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "ready" in lines
    return lines, thread


@pytest.mark.docker
def test_stop_gives_a_sigterm_trap_its_grace(docker, image):
    container = docker.run_detached(image, ["python", "-c", SIGTERM_TRAP])
    lines, thread = _stream_in_thread(docker, container)
    started = time.monotonic()
    docker.stop(container, 10)  # from this thread while another follows the logs (two connections)
    assert docker.wait(container) == 143 and time.monotonic() - started < 8
    thread.join(10)
    assert lines == ["ready", "SIGTERM: saving"]


@pytest.mark.docker
def test_stop_kills_after_the_grace_period(docker, image):
    container = docker.run_detached(image, ["python", "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                            "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"])
    _stream_in_thread(docker, container)
    started = time.monotonic()
    docker.stop(container, 1)
    assert docker.wait(container) == 137 and 1 <= time.monotonic() - started < 10


@pytest.mark.docker
def test_kill_remove_and_a_vanished_container(docker, image):
    container = docker.run_detached(image, ["sleep", "60"])
    assert docker.container_state(container)["Status"] == "running"
    docker.kill(container)
    assert docker.wait(container) == 137
    docker.remove_container(container)
    assert docker.container_state(container) is None
    docker.remove_container(container)  # gone: no error
    docker.stop(container, 1)
    docker.kill(container)
    assert docker.container_state("0" * 64) is None


@pytest.mark.docker
def test_remove_a_running_container(docker, image):
    container = docker.run_detached(image, ["sleep", "60"])
    docker.remove_container(container)
    assert docker.container_state(container) is None


@pytest.mark.docker
def test_containers_by_label(docker, image):
    value = uuid.uuid4().hex
    ids = {docker.run_detached(image, ["true"], labels={LABEL: value}) for _ in range(2)}
    docker.wait(next(iter(ids)))
    assert set(docker.containers_labelled(LABEL, value)) == ids  # created, running and exited alike
    assert docker.containers_labelled(LABEL, uuid.uuid4().hex) == []


@pytest.mark.docker
def test_missing_image(docker):
    missing = f"envbuilder-test/missing-{uuid.uuid4().hex[:8]}:latest"
    assert docker.image_inspect(missing) is None
    with pytest.raises(DockerError) as err:
        docker.run_detached(missing, ["true"])
    # No registry here: the pull `docker run` makes fails as unreachable; with one, the image is not found.
    assert err.value.code in ("registry-unreachable", "image-not-found")
    assert f"starting a container of {missing}" in err.value.message


@pytest.mark.docker
def test_tag_and_remove_an_image(docker, image):
    ref = f"envbuilder-test/tagged-{uuid.uuid4().hex[:8]}:v1"
    image_id = docker.image_inspect(image)["Id"]
    docker.tag(image_id, ref)
    try:
        assert docker.image_inspect(ref)["Id"] == image_id
    finally:
        docker.remove_image(ref)
    assert docker.image_inspect(ref) is None
    docker.remove_image(ref)  # gone: no error


@pytest.mark.docker
def test_image_inspect_answers_alike(docker, image):
    assert docker.image_inspect(image)["Id"] == Docker(transport="sdk").image_inspect(image)["Id"]


@pytest.mark.docker
def test_gpus_without_the_nvidia_runtime(docker, image):
    label = uuid.uuid4().hex
    with pytest.raises(DockerError) as err:
        docker.run_detached(image, ["true"], gpus="all", labels={LABEL: label})
    assert err.value.code == "nvidia-runtime-missing"
    assert docker.containers_labelled(LABEL, label) == []  # the container the engine created is not left behind


@pytest.mark.docker
def test_while_creating_runs_once_before_the_container_starts(docker, image):
    label = uuid.uuid4().hex
    seen: list[list[str]] = []
    container = docker.run_detached(image, ["true"], labels={LABEL: label},
                                    while_creating=lambda: seen.append(docker.containers_labelled(LABEL, label)))
    assert len(seen) == 1  # once, and before the start: nothing of ours had started when it ran
    assert seen[0] in ([], [container])  # the socket engine runs it while the engine creates the container
    assert docker.wait(container) == 0


@pytest.mark.docker
@pytest.mark.parametrize("failure", [RuntimeError("the run store is locked"), KeyboardInterrupt()])
def test_a_failing_while_creating_leaves_no_container(docker, image, failure):
    label = uuid.uuid4().hex

    def fail() -> None:
        raise failure

    with pytest.raises(type(failure)):
        docker.run_detached(image, ["true"], labels={LABEL: label}, while_creating=fail)
    assert docker.containers_labelled(LABEL, label) == []


@pytest.mark.docker
def test_both_transports_see_one_engine(image):
    socket_client, sdk = Docker(transport="socket"), Docker(transport="sdk")
    container = socket_client.run_detached(image, ["sh", "-c", "echo made by the socket client"], labels={LABEL: "both"})
    try:
        assert lines_after_exit(sdk, container) == (0, ["made by the socket client"])
    finally:
        sdk.remove_container(container)
    assert socket_client.container_state(container) is None



def test_lines_are_split_per_stream_so_a_partial_stdout_line_is_not_glued_to_stderr():
    frames = [(1, b"epoch 1 loss="), (2, b"warning: slow\n"), (1, b"0.5\nlast"), (2, b"tail")]
    assert list(split_lines(frames)) == ["warning: slow", "epoch 1 loss=0.5", "last", "tail"]


@pytest.mark.docker
def test_a_real_container_keeps_stdout_and_stderr_lines_whole(image):
    script = ("import sys, time\nsys.stdout.write('loss='); sys.stdout.flush(); time.sleep(0.2)\n"
              "sys.stderr.write('warning\\n'); sys.stderr.flush(); time.sleep(0.2)\nprint('0.25')")
    code, lines = Docker(transport="socket").run_once(image, ["python3", "-c", script])
    assert code == 0 and sorted(lines) == ["loss=0.25", "warning"]


@pytest.mark.docker
def test_the_socket_engine_hands_sdk_work_and_builds_to_its_own_socket(monkeypatch):
    """Pull, push, load and builds go through the SDK or the docker CLI; they must reach the engine this object
    talks to, not whatever DOCKER_HOST names (found by a benchmark driving a private engine)."""
    from envbuilder.docker.socket_engine import SocketEngine

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    engine = SocketEngine("/var/run/docker.sock")
    assert engine.client.ping() is True
    assert engine.docker_host == "unix:///var/run/docker.sock"

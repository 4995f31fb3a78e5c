"""A loopback PEP 503 index serving wheel files or an existing simple/ tree (`envbuilder index serve`).

Air-gapped and proxied sites keep wheels on disk; served on 127.0.0.1 they stand in for the PyTorch index
(`--torch-index-url`), and a build with `--network host` reaches them. Tests and benchmarks use it the same
way. Two kinds of content, which can be mixed:
- wheel files or folders of them: pages are generated (/simple/, /simple/<name>/, files under /files/);
- a folder that already holds a PEP 503 tree (`<root>/simple/<name>/index.html`, e.g. /opt/pypi-more):
  served as it is.

    with IndexServer(wheels=[Path("/opt/wheels")]) as index:
        index.url  # "http://127.0.0.1:PORT/simple"

From the shell: `envbuilder index serve /opt/wheels --port 18080` (serves until Ctrl-C).
Must not import docker.
"""

from __future__ import annotations

import functools
import hashlib
import html
import http.server
import re
import shutil
import threading
import urllib.parse
from collections.abc import Iterable
from pathlib import Path


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_project(filename: str) -> str:
    return normalize(filename.split("-", 1)[0])


def stable_port(seed: str, low: int = 40000, high: int = 48000) -> int:
    """A port derived from a seed, so a rendered index URL (and Docker's layer cache) survives restarts."""
    return low + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % (high - low)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, server_state: "IndexServer", **kwargs) -> None:
        self.state = server_state
        super().__init__(*args, directory=str(server_state.root or "/nonexistent"), **kwargs)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet; requests are kept instead
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        self.state.requests.append(self.path)
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        files = self.state.files
        if parts[:1] == ["simple"] and len(parts) <= 2 and (len(parts) == 1 or parts[1] in self.state.projects):
            if len(parts) == 1:
                names = sorted(self.state.projects)
                body = "".join(f'<a href="{n}/">{n}</a>\n' for n in names)
            else:
                body = "".join(
                    f'<a href="../../files/{urllib.parse.quote(f)}">{html.escape(f)}</a>\n'
                    for f in sorted(self.state.projects[parts[1]])
                )
            if not path.endswith("/"):
                self.send_response(301)
                self.send_header("Location", path + "/")
                self.end_headers()
                return
            data = f"<!DOCTYPE html><html><body>\n{body}</body></html>\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)
            return
        if len(parts) == 2 and parts[0] == "files" and parts[1] in files:
            target = files[parts[1]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(target.stat().st_size))
            self.end_headers()
            if not head:
                with open(target, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            return
        if self.state.root is not None:  # an existing PEP 503 tree
            return super().do_HEAD() if head else super().do_GET()
        self.send_error(404)


class IndexServer:
    """A threaded HTTP server on 127.0.0.1 serving a PEP 503 index; use as a context manager."""

    def __init__(self, wheels: Iterable[Path] = (), *, root: Path | None = None, port: int = 0) -> None:
        self.root = Path(root) if root else None
        self.files: dict[str, Path] = {}
        for item in wheels:
            item = Path(item)
            for wheel in sorted(item.glob("*.whl")) if item.is_dir() else [item]:
                self.files[wheel.name] = wheel
        self.projects: dict[str, list[str]] = {}
        for name in self.files:
            self.projects.setdefault(wheel_project(name), []).append(name)
        self.requests: list[str] = []
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "IndexServer":
        handler = functools.partial(_Handler, server_state=self)
        try:
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        except OSError:  # the stable port is taken: any port will do, at the cost of Docker's layer cache
            self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="index-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The simple index URL, for --torch-index-url / --index-url."""
        return f"http://127.0.0.1:{self.port}/simple"

    def __enter__(self) -> "IndexServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

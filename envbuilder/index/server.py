"""The loopback package server: wheel folders served on 127.0.0.1 as a PEP 503 index and a find-links page.

Air-gapped and proxied sites keep wheels on disk. One server covers both ways a build reaches them:
- `--find-links DIR` builds (`serve_wheelhouse`): the root page `/` lists every file, at a port derived from
  the folder's path, so the rendered Dockerfile (and so the build key and Docker's layer cache) stays the same
  from one build to the next;
- `envbuilder index serve` and `--torch-index-url` (`IndexServer`): `/simple/` and `/simple/<name>/` pages
  (PEP 503), files under `/files/`. A folder that already holds a PEP 503 tree (`--root`, e.g. /opt/pypi-more)
  is served as it is.
File links carry `#sha256=<hex>` (installers check the download against it) and, for wheels,
`data-requires-python` from the wheel's METADATA, so an installer skips a build for another Python without
downloading it. Both are computed on the first page that lists a file and kept while its size and mtime hold.

    with IndexServer(wheels=[Path("/opt/wheels")]) as index:
        index.url  # "http://127.0.0.1:PORT/simple"

Must not import docker; build/ and the CLI import it only when something is served.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import http.server
import re
import shutil
import threading
import urllib.parse
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

# Files a folder contributes: wheels and sdists (what pip and uv take from a find-links location).
DISTRIBUTION_SUFFIXES = (".whl", ".tar.gz", ".zip")
# Ports for served wheelhouses: high, unprivileged, below the usual ephemeral range (32768+ on Linux).
WHEELHOUSE_PORTS = (20000, 32000)


def normalize(name: str) -> str:
    """PEP 503 name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_project(filename: str) -> str:
    """The normalized project name of a wheel or sdist file name."""
    from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[0])
        return str(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return normalize(filename.split("-", 1)[0])  # a file we did not name: serve it under its first word


def stable_port(seed: str, low: int = 40000, high: int = 48000) -> int:
    """A port derived from a seed, so a rendered index URL (and Docker's layer cache) survives restarts."""
    return low + int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % (high - low)


def wheelhouse_port(folder: Path) -> int:
    """A port derived from the folder's real path: the same folder gets the same URL on every build."""
    return stable_port(str(Path(folder).expanduser().resolve()), *WHEELHOUSE_PORTS)


def loopback_url(port: int) -> str:
    """The find-links URL of a server on this port (its root page)."""
    return f"http://127.0.0.1:{port}/"


def wheel_requires_python(path: Path) -> str | None:
    """Requires-Python from a wheel's METADATA (read from the zip's central directory, not unpacked)."""
    try:
        with zipfile.ZipFile(path) as wheel:
            name = next((n for n in wheel.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            if name is None:
                return None
            with wheel.open(name) as metadata:
                for raw in metadata:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if not line:  # the headers end at the first blank line; the description follows
                        return None
                    key, _, value = line.partition(":")
                    if key.strip().lower() == "requires-python":
                        return value.strip() or None
    except (OSError, zipfile.BadZipFile):
        return None
    return None


class _FileFacts:
    """sha256 and Requires-Python of served files, computed once per (size, mtime) of each file."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int], str, str | None]] = {}
        self._lock = threading.Lock()

    def of(self, path: Path) -> tuple[str, str | None]:
        st = path.stat()
        signature = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._known.get(path)
        if hit and hit[0] == signature:
            return hit[1], hit[2]
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        requires = wheel_requires_python(path) if path.name.endswith(".whl") else None
        with self._lock:
            self._known[path] = (signature, digest.hexdigest(), requires)
        return digest.hexdigest(), requires


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, server_state: IndexServer, **kwargs) -> None:
        self.state = server_state
        super().__init__(*args, directory=str(server_state.root or "/nonexistent"), **kwargs)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet; requests are kept instead
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_PUT(self) -> None:  # read-only: only GET and HEAD are served
        self.send_error(405)

    do_POST = do_DELETE = do_PUT

    def _serve(self, *, head: bool) -> None:
        self.state.requests.append(self.path)
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        page = self.state.page(parts)
        if page is not None:
            if not path.endswith("/"):
                return self._redirect(path + "/")
            return self._send(page.encode(), "text/html", head)
        files = self.state.files
        if len(parts) == 2 and parts[0] == "files" and parts[1] in files:
            target = files[parts[1]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(target.stat().st_size))
            self.end_headers()
            if not head:
                with open(target, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
            return None
        if self.state.root is not None:  # an existing PEP 503 tree
            return super().do_HEAD() if head else super().do_GET()
        self.send_error(404)
        return None

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.end_headers()

    def _send(self, data: bytes, content_type: str, head: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)


class IndexServer:
    """A threaded HTTP server on 127.0.0.1 serving distribution files as an index; use as a context manager."""

    def __init__(self, wheels: Iterable[Path] = (), *, root: Path | None = None, port: int = 0) -> None:
        self.root = Path(root) if root else None
        self.files: dict[str, Path] = {}
        for item in wheels:
            item = Path(item)
            found = sorted(p for p in item.iterdir() if p.is_file() and p.name.endswith(DISTRIBUTION_SUFFIXES)) \
                if item.is_dir() else [item]
            for dist in found:
                self.files.setdefault(dist.name, dist)
        self.projects: dict[str, list[str]] = {}
        for name in sorted(self.files):
            self.projects.setdefault(distribution_project(name), []).append(name)
        self.requests: list[str] = []
        self._facts = _FileFacts()
        self._port = port
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def page(self, parts: list[str]) -> str | None:
        """The generated HTML page for a path (split into segments), or None when this server has none there."""
        generated = bool(self.files) or self.root is None  # else an existing tree answers for / and /simple/
        if not parts and generated:  # the find-links page: every file
            return _html(self._links(sorted(self.files), "files/"))
        if parts == ["simple"] and generated:
            return _html("".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(self.projects)))
        if len(parts) == 2 and parts[0] == "simple" and parts[1] in self.projects:
            return _html(self._links(self.projects[parts[1]], "../../files/"))
        return None

    def _links(self, names: Iterable[str], prefix: str) -> str:
        rows = []
        for name in names:
            sha256, requires = self._facts.of(self.files[name])
            attribute = f' data-requires-python="{html.escape(requires, quote=True)}"' if requires else ""
            rows.append(f'<a href="{prefix}{urllib.parse.quote(name)}#sha256={sha256}"{attribute}>'
                        f"{html.escape(name)}</a>\n")
        return "".join(rows)

    def start(self) -> IndexServer:
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

    @property
    def find_links_url(self) -> str:
        """The page listing every file, for --find-links."""
        return loopback_url(self.port)

    def __enter__(self) -> IndexServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def serve_wheelhouse(folder: Path, *, port: int | None = None) -> Iterator[str]:
    """Serve a folder's distributions on 127.0.0.1 (its derived port, else any free one); yield the find-links URL."""
    folder = Path(folder).expanduser().resolve()
    with IndexServer([folder], port=wheelhouse_port(folder) if port is None else port) as server:
        yield server.find_links_url


def _html(body: str) -> str:
    return f"<!DOCTYPE html><html><body>\n{body}</body></html>\n"

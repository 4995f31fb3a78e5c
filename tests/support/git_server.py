"""A git smart-HTTP server on loopback for tests: `git http-backend` behind a small threaded HTTP server.

    with GitHttpServer(root, user="ci", password="s3cret") as server:
        server.url("demo.git")          # http://127.0.0.1:PORT/demo.git (no credentials)
        server.url("demo.git", auth=True)  # http://ci:s3cret@127.0.0.1:PORT/demo.git

With a user set, every request without the right Basic credentials gets 401 (as a private repository does);
`authorizations` records the Authorization header of each request, so tests can check what git sent.
Listens on 127.0.0.1 only. Needs git's http-backend (in git-core, found through `git --exec-path`).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote


def http_backend() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    exec_path = subprocess.run([git, "--exec-path"], capture_output=True, text=True).stdout.strip()
    backend = Path(exec_path) / "git-http-backend"
    return str(backend) if backend.is_file() else None


class GitHttpServer:
    def __init__(self, root: Path, *, user: str | None = None, password: str | None = None) -> None:
        self.root = Path(root)
        self.user, self.password = user, password
        self.authorizations: list[str | None] = []
        backend = http_backend()
        if backend is None:
            raise RuntimeError("git http-backend is not installed")
        self._backend = backend
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, repo: str, *, auth: bool = False) -> str:
        userinfo = f"{quote(self.user or '', safe='')}:{quote(self.password or '', safe='')}@" if auth else ""
        return f"http://{userinfo}127.0.0.1:{self.port}/{repo}"

    def __enter__(self) -> "GitHttpServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorized(self, header: str | None) -> bool:
        if self.user is None:
            return True
        expected = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
        return header == f"Basic {expected}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def do_GET(self) -> None:
                self._cgi()

            def do_POST(self) -> None:
                self._cgi()

            def _cgi(self) -> None:
                header = self.headers.get("Authorization")
                server.authorizations.append(header)
                if not server._authorized(header):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_PROJECT_ROOT": str(server.root),
                       "GIT_HTTP_EXPORT_ALL": "1", "REQUEST_METHOD": self.command, "PATH_INFO": path,
                       "QUERY_STRING": query, "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                       "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
                       "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(server.root)}
                for name in ("Content-Encoding", "Git-Protocol"):
                    if self.headers.get(name):
                        env["HTTP_" + name.upper().replace("-", "_")] = self.headers[name]
                if server.user:
                    env["REMOTE_USER"] = server.user
                done = subprocess.run([server._backend], input=body, env=env, capture_output=True)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = done.stdout.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

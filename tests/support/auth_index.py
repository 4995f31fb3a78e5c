"""A loopback PEP 503 index that requires HTTP Basic credentials: envbuilder's IndexServer behind a 401.

Private mirrors (Artifactory, Nexus, a cloud's package registry) answer 401 with a `WWW-Authenticate: Basic`
challenge until the right credentials come. This wraps the real index server's handler with that check and
records what each request sent, so a test can prove the credentials arrived (snapshot, uv, pip inside a build)
and that nothing else did. `torch_stand_in` makes a tiny wheel named like the CPU torch build, so a real build
through the mirror takes seconds.

    with AuthIndex([folder], user="ci", password="s3cret") as index:
        index.url            # http://127.0.0.1:PORT/simple (bare)
        index.secret_url     # http://ci:s3cret@127.0.0.1:PORT/simple
"""

from __future__ import annotations

import base64
import functools
import http.server
import threading
from pathlib import Path

from support.local_index import _wheel

from envbuilder.index.server import IndexServer, _Handler


class AuthIndex(IndexServer):
    """IndexServer that answers 401 to any request without `user:password` as Basic credentials."""

    def __init__(self, wheels, *, user: str, password: str) -> None:
        super().__init__(wheels)
        self.user, self.password = user, password
        self.authorized: list[str] = []  # paths served with the right credentials
        self.refused: list[str] = []  # paths answered 401

    def start(self) -> AuthIndex:
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        state = self

        class Handler(_Handler):
            def _serve(self, *, head: bool) -> None:
                if self.headers.get("Authorization") != expected:
                    state.refused.append(self.path)
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="test index"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                state.authorized.append(self.path)
                super()._serve(head=head)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, server_state=self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="auth-index", daemon=True)
        self._thread.start()
        return self

    @property
    def secret_url(self) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/simple"


def torch_stand_in(folder: Path, version: str = "2.13.0+cpu", tag: str = "cp311-cp311-manylinux_2_28_x86_64") -> Path:
    """A wheel named torch-VERSION-TAG.whl whose module says its version: what the index lists and uv installs,
    without torch's 190 MB."""
    folder.mkdir(parents=True, exist_ok=True)
    return _wheel(folder, {"name": "torch", "version": version, "requires_python": ">=3.10"}, tag)

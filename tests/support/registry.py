"""A real registry on loopback for tests: Debian's `docker-registry` (the distribution registry, v2 API),
started and stopped by the test.

`LocalRegistry` serves on 127.0.0.1:PORT, plain HTTP (the engine allows 127.0.0.0/8 registries without TLS by
default) or TLS from a throw-away test CA, with htpasswd basic auth when a user is given. For TLS the engine
must trust the CA: dockerd reads /etc/docker/certs.d/HOST:PORT/ca.crt at each connection (no restart), so
`trust_ca()` writes it there (root only) and `stop()` removes it again. Needs the docker-registry package
(scripts/system-deps.sh) and, for auth, htpasswd (apache2-utils); the caller skips with `unavailable()`.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

CERTS_D = Path("/etc/docker/certs.d")


def registry_binary() -> str | None:
    return shutil.which("docker-registry") or shutil.which("registry")


def unavailable(*, auth: bool = False, tls: bool = False) -> str | None:
    """Why a registry of that kind cannot run here, or None."""
    if registry_binary() is None:
        return "the docker-registry package is not installed (scripts/system-deps.sh)"
    if auth and shutil.which("htpasswd") is None:
        return "htpasswd (apache2-utils) is not installed"
    if tls and (shutil.which("openssl") is None or os.geteuid() != 0):
        return "a TLS registry needs openssl and root (the engine's trust lives in /etc/docker/certs.d)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """One registry process with its own storage under `root`."""

    def __init__(self, root: Path, *, user: str | None = None, password: str | None = None,
                 tls: bool = False) -> None:
        self.root = Path(root)
        self.user, self.password, self.tls = user, password, tls
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ca: Path | None = None
        self._process: subprocess.Popen | None = None
        self._trusted: Path | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def __enter__(self) -> "LocalRegistry":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.root / 'data'}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}"]
        if self.tls:
            cert, key = self._make_certs()
            lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        if self.user:
            htpasswd = self.root / "htpasswd"
            made = subprocess.run(["htpasswd", "-Bbn", self.user, self.password or ""], capture_output=True,
                                  text=True, check=True)
            htpasswd.write_text(made.stdout)
            lines += ["auth:", "  htpasswd:", "    realm: test-realm", f"    path: {htpasswd}"]
        config.write_text("\n".join(lines) + "\n")
        log = open(self.root / "registry.log", "ab")
        self._process = subprocess.Popen([registry_binary(), "serve", str(config)], stdout=log, stderr=log,
                                         start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the registry did not start; see {self.root / 'registry.log'}")

    def _answers(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca)) if self.tls else None
        try:
            urllib.request.urlopen(f"{self.url}/v2/", timeout=1, context=context)
            return True
        except urllib.error.HTTPError as exc:
            return exc.code == 401  # up, and asking for credentials
        except OSError:
            return False

    def _make_certs(self) -> tuple[Path, Path]:
        """A test CA and a server certificate for 127.0.0.1 signed by it."""
        d = self.root / "tls"
        d.mkdir(exist_ok=True)

        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
                "-days", "2", "-subj", "/CN=envbuilder test CA")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
                "-subj", "/CN=127.0.0.1")
        (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf")
        self.ca = d / "ca.crt"
        return d / "server.crt", d / "server.key"

    def trust_ca(self) -> Path:
        """Make the engine trust this registry's CA (/etc/docker/certs.d/HOST:PORT/ca.crt)."""
        assert self.ca is not None, "only a TLS registry has a CA"
        folder = CERTS_D / self.host
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.ca, folder / "ca.crt")
        self._trusted = folder
        return folder / "ca.crt"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
        if self._trusted is not None:
            shutil.rmtree(self._trusted, ignore_errors=True)
            self._trusted = None

    def has_tag(self, repo: str, tag: str) -> bool:
        """Whether the registry holds repo:tag (the v2 API, with the test's credentials)."""
        request = urllib.request.Request(f"{self.url}/v2/{repo}/manifests/{tag}", method="HEAD", headers={
            "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        if self.user:
            import base64

            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca)) if self.tls else None
        try:
            urllib.request.urlopen(request, timeout=5, context=context)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise

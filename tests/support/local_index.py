"""A package index on loopback, served from tiny wheels and sdists generated at test time.

The packages are data (tests/data/index-fixtures/packages.json), shaped like the real cases issue #8 names:
a scipy whose 1.10.0 has compiled wheels only up to cp311, a numpy whose 2.2.6 lacks cp314, an sdist-only
pure-Python package, a torchtext that requires torch==2.1.0, and a torch with several releases. Real uv
resolves against it (`--index-url http://127.0.0.1:PORT/simple`), so the default test run needs no network.
Project pages speak PEP 691 JSON when asked for it and PEP 503 HTML otherwise (`json_pages=False` serves
HTML only, as many mirrors do). Every request is recorded, so tests can see what a cache saved.

Also the `pypi` mark: tests that resolve against the real PyPI run only with --run-pypi or ENVBUILDER_TEST_PYPI=1.
"""

from __future__ import annotations

import html
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "index-fixtures"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def pytest_addoption(parser):
    parser.addoption("--run-pypi", action="store_true", help="run tests that resolve against the real PyPI")


def pytest_configure(config):
    config.addinivalue_line("markers", "pypi: resolves against the real PyPI; opt-in with --run-pypi")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-pypi") or os.environ.get("ENVBUILDER_TEST_PYPI") == "1":
        return
    skip = pytest.mark.skip(reason="pypi: opt in with --run-pypi or ENVBUILDER_TEST_PYPI=1")
    for item in items:
        if "pypi" in item.keywords:
            item.add_marker(skip)


# --- generated distributions --------------------------------------------------------------------------------
def _metadata(pkg: dict, version: str = "2.1") -> str:
    lines = [f"Metadata-Version: {version}", f"Name: {pkg['name']}", f"Version: {pkg['version']}"]
    if pkg.get("requires_python"):
        lines.append(f"Requires-Python: {pkg['requires_python']}")
    lines += [f"Requires-Dist: {req}" for req in pkg.get("requires_dist", [])]
    return "\n".join(lines) + "\n\n"


def _wheel(folder: Path, pkg: dict, tag: str) -> Path:
    python, abi, platform = tag.split("-")
    stem = f"{pkg['name'].replace('-', '_')}-{pkg['version']}"
    path = folder / f"{stem}-{python}-{abi}-{platform}.whl"
    info = f"{stem}.dist-info"
    files = {
        f"{pkg['name'].replace('-', '_')}/__init__.py": f"__version__ = {pkg['version']!r}\n",
        f"{info}/METADATA": _metadata(pkg),
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: envbuilder-tests\nRoot-Is-Purelib: false\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def _sdist(folder: Path, pkg: dict) -> Path:
    # Metadata-Version 2.2 with nothing dynamic: uv reads the dependencies from PKG-INFO without building.
    stem = f"{pkg['name'].replace('-', '_')}-{pkg['version']}"
    path = folder / f"{stem}.tar.gz"
    deps = ", ".join(json.dumps(r) for r in pkg.get("requires_dist", []))
    members = {
        "PKG-INFO": _metadata(pkg, "2.2"),
        "pyproject.toml": (f"[project]\nname = {pkg['name']!r}\nversion = {pkg['version']!r}\n"
                           f"dependencies = [{deps}]\n"),
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, text in members.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{stem}/{name}")
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return path


def build_distributions(folder: Path, spec: dict) -> dict[str, list[tuple[Path, dict]]]:
    """Write every package's wheels and sdist; {normalized name: [(file, package entry)]}."""
    folder.mkdir(parents=True, exist_ok=True)
    by_project: dict[str, list[tuple[Path, dict]]] = {}
    for pkg in spec["packages"]:
        made = [_wheel(folder, pkg, f"{abi}-{platform}") for abi in pkg.get("wheels", [])
                for platform in pkg.get("platforms", ["any"])]
        if pkg.get("sdist"):
            made.append(_sdist(folder, pkg))
        by_project.setdefault(pkg["name"].lower(), []).extend((path, pkg) for path in made)
    return by_project


# --- the server ---------------------------------------------------------------------------------------------
@dataclass
class LocalIndex:
    projects: dict[str, list[tuple[Path, dict]]]
    json_pages: bool = True
    requests: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple"

    def page_requests(self, name: str) -> int:
        return sum(1 for path in self.requests if path.rstrip("/") == f"/simple/{name}")

    def project_page(self, name: str, want_json: bool) -> tuple[bytes, str]:
        files = self.projects[name]
        if want_json and self.json_pages:
            body = {"meta": {"api-version": "1.0"}, "name": name, "files": [
                {"filename": p.name, "url": f"/files/{p.name}", "hashes": {},
                 "requires-python": pkg.get("requires_python"), "yanked": bool(pkg.get("yanked"))}
                for p, pkg in files]}
            return json.dumps(body).encode(), JSON_TYPE
        links = []
        for path, pkg in files:
            requires = pkg.get("requires_python")
            attrs = f' data-requires-python="{html.escape(requires)}"' if requires else ""
            attrs += " data-yanked" if pkg.get("yanked") else ""
            links.append(f'<a href="/files/{path.name}"{attrs}>{path.name}</a><br>')
        return ("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>").encode(), "text/html"


def _handler(index: LocalIndex):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # requests are recorded instead
            pass

        def do_GET(self):
            index.requests.append(self.path)
            parts = [p for p in self.path.split("?")[0].split("/") if p]
            if parts[:1] == ["simple"] and len(parts) == 2 and parts[1] in index.projects:
                body, kind = index.project_page(parts[1], JSON_TYPE in self.headers.get("Accept", ""))
            elif parts == ["simple"]:
                body, kind = "".join(f'<a href="/simple/{n}/">{n}</a>' for n in index.projects).encode(), "text/html"
            elif parts[:1] == ["files"] and len(parts) == 2:
                found = [p for files in index.projects.values() for p, _ in files if p.name == parts[1]]
                if not found:
                    return self.send_error(404)
                body, kind = found[0].read_bytes(), "application/octet-stream"
            else:
                return self.send_error(404)
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture(scope="session")
def local_index(tmp_path_factory):
    """The generated index, served on 127.0.0.1 for the whole session; tests reset .requests and .json_pages."""
    spec = json.loads((FIXTURES / "packages.json").read_text(encoding="utf-8"))
    index = LocalIndex(build_distributions(tmp_path_factory.mktemp("local-index"), spec))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    index.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()

"""The loopback package server (index/server.py), over real HTTP on 127.0.0.1: the find-links page of a
wheelhouse build, the PEP 503 pages of `envbuilder index serve`, their #sha256 fragments and
data-requires-python, and a real uv resolve against it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from envbuilder.index.server import IndexServer, serve_wheelhouse, wheel_requires_python, wheelhouse_port

UV = str(Path(sys.executable).parent / "uv")


def make_wheel(folder: Path, name: str, version: str, requires_python: str | None = None) -> Path:
    """A minimal installable wheel: one module, METADATA (with Requires-Python when given), WHEEL, RECORD."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        metadata += f"Requires-Python: {requires_python}\n"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{name}.py", "VALUE = 1\n")
        wheel.writestr(f"{info}/METADATA", metadata + "\nRequires-Python: not-a-header (the description)\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def fetch(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


@pytest.fixture
def wheelhouse(tmp_path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "demo", "1.0", ">=3.8,<4")
    make_wheel(folder, "demo", "2.0", ">=3.99")
    make_wheel(folder, "Other_Pkg", "0.1")
    (folder / "notes.txt").write_text("not a distribution")
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_requires_python_is_read_from_the_metadata_headers_only(wheelhouse, tmp_path):
    assert wheel_requires_python(wheelhouse / "demo-1.0-py3-none-any.whl") == ">=3.8,<4"
    assert wheel_requires_python(wheelhouse / "Other_Pkg-0.1-py3-none-any.whl") is None
    (tmp_path / "broken-1.0-py3-none-any.whl").write_bytes(b"PK not a zip")
    assert wheel_requires_python(tmp_path / "broken-1.0-py3-none-any.whl") is None


def test_wheelhouse_port_is_derived_from_the_folder(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert wheelhouse_port(a) == wheelhouse_port(a)
    assert 20000 <= wheelhouse_port(a) < 32000
    assert wheelhouse_port(a) != wheelhouse_port(b)


def test_find_links_page_lists_every_distribution_with_hash_and_requires_python(wheelhouse):
    with serve_wheelhouse(wheelhouse) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        page = fetch(url)
        demo = wheelhouse / "demo-1.0-py3-none-any.whl"
        assert f'href="files/demo-1.0-py3-none-any.whl#sha256={sha256(demo)}"' in page
        assert 'data-requires-python="&gt;=3.8,&lt;4"' in page  # escaped, as PEP 503 asks
        assert 'data-requires-python="&gt;=3.99"' in page
        assert "Other_Pkg-0.1-py3-none-any.whl#sha256=" in page and "notes.txt" not in page
        assert urllib.request.urlopen(url + "files/demo-1.0-py3-none-any.whl", timeout=5).read() == demo.read_bytes()


def test_simple_pages_follow_pep_503(wheelhouse):
    with IndexServer(wheels=[wheelhouse]) as index:
        assert index.url == f"http://127.0.0.1:{index.port}/simple"
        assert fetch(index.url + "/").count("<a ") == 2 and 'href="other-pkg/"' in fetch(index.url + "/")
        page = fetch(index.url + "/demo/")
        two = wheelhouse / "demo-2.0-py3-none-any.whl"
        assert f'href="../../files/demo-2.0-py3-none-any.whl#sha256={sha256(two)}"' in page
        assert fetch(index.url + "/demo").startswith("<!DOCTYPE html>")  # redirected to the slash form
        with pytest.raises(urllib.error.HTTPError) as missing:
            fetch(index.url + "/absent/")
        assert missing.value.code == 404
        put = urllib.request.Request(index.url + "/demo/", data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(put, timeout=5)
        assert refused.value.code == 405


def test_a_changed_file_gets_a_fresh_hash(wheelhouse):
    with IndexServer(wheels=[wheelhouse]) as index:
        before = fetch(index.url + "/other-pkg/")
        make_wheel(wheelhouse, "Other_Pkg", "0.1", ">=3.10")  # rewritten in place: new size and mtime
        after = fetch(index.url + "/other-pkg/")
        assert before != after and f"#sha256={sha256(wheelhouse / 'Other_Pkg-0.1-py3-none-any.whl')}" in after


def test_an_existing_tree_is_served_as_it_is(tmp_path):
    (tmp_path / "simple" / "demo").mkdir(parents=True)
    (tmp_path / "simple" / "demo" / "index.html").write_text("<a href='x'>tree page</a>")
    with IndexServer(root=tmp_path) as index:
        assert "tree page" in fetch(index.url + "/demo/")


@pytest.mark.parametrize("mode", ["find-links", "index"])
def test_uv_resolves_against_it_and_skips_builds_for_another_python(wheelhouse, tmp_path, mode):
    with IndexServer(wheels=[wheelhouse]) as index:
        where = ["--no-index", "--find-links", index.find_links_url] if mode == "find-links" else ["--index-url", index.url]
        result = subprocess.run(
            [UV, "pip", "compile", "-", "--python-version", "3.11", "--no-header", "--generate-hashes", *where],
            input="demo\n", capture_output=True, text=True, timeout=120,
            env={"UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        assert "demo==1.0" in result.stdout  # 2.0 needs Python 3.99
        if mode == "index":  # uv takes a simple page's #sha256 as the file's hash (its flat-index output has none)
            assert f"--hash=sha256:{sha256(wheelhouse / 'demo-1.0-py3-none-any.whl')}" in result.stdout
        assert not any("demo-2.0" in r for r in index.requests)  # skipped by data-requires-python, never fetched

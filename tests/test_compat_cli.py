"""`envbuilder compat show|update` run in-process through the real CLI entry point."""

from __future__ import annotations

import json

import pytest

from envbuilder.index.matrix_update import update_matrix
from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.matrix import PACKAGED_MATRIX
from envbuilder.settings import Settings


def _override(tmp_path):
    return tmp_path / "envbuilder-home" / "compatibility.json"


def _matrix_file(tmp_path, name="m.json", **changes):
    raw = json.loads(PACKAGED_MATRIX.read_text())
    raw.update(changes)
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


def test_show_json_lists_releases_newest_first(cli):
    result = cli("compat", "show", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    versions = [r["version"] for r in data["releases"]]
    assert versions[0] == max(versions, key=lambda v: tuple(int(p) for p in v.split(".")))
    assert "1.13.0" in versions
    assert data["cuda"][0]["min_driver_linux"]
    assert set(data["sources"]) >= {"torch", "cuda", "rocm", "onnxruntime", "indexes"}
    row = next(r for r in data["releases"] if r["version"] == "2.8.0")
    assert row["platforms"]["linux/x86_64"][:2] == ["cpu", "cu126"]
    assert row["python_range"] == "3.9-3.13"


def test_show_one_release_in_full(cli):
    result = cli("compat", "show", "--json", "--torch", "2.14.1")
    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["releases"]
    cu130 = next(b for b in row["builds"] if b["flavor"] == "cu130" and b["os"] == "linux" and b["arch"] == "x86_64")
    assert cu130["sm"][-1] == "12.0" and cu130["index_url"].endswith("/cu130")


def test_show_unknown_release_is_one_line_error(cli):
    result = cli("compat", "show", "--torch", "0.1.0")
    assert result.exit_code != 0
    assert "unknown-torch-release" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_show_human_table(cli):
    result = cli("compat", "show")
    assert result.exit_code == 0, result.stderr
    assert "2.14.1" in result.stdout and "cu130" in result.stdout
    assert "570.26" in result.stdout


def test_update_from_good_file_installs_it(cli, tmp_path):
    good = _matrix_file(tmp_path, updated="2099-01-01")
    result = cli("compat", "update", "--from", str(good), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["updated"] == "2099-01-01"
    assert json.loads(_override(tmp_path).read_text())["updated"] == "2099-01-01"
    shown = json.loads(cli("compat", "show", "--json").stdout)
    assert shown["updated"] == "2099-01-01"


@pytest.mark.parametrize(
    "content",
    [b"{broken", b'{"schema_version": 1}', json.dumps({"hello": "world"}).encode()],
    ids=["bad-json", "missing-tables", "not-a-matrix"],
)
def test_update_from_bad_file_keeps_the_old_matrix(cli, tmp_path, content):
    good = _matrix_file(tmp_path, updated="2099-01-01")
    assert cli("compat", "update", "--from", str(good)).exit_code == 0
    before = _override(tmp_path).read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = cli("compat", "update", "--from", str(bad))
    assert result.exit_code != 0
    assert "matrix-invalid" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert _override(tmp_path).read_bytes() == before
    assert not [p for p in _override(tmp_path).parent.iterdir() if p.name.endswith(".tmp")]


def test_update_refuses_an_older_matrix_unless_forced(cli, tmp_path):
    old = _matrix_file(tmp_path, updated="2020-01-01")
    result = cli("compat", "update", "--from", str(old))
    assert result.exit_code != 0 and "matrix-older" in result.stderr
    assert not _override(tmp_path).exists()
    result = cli("compat", "update", "--from", str(old), "--force")
    assert result.exit_code == 0, result.stderr
    assert json.loads(_override(tmp_path).read_text())["updated"] == "2020-01-01"


def test_update_from_missing_file(cli, tmp_path):
    result = cli("compat", "update", "--from", str(tmp_path / "nope.json"))
    assert result.exit_code != 0 and "matrix-source-missing" in result.stderr


def test_update_refuses_plain_http(tmp_path):
    with pytest.raises(EnvbuilderError) as info:
        update_matrix("http://example.invalid/compatibility.json", Settings(tmp_path))
    assert info.value.code == "matrix-source-refused"


def test_update_refuses_oversized_file(tmp_path, monkeypatch):
    import envbuilder.index.matrix_update as compat

    monkeypatch.setattr(compat, "MAX_MATRIX_BYTES", 10)
    big = _matrix_file(tmp_path)
    with pytest.raises(EnvbuilderError) as info:
        compat.update_matrix(str(big), Settings(tmp_path / "home"))
    assert info.value.code == "matrix-too-large"


def test_update_over_https_from_a_local_server(tmp_path):
    """A loopback https server with a throwaway certificate stands in for the matrix host."""
    import http.server
    import ssl
    import subprocess
    import threading
    import urllib.request

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
    )
    if made.returncode != 0:
        pytest.skip("openssl could not make a test certificate")
    served = tmp_path / "www"
    served.mkdir()
    _matrix_file(served, "compatibility.json", updated="2099-02-02")

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(cert))
    original = urllib.request.urlopen
    try:
        urllib.request.urlopen = lambda req, timeout: original(req, timeout=timeout, context=client)
        matrix = update_matrix(f"https://127.0.0.1:{server.server_port}/compatibility.json", Settings(tmp_path / "home"))
    finally:
        urllib.request.urlopen = original
        server.shutdown()
        server.server_close()
    assert matrix.updated == "2099-02-02"
    assert (tmp_path / "home" / "compatibility.json").is_file()

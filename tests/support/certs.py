"""Real PEM certificates for tests that pass a CA bundle: envbuilder refuses a --ca-cert OpenSSL cannot load.

Taken from this machine's CA bundle (the certificates are public), else made with openssl; a test that gets
none skips with the reason."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

HOST_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
_END = "-----END CERTIFICATE-----"


def pem_certificates(count: int) -> list[str]:
    """`count` different PEM certificates, each ending in a newline."""
    for name in HOST_BUNDLES:
        if Path(name).is_file():
            text = Path(name).read_text(encoding="ascii", errors="replace")
            blocks = [b[b.index("-----BEGIN CERTIFICATE-----"):] + _END + "\n" for b in text.split(_END)
                      if "-----BEGIN CERTIFICATE-----" in b]
            if len(blocks) >= count:
                return blocks[:count]
    made = []
    with tempfile.TemporaryDirectory() as folder:
        for n in range(count):
            cert, key = Path(folder) / f"{n}.pem", Path(folder) / f"{n}.key"
            done = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                                   "-subj", f"/CN=envbuilder-test-{n}", "-keyout", str(key), "-out", str(cert)],
                                  capture_output=True, check=False)
            if done.returncode != 0:
                pytest.skip("no CA bundle on this machine and openssl could not make a certificate")
            made.append(cert.read_text())
    return made

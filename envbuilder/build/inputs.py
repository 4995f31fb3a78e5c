"""A build's own inputs, checked before anything is built: the CA bundle it trusts and the tag the user asked for.

A CA file OpenSSL cannot load as PEM would otherwise reach the build as a BuildKit secret and fail every download
with a TLS error that reads like a missing package (dependency-unresolvable); a tag Docker refuses would fail
only after a build of many minutes. Uses the standard library only; must not import docker, the resolver or the CLI.
"""

from __future__ import annotations

import functools
import re
import ssl
from pathlib import Path

from envbuilder.errors import EnvbuilderError, UsageError


def check_ca_bundle(path: str | Path, what: str = "--ca-cert") -> Path:
    """`path` resolved, when it is a regular file of PEM certificates; else a one-line error saying what to pass."""
    file = Path(path)
    if not file.exists():
        raise EnvbuilderError("ca-cert-missing", f"CA bundle {file} does not exist", f"pass a PEM file to {what}")
    if not file.is_file():  # a FIFO would block the read, a folder is no bundle
        raise UsageError("ca-cert-invalid", f"{what} {file} is not a regular file", f"pass a PEM file to {what}")
    stat = file.stat()
    reason = _pem_problem(str(file.resolve()), stat.st_size, stat.st_mtime_ns)
    if reason is not None:
        raise UsageError("ca-cert-invalid", f"{what} {file} is not a PEM CA bundle ({reason})",
                         "pass PEM certificates (-----BEGIN CERTIFICATE-----); convert a DER file with "
                         "`openssl x509 -inform der -in FILE -out FILE.pem`")
    return file.resolve()


@functools.lru_cache(maxsize=8)
def _pem_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """Why OpenSSL refuses the bundle, or None. Loading a system bundle costs ~40 ms, and the flags, the build and
    the registry each check the same file in one command: keyed by size and mtime, it is read once."""
    try:
        # A bare context: create_default_context() would first load the system's own bundle (~20 ms) for nothing.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)
    return None


# Docker's reference grammar (github.com/distribution/reference, reference.go): [registry[:port]/]path[:tag],
# path components of lowercase alphanumerics joined by '.', '_', '__' or dashes; a tag of word characters,
# '.' and '-', at most 128, not starting with '.' or '-'. The whole name is at most 255 characters.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?"
_REFERENCE = re.compile(rf"{_DOMAIN}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?")


def check_image_tag(tag: str | None) -> None:
    """Refuse a --tag Docker would refuse (`x;touch y`, upper case, a space), before the build rather than after."""
    if tag is None:
        return
    name = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag  # a registry's :port is no tag
    if not _REFERENCE.fullmatch(tag) or len(name) > 255:
        raise UsageError("image-tag-invalid", f"--tag {tag!r} is not a valid image name",
                         "use NAME[:TAG]: lowercase letters, digits and . _ - in the name (REGISTRY/ and / allowed), "
                         "letters, digits, . _ - in the tag, e.g. -t myproject:v1")

"""What a torch index or wheelhouse actually serves: a snapshot of its torch-family wheel files.

A mirror (Artifactory, a wheelhouse, a loopback stand-in) rarely holds every release the matrix knows.
Resolving against a snapshot of it makes the plan pick what can really be installed, with the exact
version string the index serves (`2.13.0+cpu`, or a plain `2.14.1` for PyPI-built wheels).
The snapshot is taken here (I/O: HTTP or a folder listing) and handed to the pure resolver as a value;
the values and the page parser are envbuilder.resolve.served's. A mirror URL with credentials
(`https://user:token@host/simple`) is read with them as a Basic Authorization header, sent to that host only
(never after a redirect); the snapshot and every message name the URL without them.
Must not import docker or the resolver.
"""

from __future__ import annotations

import base64
import netrc
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from envbuilder.errors import EnvbuilderError
from envbuilder.project.spec import TORCH_PACKAGES
from envbuilder.redact import split_credentials
from envbuilder.resolve.served import IndexSnapshot, WheelFile, parse_simple_page, parse_wheel_filename

_MAX_PAGE = 32 * 1024 * 1024  # download.pytorch.org's torch page is a few MB


def snapshot_index(url: str, *, packages: tuple[str, ...] = TORCH_PACKAGES, timeout: float = 20.0,
                   netrc_file: Path | None = None) -> IndexSnapshot:
    """Read the index's page for each package (a missing page is not an error: the package is not listed).
    The snapshot's URL is `url` without credentials. A URL without them is read with the host's login from
    `netrc_file` (a build's --netrc), else $NETRC or ~/.netrc, as uv and pip inside the build will."""
    url, user, password = split_credentials(url)
    if user is None:
        user, password = netrc_login(url, netrc_file)
    base = url.rstrip("/")
    listed: list[str] = []
    wheels: list[WheelFile] = []
    for name in packages:
        page_url = f"{base}/{name}/"
        request = index_request(page_url, "application/vnd.pypi.simple.v1+json;q=0.9, text/html;q=0.8", user, password)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https/http index URLs only
                text = response.read(_MAX_PAGE).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            why = " (the index wants credentials: user:password@ in the URL, or check them)" if exc.code in (401, 403) else ""
            raise _unreachable(url, f"HTTP {exc.code} for {page_url}{why}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise _unreachable(url, str(getattr(exc, "reason", exc))) from None
        listed.append(name)
        wheels.extend(w for f in parse_simple_page(text) if (w := parse_wheel_filename(f)) and w.name == name)
    return IndexSnapshot(url=url, listed=tuple(listed), wheels=tuple(wheels))


def index_request(url: str, accept: str, user: str | None, password: str | None) -> urllib.request.Request:
    """A GET of an index page, with Basic credentials when given. An "unredirected" header: urllib drops it when
    the index redirects (a CDN, another host), so the credentials reach only the host they were given for."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def netrc_login(url: str, netrc_file: Path | None = None) -> tuple[str | None, str | None]:
    """(login, password) for the URL's host from a .netrc file (the one given, else $NETRC, else ~/.netrc);
    (None, None) when there is none or it cannot be read (the index then answers 401, and that is reported)."""
    path = Path(netrc_file or os.environ.get("NETRC") or Path.home() / ".netrc").expanduser()
    host = urllib.parse.urlsplit(url).hostname
    if not host or not path.is_file():
        return None, None
    try:
        found = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None, None
    return (found[0], found[2]) if found else (None, None)


def snapshot_wheelhouse(folders: Iterable[str | Path], *,
                        packages: tuple[str, ...] = TORCH_PACKAGES) -> IndexSnapshot | None:
    """The torch-family wheels of --find-links folders, as one snapshot; None when they hold no torch wheel (the
    folders then only add other packages, and torch comes from its index). URLs among them are left out."""
    paths = [Path(f) for f in folders if "://" not in str(f)]
    wheels = [w for folder in paths for p in sorted(folder.glob("*.whl"))
              if (w := parse_wheel_filename(p.name)) and w.name in packages]
    if not any(w.name == "torch" for w in wheels):
        return None
    return IndexSnapshot(url=", ".join(str(p) for p in paths), listed=tuple(sorted({w.name for w in wheels})),
                         wheels=tuple(wheels), find_links=True)


def _unreachable(url: str, why: str) -> EnvbuilderError:
    return EnvbuilderError("index-unreachable", f"could not read the torch index {url}: {why}",
                           "check --torch-index-url (and --ca-cert for a TLS-intercepting proxy), or drop it to resolve offline")

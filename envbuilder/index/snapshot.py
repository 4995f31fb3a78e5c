"""What a torch index or wheelhouse actually serves: a snapshot of its torch-family wheel files.

A mirror (Artifactory, a wheelhouse, a loopback stand-in) rarely holds every release the matrix knows.
Resolving against a snapshot of it makes the plan pick what can really be installed, with the exact
version string the index serves (`2.13.0+cpu`, or a plain `2.14.1` for PyPI-built wheels).
The snapshot is taken here (I/O: HTTP or a folder listing) and handed to the pure resolver as a value;
the values and the page parser are envbuilder.resolve.served's. Must not import docker or the resolver.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from envbuilder.errors import EnvbuilderError
from envbuilder.project.spec import TORCH_PACKAGES
from envbuilder.resolve.served import IndexSnapshot, WheelFile, parse_simple_page, parse_wheel_filename

_MAX_PAGE = 32 * 1024 * 1024  # download.pytorch.org's torch page is a few MB


def snapshot_index(url: str, *, packages: tuple[str, ...] = TORCH_PACKAGES, timeout: float = 20.0) -> IndexSnapshot:
    """Read the index's page for each package (a missing page is not an error: the package is not listed)."""
    base = url.rstrip("/")
    listed: list[str] = []
    wheels: list[WheelFile] = []
    for name in packages:
        page_url = f"{base}/{name}/"
        request = urllib.request.Request(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json;q=0.9, text/html;q=0.8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - https/http index URLs only
                text = response.read(_MAX_PAGE).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise _unreachable(url, f"HTTP {exc.code} for {page_url}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise _unreachable(url, str(getattr(exc, "reason", exc))) from None
        listed.append(name)
        wheels.extend(w for f in parse_simple_page(text) if (w := parse_wheel_filename(f)) and w.name == name)
    return IndexSnapshot(url=url, listed=tuple(listed), wheels=tuple(wheels))


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

"""`compat show` and `compat update`: summarise the installed matrix, and install a newer one safely.

Owns reading a candidate matrix (https URL or file), validating it with envbuilder.resolve.matrix.parse_matrix,
and writing it atomically to settings.matrix_override. A candidate that fails validation, or that is
older than the installed matrix (unless forced), never replaces the installed file. It lives with the
index readers, not in resolve/, because it fetches over HTTP and writes files. Must not import docker or the CLI.
"""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

from packaging.version import Version

from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.matrix import Matrix, TorchRelease, flavor_kind, load_matrix, parse_matrix
from envbuilder.settings import Settings

FETCH_TIMEOUT_S = 30.0
MAX_MATRIX_BYTES = 8 * 1024 * 1024  # the packaged matrix is ~0.3 MB; anything far larger is not a matrix

# Column order and labels for the platforms a release can be built for.
PLATFORMS: tuple[tuple[str, str], ...] = (
    ("linux/x86_64", "Linux x86_64"),
    ("linux/aarch64", "Linux aarch64"),
    ("windows/x86_64", "Windows x86_64"),
    ("macos/arm64", "macOS arm64"),
    ("macos/x86_64", "macOS x86_64"),
)


def _flavor_order(flavor: str) -> tuple[int, Any]:
    kind = flavor_kind(flavor)
    rank = {"cpu": 0, "default": 1, "cuda": 2, "rocm": 3}[kind]
    digits = flavor[2:] if kind == "cuda" else flavor[4:] if kind == "rocm" else "0"
    return rank, Version(digits)


def python_range(versions: tuple[str, ...] | list[str]) -> str:
    ordered = sorted(set(versions), key=Version)
    if not ordered:
        return "-"
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}-{ordered[-1]}"


def release_row(matrix: Matrix, release: TorchRelease) -> dict[str, Any]:
    """One release as a plain dict: flavours per platform and the Python range across its builds."""
    platforms: dict[str, list[str]] = {}
    pythons: set[str] = set(release.python)
    for build in release.builds:
        platforms.setdefault(f"{build.os}/{build.arch}", []).append(build.flavor)
        pythons.update(release.python_for(build))
    for key in platforms:
        platforms[key] = sorted(set(platforms[key]), key=_flavor_order)
    return {
        "version": release.version,
        "released": release.released,
        "python": sorted(release.python, key=Version),
        "python_range": python_range(sorted(pythons, key=Version)),
        "torchvision": list(release.torchvision),  # every companion built for this torch, oldest first
        "torchaudio": list(release.torchaudio),
        "platforms": {key: platforms[key] for key, _ in PLATFORMS if key in platforms},
    }


def show_matrix(matrix: Matrix, torch: str | None = None) -> dict[str, Any]:
    """Summarise the matrix for people and scripts: releases newest first, CUDA driver floors, sources.

    With `torch`, only that release is listed, with its builds in full (sm/ptx/gfx).
    """
    releases = matrix.releases_newest_first
    if torch is not None:
        release = matrix.release(torch)
        if release is None:
            known = ", ".join(r.version for r in releases[:5])
            raise EnvbuilderError(
                "unknown-torch-release",
                f"torch {torch} is not in the compatibility matrix (newest: {known})",
                "check the version, or run `envbuilder compat update --from URL` for a newer matrix",
            )
        releases = (release,)
    rows = [release_row(matrix, r) for r in releases]
    if torch is not None:
        rel = releases[0]
        rows[0]["builds"] = [
            {
                "os": b.os,
                "arch": b.arch,
                "flavor": b.flavor,
                "python": list(rel.python_for(b)),
                "sm": list(b.sm),
                "ptx": b.ptx,
                "gfx": list(matrix.rocm_gfx(b)),
                "index_url": matrix.index_url(b.flavor),
            }
            for b in rel.builds
        ]
    return {
        "schema_version": matrix.schema_version,
        "updated": matrix.updated,
        "releases": rows,
        "cuda": [c.model_dump(mode="json") for c in sorted(matrix.cuda, key=lambda c: Version(c.version), reverse=True)],
        "cuda_minor_compat": [c.model_dump(mode="json") for c in matrix.cuda_minor_compat],
        "counts": {
            "releases": len(matrix.torch),
            "builds": sum(len(r.builds) for r in matrix.torch),
            "cuda": len(matrix.cuda),
            "rocm": len(matrix.rocm),
            "onnxruntime": len(matrix.onnxruntime),
            "gpus": len(matrix.gpus),
        },
        "sources": {name: p.model_dump(mode="json") for name, p in matrix.sources.items()},
    }


def installed_matrix(settings: Settings) -> Matrix:
    """The matrix in use: the installed override if there is one, else the packaged file."""
    return load_matrix(override=settings.matrix_override)


def read_source(source: str, *, timeout: float = FETCH_TIMEOUT_S, max_bytes: int | None = None) -> bytes:
    """Read a candidate matrix from an https URL or a local file, refusing anything over max_bytes."""
    max_bytes = MAX_MATRIX_BYTES if max_bytes is None else max_bytes
    if "://" in source:
        if not source.lower().startswith("https://"):
            raise EnvbuilderError(
                "matrix-source-refused",
                f"{source} is not an https URL",
                "fetch matrices over https, or download the file and pass its path",
            )
        try:
            request = urllib.request.Request(source, headers={"User-Agent": "envbuilder-compat-update"})
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (https checked above)
                data = response.read(max_bytes + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EnvbuilderError(
                "matrix-fetch-failed", f"could not fetch {source}: {reason}", "check the URL and the network, or pass a file"
            ) from None
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise EnvbuilderError("matrix-source-missing", f"{source} is not a file", "pass an https URL or an existing file")
        try:
            with path.open("rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise EnvbuilderError("matrix-source-unreadable", f"could not read {source}: {exc.strerror}", None) from None
    if len(data) > max_bytes:
        raise EnvbuilderError(
            "matrix-too-large", f"{source} is larger than {max_bytes} bytes", "this does not look like a compatibility matrix"
        )
    return data


def _parse_date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise EnvbuilderError("matrix-invalid", f"{what} has 'updated' {text!r}, not an ISO date", None) from None


def update_matrix(source: str, settings: Settings, *, force: bool = False) -> Matrix:
    """Validate the matrix at `source` and install it as settings.matrix_override; return it.

    The installed file is replaced only by a valid matrix, atomically (temp file + os.replace), and not by
    one older than the matrix in use (the override if any, else the packaged one) unless force=True.
    """
    data = read_source(source)
    target = settings.matrix_override
    candidate = parse_matrix(data, origin=source)
    installed = installed_matrix(settings)
    if not force:
        new_date = _parse_date(candidate.updated, source)
        old_date = _parse_date(installed.updated, "the installed matrix")
        if new_date < old_date:
            raise EnvbuilderError(
                "matrix-older",
                f"{source} was updated {candidate.updated}, before the installed matrix ({installed.updated})",
                "pass --force to install it anyway",
                context={"candidate": candidate.updated, "installed": installed.updated},
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".compatibility.", suffix=".json.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return candidate

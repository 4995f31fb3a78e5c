"""The one owner of the small value syntaxes users type: Docker sizes, GPU requests, environment variable names;
and of how sizes are printed back (human_size: the build context's notice, `bundle`, `images`).

The project config validates them, the run stage reads them from the command line and the Docker engine turns
sizes into bytes; all three call these functions so that a value one accepts, the others accept too. Pure and
stdlib only (it is imported on `envbuilder run`'s hot path): must not import pydantic, docker or anything of
envbuilder. Errors are ValueError with a message written for the user; callers wrap them in their own error.
"""

from __future__ import annotations

import re

# go-units RAMInBytes, which `docker run --shm-size` uses: powers of 1024, an optional i and b, any case.
SIZE_PATTERN = r"^(\d+(?:\.\d+)?)\s?([kmgtp]?)i?b?$"
_SIZE = re.compile(SIZE_PATTERN, re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}

# POSIX portable environment variable names (IEEE Std 1003.1, 8.1): what every shell can `export`.
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME = re.compile(ENV_NAME_PATTERN)

GPU_KEYWORDS = ("auto", "all", "none")


def parse_size_bytes(size: str | int) -> int:
    """Docker's size syntax (`512m`, `2g`, `1.5GiB`) in bytes; an int is bytes already."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    match = _SIZE.match(size.strip()) if isinstance(size, str) else None
    if not match:
        raise ValueError(f"invalid size {size!r}: use Docker's size syntax, like 512m or 2g")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def normalize_size(size: str | int) -> str:
    """A size as Docker's CLI and the engine both read it: lower case, no space; a positive int is bytes."""
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return f"{size}b"
    if isinstance(size, int):
        raise ValueError(f"invalid size {size!r}: use Docker's size syntax, like 512m or 2g")
    parse_size_bytes(size)
    return size.strip().lower().replace(" ", "")


def parse_gpu_request(value: str | int) -> str | int:
    """`auto`, `all`, `none` or a count >= 1, as the user wrote it (a word in any case, a count as text or int)."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word in GPU_KEYWORDS:
            return word
        if word.isascii() and word.isdigit() and int(word) >= 1:
            return int(word)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected 'auto', 'all', 'none' or a GPU count >= 1, got {value!r}")


def is_env_name(name: str) -> bool:
    """Whether name can be an environment variable that every shell and `docker run --env` accept."""
    return bool(_ENV_NAME.fullmatch(name))


def human_size(size: int) -> str:
    """Bytes in decimal units, as `du -h --si` and Docker's image sizes show them: 312 MB, 1.2 GB."""
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"

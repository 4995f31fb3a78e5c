"""What to do about a job that failed, read from the last lines it printed: pure text in, a hint out.

Owns job_hint(). Today it knows the commonest first failure in a fresh image: an import of a package the
project never declared (`ModuleNotFoundError: No module named 'X'`), answered with `--with PKG` (the package
that provides the module, when its name differs: cv2 is opencv-python-headless), and a job that wrote into the
read-only project (`Read-only file system`: `./outputs`, `lightning_logs/`, `wandb/`), answered with
`$ENVBUILDER_ARTIFACTS` and `--rw` (docs/running.md says why the project stays read-only). Must not import
anything of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Python's OSError (errno 30), coreutils (mkdir/touch/cp) and Node all say it this way; EROFS is errno 30 on Linux.
_READ_ONLY = re.compile(r"Read-only file system|\[Errno 30\]|EROFS")
_MISSING_MODULE = re.compile(r"(?:ModuleNotFoundError|ImportError): No module named '(?P<module>[A-Za-z0-9_.]+)'")
# Import names whose distribution is called something else (the ones ML projects meet most).
_DISTRIBUTIONS = {
    "cv2": "opencv-python-headless", "PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image",
    "yaml": "pyyaml", "bs4": "beautifulsoup4", "google.protobuf": "protobuf", "attr": "attrs",
    "dateutil": "python-dateutil", "dotenv": "python-dotenv", "jwt": "pyjwt", "serial": "pyserial",
    "Crypto": "pycryptodome", "magic": "python-magic", "lightning_fabric": "lightning",
}


def missing_module(lines: Iterable[str]) -> str | None:
    """The module a job failed to import (the last such error in its output), or None."""
    found = None
    for line in lines:
        match = _MISSING_MODULE.search(line)
        if match:
            found = match.group("module")
    return found


def distribution_for(module: str) -> str:
    """The PyPI name that provides an import name: a known alias, else its top-level package."""
    if module in _DISTRIBUTIONS:
        return _DISTRIBUTIONS[module]
    top = module.split(".", 1)[0]
    return _DISTRIBUTIONS.get(top, top.replace("_", "-"))


def wrote_read_only(lines: Iterable[str]) -> bool:
    """Whether the job's output says a write failed on a read-only file system."""
    return any(_READ_ONLY.search(line) for line in lines)


def job_hint(lines: Iterable[str], *, read_only_project: bool = False) -> str | None:
    """A hint for a failed job from its last output lines, or None when nothing in them is recognised.
    read_only_project: the project was mounted read-only (the default), so a write that failed there is the
    project's mount (a `:ro` mount of the user's own gets no such hint)."""
    lines = list(lines)
    if read_only_project and wrote_read_only(lines):
        return ("the job wrote into the project, which is mounted read-only at /workspace/project: write under "
                "$ENVBUILDER_ARTIFACTS (/artifacts, kept per run on the host), or rerun with --rw to let it "
                "write into the project folder")
    module = missing_module(lines)
    if module is None:
        return None
    package = distribution_for(module)
    return (f"the job could not import {module!r}: add {package} to the project's dependencies, "
            f"or rerun with --with {package}")

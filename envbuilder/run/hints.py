"""What to do about a job that failed, read from the last lines it printed: pure text in, a hint out.

Owns job_hint(). Today it knows the commonest first failure in a fresh image: an import of a package the
project never declared (`ModuleNotFoundError: No module named 'X'`), answered with `--with PKG` (the package
that provides the module, when its name differs: cv2 is opencv-python-headless). Must not import anything of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def job_hint(lines: Iterable[str]) -> str | None:
    """A hint for a failed job from its last output lines, or None when nothing in them is recognised."""
    module = missing_module(lines)
    if module is None:
        return None
    package = distribution_for(module)
    return (f"the job could not import {module!r}: add {package} to the project's dependencies, "
            f"or rerun with --with {package}")

"""The TOML parser: the standard library's tomllib from Python 3.11, its backport tomli (a dependency there) on
3.10. The one place that knows which; readers use `from envbuilder.tomlparser import tomllib`.
Must not import any other envbuilder module.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["tomllib"]

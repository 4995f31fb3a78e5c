"""A small installable package: a console script, and a C extension module."""

from mypkg._speedups import dot

__all__ = ["dot"]

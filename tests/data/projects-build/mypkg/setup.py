"""The C extension (setuptools reads the rest from pyproject.toml)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mypkg._speedups", ["mypkg/_speedups.c"])])

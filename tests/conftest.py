"""Shared fixtures: in-process CLI runs, data files, and the Docker marks.

Tests marked `docker` need a running engine (scripts/engine.sh starts one); tests marked `slow` build
multi-GB images and run only with --run-slow. Neither is skipped silently: a missing engine fails
the docker tests unless ENVBUILDER_SKIP_DOCKER=1 says so on purpose.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

# Docker fixtures (engine, base image, loopback torch index, shared builds) live in support/fixtures.py.
pytest_plugins = ["support.fixtures", "support.local_index"]

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run slow tests (multi-GB CUDA images)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-slow"):
        skip = pytest.mark.skip(reason="slow: opt in with --run-slow (scripts/test.sh --slow)")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    if os.environ.get("ENVBUILDER_SKIP_DOCKER") == "1":
        skip = pytest.mark.skip(reason="ENVBUILDER_SKIP_DOCKER=1")
        for item in items:
            if "docker" in item.keywords:
                item.add_marker(skip)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the envbuilder CLI in-process: cli("resolve", ".", "--json") -> CliResult."""
    from envbuilder.cli import main

    monkeypatch.setenv("ENVBUILDER_HOME", str(tmp_path / "envbuilder-home"))

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def data_dir() -> Path:
    return DATA

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

# Docker fixtures (engine, base image, loopback torch index, shared builds) live in support/fixtures.py;
# `fake_engine` (a FakeEngine wherever envbuilder opens Docker) in support/fake_engine.py.
pytest_plugins = ["support.fixtures", "support.local_index", "support.fake_engine"]

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


@pytest.fixture(autouse=True)
def offline_by_default(monkeypatch):
    """The CLI asks PyPI (through uv) whether a project's dependencies install unless told not to: every test
    runs it as `--offline` would (ENVBUILDER_OFFLINE=1, inherited by CLI subprocesses too). Tests of the checked
    path monkeypatch.delenv it and point --index-url at the loopback index (support/local_index.py)."""
    monkeypatch.setenv("ENVBUILDER_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_user_defaults(monkeypatch, tmp_path_factory):
    """Tests never read the machine's own user config or ENVBUILDER_* defaults (envbuilder.defaults): each one
    starts with an empty XDG config folder; tests of the layers write their own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    monkeypatch.delenv("ENVBUILDER_CONFIG", raising=False)
    for variable in ("BASE_IMAGE", "INDEX_URL", "EXTRA_INDEX_URL", "TORCH_INDEX_URL", "FIND_LINKS", "CA_CERT",
                     "HOST_CA", "NETWORK"):
        monkeypatch.delenv(f"ENVBUILDER_{variable}", raising=False)


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

"""Real builds that fail, through the CLI: each says why in one line with its code (exit 4 for a build, 3 for a
mirror refused before building), naming the host and the package, instead of the failing RUN line.

Each fails within seconds of starting (pip's five retries are the slowest part): a dead port, a loopback
index that answers 404, a base image with another Python, a base that cannot be pulled, and a mirror whose
torch wheels are all for another Python.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from envbuilder.index.server import IndexServer

pytestmark = pytest.mark.docker

TARGET = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64")


@pytest.fixture
def failproj(tmp_path) -> Path:
    project = tmp_path / "failproj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "failproj"\nversion = "0"\ndependencies = ["torch==2.13.0"]\n')
    return project


def _error(result) -> dict:
    assert result.stdout.strip(), result.stderr[-2000:]
    return json.loads(result.stdout)


def test_a_dead_index_port_names_the_host_and_the_package(cli, base_image, failproj):
    result = cli("build", str(failproj), *TARGET, "--base-image", base_image, "--network", "host",
                 "--index-url", "http://127.0.0.1:1/simple")
    assert result.exit_code == 4
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("envbuilder: download-failed: could not download uv from 127.0.0.1:1: connection refused")
    assert "Hint: nothing listens at 127.0.0.1:1" in line and "RUN" not in line


def test_an_index_that_answers_404_says_the_package_is_not_there(cli, base_image, failproj, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with IndexServer([empty]) as index:
        url = index.url
        result = cli("build", str(failproj), *TARGET, "--base-image", base_image, "--network", "host",
                     "--index-url", url, "--json")
    error = _error(result)
    assert result.exit_code == 4 and error["code"] == "package-not-found"
    assert error["message"] == f"uv==0.9.5 is not on {url}"
    assert error["context"]["package"] == "uv==0.9.5"


def test_a_base_image_with_another_python_says_which(cli, base_image, failproj):
    result = cli("build", str(failproj), *TARGET, "--base-image", base_image, "--python", "3.12", "--json")
    error = _error(result)
    assert result.exit_code == 4 and error["code"] == "base-python-mismatch"
    assert error["message"] == f"{base_image} has Python 3.11, but the plan is for Python 3.12"
    assert "--python 3.11" in error["hint"]


def test_a_base_that_cannot_be_pulled_names_a_local_base(cli, base_image, failproj):
    # No registry answers on this machine: the default python:X.Y-slim base cannot be pulled.
    result = cli("build", str(failproj), *TARGET, "--json")
    error = _error(result)
    assert result.exit_code == 4 and error["code"] == "registry-unreachable", error
    assert error["message"].startswith("could not pull the base image ")
    assert f"--base-image {base_image} (Python 3.11)" in error["hint"]


def test_a_mirror_without_the_plans_python_is_refused_before_building(cli, base_image, failproj, tmp_path):
    folder = tmp_path / "cp312"
    folder.mkdir()
    tag = "cp312-cp312-manylinux_2_28_x86_64"
    with zipfile.ZipFile(folder / f"torch-2.13.0+cpu-{tag}.whl", "w") as wheel:
        wheel.writestr("torch-2.13.0+cpu.dist-info/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n\n")
        wheel.writestr("torch-2.13.0+cpu.dist-info/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}\n")
    with IndexServer([folder]) as index:
        url = index.url
        # The base has Python 3.11, so the plan is for 3.11; the mirror only has cp312.
        result = cli("build", str(failproj), *TARGET, "--base-image", base_image, "--torch-index-url", url, "--json")
    error = _error(result)
    assert result.exit_code == 3 and error["code"] == "index-has-no-fit"
    assert f"{url} serves torch for Python 3.12 only; the plan needs Python 3.11" in error["message"]

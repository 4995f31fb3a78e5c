"""A fully offline build: every wheel from a local index on loopback, and any other address unreachable.

Air-gapped sites keep a wheelhouse; `envbuilder index serve` (here: IndexServer) makes it an index, and
`--index-url`/`--torch-index-url` point the build at it. The proxies point at a dead port, so a download from
anywhere but loopback (PyPI, download.pytorch.org) would fail the build.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support.fixtures import CPU_WHEELS, run_in_image

from envbuilder.index.server import IndexServer
from envbuilder.proc import run_command
from envbuilder.render import RenderOptions

pytestmark = pytest.mark.docker

# torch 2.13.0's own requirements (its METADATA), their requirements, and the installer the image pins.
WHEELHOUSE_PACKAGES = ["filelock", "typing-extensions>=4.10.0", "setuptools>=77.0.3", "sympy>=1.13.3", "mpmath>=1.1.0,<1.4",
                       "networkx>=2.5.1", "jinja2", "markupsafe", "fsspec>=0.8.5", f"uv=={RenderOptions().uv_version}"]
DEAD_PROXY = "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    result = run_command([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                          "--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
                          "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                          "--platform", "any", "-d", str(folder), *WHEELHOUSE_PACKAGES], timeout=600)
    assert result.ok, f"could not fill the test wheelhouse from PyPI: {result.tail()}"
    return folder


def test_a_build_from_a_local_wheelhouse_needs_no_network(cli, base_image, wheelhouse, tmp_path):
    project = tmp_path / "offline"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "offline"\nversion = "0"\ndependencies = ["torch==2.13.0"]\n')
    with IndexServer(wheels=[wheelhouse, CPU_WHEELS]) as index:
        result = cli("build", str(project), "--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64",
                     "--base-image", base_image, "--index-url", index.url, "--torch-index-url", index.url,
                     "--network", "host", "--http-proxy", DEAD_PROXY, "--https-proxy", DEAD_PROXY,
                     "--no-proxy", "127.0.0.1,localhost", "--no-cache", "--json")
        served = list(index.requests)
    assert result.exit_code == 0, result.stderr[-3000:]
    built = json.loads(result.stdout)
    assert built["torch"] == "2.13.0+cpu" and not built["cached"]
    assert any("torch-2.13.0" in path for path in served), "torch did not come from the local index"
    code, output = run_in_image_docker(built["image"])
    assert code == 0, output
    assert output.strip().splitlines()[-1] == "2.13.0+cpu 3.11"


def run_in_image_docker(image: str) -> tuple[int, str]:
    from envbuilder.docker.engine import Docker

    return run_in_image(Docker(), image, ["python", "-c", "import sys, torch; print(torch.__version__, '%d.%d' % sys.version_info[:2])"])

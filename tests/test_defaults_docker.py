"""Say it once, with real Docker: `build` with its base image, torch mirror, CA and network in the user config
(no flag), then `run` and `pipeline` with no flag either, find that same image: no build step, the same key.
Seconds once Docker's cache holds the CPU image's torch layer (support/fixtures.py): only the project's files are new."""

from __future__ import annotations

import json
import textwrap

import pytest
from support.fixtures import HOST_CA

pytestmark = pytest.mark.docker


def test_build_then_run_and_pipeline_reuse_the_image_with_defaults_from_the_user_config(
        cli, build_env, torch_cpu_index, tmp_path, monkeypatch):
    # torch alone and no build system: the torch layer is the session image's, only the project's files are new
    project = tmp_path / "sayonce"
    project.mkdir()
    with open(project / "pyproject.toml", "w") as f:
        f.write(textwrap.dedent("""
            [project]
            name = "sayonce"
            version = "0.1.0"
            requires-python = ">=3.10"
            dependencies = ["torch==2.13.0"]

            [tool.envbuilder.jobs.hello]
            command = ["python", "-c", "import torch; print('torch', torch.__version__)"]
            gpus = "none"
        """))
    config = tmp_path / "xdg" / "envbuilder" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(textwrap.dedent(f"""
        [defaults]
        base-image = "{build_env.base_image}"
        torch-index-url = "{torch_cpu_index.url}"
        ca-cert = "{HOST_CA}"
        network = "host"
    """))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    target = ("--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none")

    built = cli("build", str(project), *target, "--json")
    assert built.exit_code == 0, built.stderr
    image = json.loads(built.stdout)
    assert image["image"].endswith(":" + image["build_key"][:16]) or image["build_key"][:12] in image["image"]

    ran = cli("run", str(project), *target, "hello")
    assert ran.exit_code == 0, ran.stderr
    assert f"{image['image']} (cached; torch 2.13.0+cpu, Python 3.11)" in ran.stderr
    assert "torch 2.13.0+cpu" in ran.stdout
    assert "#1 " not in ran.stderr and "[torch" not in ran.stderr  # no build step ran

    piped = cli("pipeline", str(project), *target, "--json")
    assert piped.exit_code == 0, piped.stderr
    summary = json.loads(piped.stdout)
    assert summary["image"] == image["image"]

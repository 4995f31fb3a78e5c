"""The debootstrapped base image and the engine check, against the real engine (marked docker)."""

from __future__ import annotations

import json
import time

import pytest
from support.fixtures import run_in_image

from envbuilder.build.base import base_python, bootstrap_base

pytestmark = pytest.mark.docker


def test_bootstrap_is_idempotent_and_labelled(docker_engine, base_image):
    started = time.perf_counter()
    again = bootstrap_base(docker_engine, name=base_image)
    assert not again.created and again.python == "3.11"
    assert time.perf_counter() - started < 2.0
    labels = docker_engine.image_inspect(base_image)["Config"]["Labels"]
    assert labels == {"org.envbuilder.python": "3.11", "org.envbuilder.base": "debootstrap-bookworm"}


def test_base_has_python_venv_pip_certificates_and_useradd(docker_engine, base_image):
    script = ("python --version && python3 -m venv /tmp/v && /tmp/v/bin/pip --version >/dev/null "
              "&& test -s /etc/ssl/certs/ca-certificates.crt && command -v useradd && echo ok")
    code, output = run_in_image(docker_engine, base_image, ["bash", "-c", script])
    assert code == 0, output
    assert "Python 3.11." in output and output.strip().endswith("ok")


def test_base_python_asks_the_image_when_it_has_no_label(docker_engine, base_image):
    container = docker_engine.run_detached(base_image, ["true"])
    docker_engine.wait(container)
    ref = "envbuilder-test/unlabelled-base:latest"
    try:
        docker_engine.client.api.commit(container, repository="envbuilder-test/unlabelled-base", tag="latest",
                                        changes=['LABEL org.envbuilder.python=""'])
        assert base_python(docker_engine, ref) == "3.11"
    finally:
        docker_engine.remove_container(container)
        docker_engine.remove_image(ref, force=True)


def test_bootstrap_refuses_to_overwrite_a_foreign_image(docker_engine, base_image):
    from envbuilder.errors import EnvbuilderError

    container = docker_engine.run_detached(base_image, ["true"])
    docker_engine.wait(container)
    ref = "envbuilder-test/foreign:latest"
    try:
        docker_engine.client.api.commit(container, repository="envbuilder-test/foreign", tag="latest",
                                        changes=['LABEL org.envbuilder.base=""'])
        with pytest.raises(EnvbuilderError) as err:
            bootstrap_base(docker_engine, name=ref)
        assert err.value.code == "base-name-taken"
    finally:
        docker_engine.remove_container(container)
        docker_engine.remove_image(ref, force=True)


def test_cli_base_bootstrap_and_engine(cli, base_image):
    result = cli("base", "bootstrap", "--name", base_image, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"image": base_image, "python": "3.11", "created": False}
    result = cli("engine", "--json")
    assert result.exit_code == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] is True and status["build_cli"]

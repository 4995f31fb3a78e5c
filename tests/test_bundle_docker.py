"""Air-gap bundles on a real engine, from the CLI: bundle, refuse a tampered copy, remove the image, load,
run with the network set to none.

The fast test bundles a small image on the local base (seconds); the torch-sized one (the cpuproj fixture,
~1.2 GB of image and ~350 MB of wheels) runs with --run-slow and also checks that `run PATH` finds the
loaded image by its content key, without building anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.fixtures import CPU_WHEELS, HOST_CA, copy_project
from test_bundle import _flip, make_wheel

from envbuilder.build.bundle import IMAGES
from envbuilder.index.server import IndexServer

pytestmark = pytest.mark.docker
CPU = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11")
NETWORK_CHECK = ("import socket, tinydep; s = socket.socket(); s.settimeout(2)\n"
                 "try:\n    s.connect(('1.1.1.1', 53)); print('online')\n"
                 "except OSError:\n    print('offline', tinydep.VERSION)\n")


@pytest.fixture
def tiny_project(tmp_path, base_image) -> Path:
    """A project whose edited Dockerfile installs one small wheel into a venv on the local base."""
    project = tmp_path / "tinyb"
    wheel = make_wheel(project)
    (project / "pyproject.toml").write_text('[project]\nname = "tinyb"\nversion = "0"\ndependencies = ["tinydep"]\n')
    (project / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        f"COPY {wheel.name} /tmp/\n"
        f"RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-index --no-cache-dir /tmp/{wheel.name}\n"
        "ENV PATH=/opt/venv/bin:$PATH\n"
        f"LABEL org.opencontainers.image.base.name={base_image}\n"
        "COPY . /workspace/project\n")
    return project


def test_bundle_tamper_remove_load_and_run_offline(cli, docker_engine, base_image, tiny_project, tmp_path):
    wheels = tmp_path / "served"
    make_wheel(wheels)
    out = tmp_path / "carry" / "tinyb.tar"
    with IndexServer([wheels, CPU_WHEELS]) as index:
        made = cli("bundle", str(tiny_project), *CPU, "--dockerfile", str(tiny_project / "Dockerfile"),
                   "--index-url", index.url, "--torch-index-url", index.url, "-o", str(out), "--json")
    assert made.exit_code == 0, made.stderr[-3000:]
    written = json.loads(made.stdout)
    image = written["image"]
    refs = {i["role"]: i for i in written["images"]}
    assert refs["base"]["ref"] == base_image and refs["project"]["ref"] == image and written["wheels"] == 1
    built_id = docker_engine.image_inspect(image)["Id"]
    try:
        docker_engine.remove_image(image, force=True)  # the base stays: other tests share it
        assert docker_engine.image_inspect(image) is None

        tampered = tmp_path / "tampered.tar"
        shutil.copy(out, tampered)
        _flip(tampered, IMAGES, at=4096)
        refused = cli("load", str(tampered))
        assert refused.exit_code == 1 and "bundle-tampered" in refused.stderr
        assert docker_engine.image_inspect(image) is None, "a tampered bundle must load nothing"

        loaded = cli("load", str(out), "--expect", written["manifest_sha256"], "--json")
        assert loaded.exit_code == 0, loaded.stderr
        assert docker_engine.image_inspect(image)["Id"] == built_id  # the same image, by id
        into = Path(json.loads(loaded.stdout)["into"])
        assert (into / "requirements.lock").is_file() and len(list((into / "wheels").glob("*.whl"))) == 1

        ran = cli("run", str(tiny_project), "--image", image, "--network", "none", "--gpus", "none",
                  "--", "python", "-c", NETWORK_CHECK)
        assert ran.exit_code == 0, ran.stderr
        assert "offline 1.0" in ran.stdout
    finally:
        docker_engine.remove_image(image, force=True)


@pytest.mark.slow
def test_cpuproj_bundle_loads_and_runs_by_its_key_with_no_network(cli, docker_engine, base_image, torch_cpu_index, tmp_path):
    """The torch-sized path: build cpuproj, bundle it (torch from the loopback mirror, the rest from PyPI through
    the proxy's CA), remove the image, load, and `run PATH --network none` finds it by key: no build runs."""
    project = copy_project("cpuproj", tmp_path)
    # A file of its own gives this copy its own key: removing its image leaves the session's shared cpuproj alone.
    (project / "carried.txt").write_text("bundled\n")
    # The flags that decide the image (the CA too: it adds a secret mount to the Dockerfile), for bundle and run.
    resolve = (*CPU, "--base-image", base_image, "--torch-index-url", torch_cpu_index.url, "--ca-cert", str(HOST_CA))
    out = tmp_path / "cpuproj.tar"
    made = cli("bundle", str(project), *resolve, "--network", "host", "-o", str(out), "--json")
    assert made.exit_code == 0, made.stderr[-3000:]
    written = json.loads(made.stdout)
    image = written["image"]
    assert written["wheels"] >= 10  # torch, onnxruntime, numpy, ... and the installer
    docker_engine.remove_image(image, force=True)
    try:
        loaded = cli("load", str(out), "--expect", written["manifest_sha256"])
        assert loaded.exit_code == 0, loaded.stderr
        ran = cli("run", str(project), *resolve, "--network", "none", "--gpus", "none",
                  "--", "python", "verify.py", '{"torch": "2.13.0+cpu", "python": "3.11"}')
        assert ran.exit_code == 0, ran.stderr[-3000:]
        assert f"{image} (cached" in ran.stderr  # found by its key: nothing was built
    finally:
        docker_engine.remove_image(image, force=True)


def test_the_sdk_engine_saves_and_loads_alike(docker_engine, base_image, tmp_path):
    """Remote and TLS engines go through SdkEngine: its save (several names, one archive) and load agree."""
    import io

    from envbuilder.docker.sdk_engine import SdkEngine

    sdk = SdkEngine()
    ref = "envbuilder-test/bundle-roundtrip:sdk"
    sdk.tag(base_image, ref)
    try:
        archive = b"".join(sdk.save_images([ref, base_image]))
        sdk.remove_image(ref)
        assert sdk.image_inspect(ref) is None
        loaded = sdk.load_images(io.BytesIO(archive))
        assert ref in loaded and base_image in loaded
        assert sdk.image_inspect(ref)["Id"] == docker_engine.image_inspect(base_image)["Id"]
    finally:
        sdk.remove_image(ref)

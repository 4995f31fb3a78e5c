"""The project as a real installed package in its image, and images per checkout, with real Docker.

mypkg (tests/data/projects-build/mypkg) has a `[project.scripts]` console script and a C extension built by
setuptools. Its image must run the script, read its metadata and import the extension, both as built and under
`envbuilder run` with the live source mounted read-only over /workspace/project (which hides anything the build
wrote there). The build reuses the session's base image and loopback torch index; after the first time only
the project stage runs (a few seconds of gcc).
"""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest
from support.fixtures import HOST_CA, copy_project, run_in_image

pytestmark = pytest.mark.docker

CPU = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11")
HELLO = "mypkg 0.3.1 dot=32.0"


@pytest.fixture(scope="module")
def mypkg_dir(tmp_path_factory):
    return copy_project("mypkg", tmp_path_factory.mktemp("projects"))


@pytest.fixture(scope="module")
def mypkg_image(build_env, mypkg_dir):
    return build_env.build(build_env.plan(mypkg_dir), mypkg_dir)


def test_the_image_has_the_console_script_the_metadata_and_the_extension(build_env, mypkg_image):
    code, output = run_in_image(build_env.docker, mypkg_image.image, ["python", "verify.py"])
    assert code == 0, output
    found = json.loads(output.strip().splitlines()[-1])
    assert found["script"] == "/opt/venv/bin/mypkg-hello" and found["hello"] == HELLO
    assert found["extension"].startswith("/opt/venv/envbuilder-extensions/mypkg._speedups.")
    # the build wrote in a throw-away mount: the project folder is exactly the context, no build/ or .so
    code, listing = run_in_image(build_env.docker, mypkg_image.image, ["find", "/workspace/project"])
    assert code == 0, listing
    assert sorted(line for line in listing.split() if line.startswith("/")) == [
        "/workspace/project", "/workspace/project/mypkg", "/workspace/project/mypkg/__init__.py",
        "/workspace/project/mypkg/_speedups.c", "/workspace/project/mypkg/cli.py", "/workspace/project/pyproject.toml",
        "/workspace/project/setup.py", "/workspace/project/verify.py"]


def test_envbuilder_run_with_the_source_mounted_runs_the_entry_point_and_the_extension(cli, build_env, mypkg_dir,
                                                                                        mypkg_image, torch_cpu_index):
    flags = (*CPU, "--base-image", build_env.base_image, "--torch-index-url", torch_cpu_index.url,
             "--ca-cert", str(HOST_CA), "--network", "host", "--gpus", "none")
    hello = cli("run", str(mypkg_dir), *flags, "--", "mypkg-hello")
    assert hello.exit_code == 0, hello.stderr[-3000:]
    assert HELLO in hello.stdout
    checked = cli("run", str(mypkg_dir), *flags, "--", "python", "-c",
                  "import json, mypkg, mypkg._speedups as s; from importlib.metadata import version; "
                  "print(json.dumps([mypkg.__file__, s.__file__, s.dot([2.0], [21.0]), version('mypkg')]))")
    assert checked.exit_code == 0, checked.stderr[-3000:]
    source, extension, value, version = json.loads(checked.stdout.strip().splitlines()[-1])
    # the package comes from the mounted live source; the extension from the image, where the mount can't hide it
    assert source == "/workspace/project/mypkg/__init__.py"
    assert extension.startswith("/opt/venv/envbuilder-extensions/") and (value, version) == (42.0, "0.3.1")


def _tiny_image(docker, ref: str, labels: dict[str, str], tmp_path) -> str:
    tarball = tmp_path / "empty.tar"
    with tarfile.open(tarball, "w") as tar:
        data = b"envbuilder prune test\n"
        info = tarfile.TarInfo("marker.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return docker.import_image(tarball, ref, changes=[f'LABEL {k}="{v}"' for k, v in labels.items()])


def test_images_and_prune_keep_the_newest_and_the_one_a_running_job_uses(cli, docker_engine, tmp_path):
    from envbuilder.build.images import project_checkout
    from envbuilder.build.key import image_repo
    from envbuilder.imagelayout import (
        LABEL_BUILD_KEY,
        LABEL_CHECKOUT,
        LABEL_PLAN_HASH,
        LABEL_PROJECT,
        LABEL_TORCH,
    )
    from envbuilder.run.store import RunStore
    from envbuilder.settings import Settings

    project = tmp_path / "prunable"
    project.mkdir()
    checkout = project_checkout(project)
    repo = image_repo("prunable", checkout)
    refs = [f"{repo}:{n:016x}" for n in (1, 2, 3)]
    try:
        for n, ref in enumerate(refs):
            if n:
                time.sleep(1.1)  # the engine's creation times have one-second resolution: keep them ordered
            _tiny_image(docker_engine, ref, {LABEL_BUILD_KEY: f"{n}" * 64, LABEL_CHECKOUT: checkout, LABEL_PROJECT: "prunable",
                                             LABEL_PLAN_HASH: f"plan{n}", LABEL_TORCH: "2.13.0+cpu"}, tmp_path)
        docker_engine.tag(refs[-1], f"{repo}:latest")
        store = RunStore.from_settings(Settings(tmp_path / "envbuilder-home"))  # the cli fixture's data dir
        store.start_run("prunable", ["python", "train.py"], image=refs[0])  # recorded as running

        listed = cli("images", str(project), "--json")
        assert listed.exit_code == 0, listed.stderr
        assert [i["plan_hash"] for i in json.loads(listed.stdout)] == ["plan2", "plan1", "plan0"]
        pruned = cli("prune", str(project), "--keep", "1", "--json")
        assert pruned.exit_code == 0, pruned.stderr
        result = json.loads(pruned.stdout)
        assert [i["plan_hash"] for i in result["removed"]] == ["plan1"]
        assert [i["plan_hash"] for i in result["in_use"]] == ["plan0"]
        assert docker_engine.image_inspect(refs[1]) is None
        assert docker_engine.image_inspect(refs[0]) is not None and docker_engine.image_inspect(f"{repo}:latest") is not None
    finally:
        for ref in (*refs, f"{repo}:latest"):
            docker_engine.remove_image(ref, force=True)

"""Real builds (marked docker): one CPU image of the cpuproj fixture, shared by the session, checked from inside.

torch 2.13.0+cpu comes from a loopback index standing in for download.pytorch.org/whl/cpu, onnxruntime
and torch's own dependencies from PyPI through the host CA bundle (a BuildKit secret), on the
debootstrapped base, with host networking. The first build takes a minute or two; everything else reuses it.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from support.fixtures import HOST_CA, copy_project, run_in_image

from envbuilder.errors import DockerError

pytestmark = pytest.mark.docker
# A line a PEM parser skips (text outside BEGIN/END blocks): if the bundle leaked into a layer, so would this.
CA_MARKER = b"envbuilder-test-ca-marker-5b1d0c"


@pytest.fixture(scope="module")
def marked_ca(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "bundle.pem"
    path.write_bytes(HOST_CA.read_bytes() + b"\n# " + CA_MARKER + b"\n")
    return path


def test_image_has_the_plans_torch_python_and_onnxruntime(build_env, cpuproj_image, cpuproj_plan):
    expected = {"python": cpuproj_plan.python, "torch": cpuproj_plan.torch.local,
                "onnxruntime": cpuproj_plan.companions["onnxruntime"].version}
    assert expected["torch"] == "2.13.0+cpu"
    code, output = run_in_image(build_env.docker, cpuproj_image.image, ["python", "verify.py", json.dumps(expected)])
    assert code == 0, output
    found = json.loads(output.strip().splitlines()[-1])
    assert found["prefix"] == "/opt/venv" and found["cuda"] is None and found["forward"] == [1, 2]
    labels = build_env.docker.image_inspect(cpuproj_image.image)["Config"]["Labels"]
    assert labels["org.envbuilder.build-key"] == cpuproj_image.build_key
    assert labels["org.envbuilder.torch"] == "2.13.0+cpu"
    assert build_env.docker.image_inspect(cpuproj_image.image.split(":")[0] + ":latest")["Id"] == cpuproj_image.image_id


def test_unchanged_rebuild_is_cached_and_fast(build_env, cpuproj_image, cpuproj_plan, cpuproj_dir):
    again = build_env.build(cpuproj_plan, cpuproj_dir)
    assert again.cached and again.image_id == cpuproj_image.image_id and again.build_key == cpuproj_image.build_key
    assert again.seconds < 1.0


def test_noop_cli_build_end_to_end_is_under_a_second(cli, build_env, cpuproj_image, cpuproj_dir, torch_cpu_index):
    args = ["build", str(cpuproj_dir), "--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none",
            "--base-image", build_env.base_image, "--torch-index-url", torch_cpu_index.url,
            "--ca-cert", str(HOST_CA), "--network", "host", "--json"]
    started = time.perf_counter()
    result = cli(*args)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["cached"] is True and out["image"] == cpuproj_image.image
    assert {"image", "plan_hash", "cached", "log", "build_key", "seconds", "python", "torch"} <= set(out)
    assert out["python"] == "3.11" and out["torch"] == "2.13.0+cpu"
    assert elapsed < 1.0, f"no-op build took {elapsed:.2f} s"


def test_source_change_rebuilds_only_the_project_layer(build_env, cpuproj_image, cpuproj_plan, tmp_path):
    project = copy_project("cpuproj", tmp_path)
    first = build_env.build(cpuproj_plan, project)
    # a nonce: each session's edit is new, so this build can never be a cached one from an earlier session
    (project / "cpuproj" / "extra.py").write_text(f"ANSWER = 42  # {uuid.uuid4()}\n")
    second = build_env.build(cpuproj_plan, project)
    assert not second.cached and second.build_key != first.build_key
    status = {s.title.split("]")[0] + "]": s.status for s in second.steps if s.title.startswith("[")}
    assert status["[torch 1/1]"] == "cached" and status["[dependencies 1/1]"] == "cached", status
    # cpuproj is a package ([tool.setuptools]): the copy, then its editable install
    assert status["[project 2/3]"] == "done" and status["[project 3/3]"] == "done", status
    code, output = run_in_image(build_env.docker, second.image, ["python", "-c", "import cpuproj.extra as e; print(e.ANSWER)"])
    assert (code, output.strip()) == (0, "42")


def test_failed_build_keeps_the_previous_image_and_its_log(build_env, cpuproj_image, cpuproj_plan, cpuproj_dir):
    repo = cpuproj_image.image.split(":")[0]
    latest_before = build_env.docker.image_inspect(f"{repo}:latest")["Id"]
    broken = cpuproj_plan.model_copy(update={"dependencies": ("envbuilder-no-such-package-4f2a==1.0",)})
    with pytest.raises(DockerError) as err:
        build_env.build(broken, cpuproj_dir)
    log = Path(err.value.context["log"])
    assert log.is_file() and "envbuilder-no-such-package-4f2a" in log.read_text()
    assert str(log) in err.value.hint
    assert build_env.docker.image_inspect(f"{repo}:latest")["Id"] == latest_before
    assert build_env.docker.image_inspect(f"{repo}:{err.value.context['build_key'][:16]}") is None
    assert build_env.docker.image_inspect(cpuproj_image.image) is not None


def test_ca_bundle_never_reaches_a_layer(build_env, cpuproj_plan, marked_ca, tmp_path):
    project = copy_project("cpuproj", tmp_path)
    probe = f"probe-visible-{uuid.uuid4()}".encode()
    (project / "marker_probe.txt").write_bytes(probe + b"\n")  # a string the search must find
    # --no-cache: every RUN step mounts marked_ca now (cached layers would have been made with another bundle)
    built = build_env.build(cpuproj_plan, project, ca_cert=marked_ca, force=True)
    assert not built.cached
    code, output = run_in_image(build_env.docker, built.image, ["sh", "-c", "ls -A /run/secrets 2>/dev/null | wc -l"])
    assert (code, output.strip()) == (0, "0")
    history = build_env.docker.client.api.history(built.image)
    assert not any("bundle.pem" in (h.get("CreatedBy") or "") for h in history)
    found = _search_saved_image(build_env.docker, built.image, [CA_MARKER, probe])
    assert found == {probe}, "the CA bundle's bytes are in the image"


def _search_saved_image(docker, image: str, needles: list[bytes]) -> set[bytes]:
    """Which needles occur anywhere in `docker save` output (uncompressed layer tars, so bytes appear as is)."""
    found: set[bytes] = set()
    keep = max(len(n) for n in needles)
    tail = b""
    for chunk in docker.client.images.get(image).save(chunk_size=4 << 20):
        window = tail + chunk
        found.update(n for n in needles if n in window)
        tail = window[-keep:]
    return found


def test_dockerfile_override_builds_the_users_edit(build_env, cpuproj_image, cpuproj_plan, tmp_path):
    from envbuilder.render.dockerfile import render_dockerfile

    project = copy_project("cpuproj", tmp_path)
    text = render_dockerfile(cpuproj_plan, build_env.options(ca_cert=True))
    edited = tmp_path / "Dockerfile"
    edited.write_text(text.replace("USER envbuilder", "RUN echo edited-by-user > /tmp/edited\nUSER envbuilder"))
    built = build_env.build(cpuproj_plan, project, dockerfile_override=edited)
    code, output = run_in_image(build_env.docker, built.image, ["cat", "/tmp/edited"])
    assert (code, output.strip()) == (0, "edited-by-user")
    assert build_env.build(cpuproj_plan, project, dockerfile_override=edited).cached


@pytest.mark.slow
def test_cuda_image_from_a_loopback_index(build_env, base_image, cli, tmp_path):
    """The CLI end to end for a declared H100 target: the resolver reads the mirror (/opt/pypi-more, which holds
    torch 2.14.1 as PyPI ships it: the CUDA 13.0 build and its nvidia-* wheels) and the image has CUDA 13.0."""
    from support.fixtures import CUDA_INDEX_ROOT
    from envbuilder.index.server import IndexServer, stable_port

    project = copy_project("cudaproj", tmp_path)
    with IndexServer(root=CUDA_INDEX_ROOT, port=stable_port(str(CUDA_INDEX_ROOT))) as index:
        result = cli("build", str(project), "--target-os", "linux", "--target-arch", "x86_64", "--gpu", "nvidia",
                     "--cuda-driver", "580.95.05", "--compute-capability", "9.0", "--base-image", base_image,
                     "--torch-index-url", index.url, "--host-ca", "--network", "host", "--json")
    assert result.exit_code == 0, result.stderr[-3000:]
    built = json.loads(result.stdout)
    assert built["torch"].startswith("2.14.1")
    code, output = run_in_image(build_env.docker, built["image"], ["python", "verify.py", json.dumps({"cuda": "13.0"})])
    assert code == 0, output
    assert json.loads(output.strip().splitlines()[-1])["torch"].startswith("2.14.1")


def test_ctrl_c_kills_the_build_and_moves_no_tag(build_env, cpuproj_image, cpuproj_plan, tmp_path):
    """KeyboardInterrupt mid-build (raised where Ctrl-C lands: in the line loop): the CLI child dies, no tag."""
    from envbuilder.proc import run_command

    from envbuilder.build.images import project_checkout
    from envbuilder.build.key import image_repo

    project = copy_project("cpuproj", tmp_path)
    repo = image_repo("cpuproj", project_checkout(project))
    first = build_env.build(cpuproj_plan, project)  # this checkout's :latest, which the interrupted build must not move
    latest_before = build_env.docker.image_inspect(f"{repo}:latest")["Id"]
    (project / "interrupted.txt").write_text("x\n")  # a new key

    def ctrl_c_at_python_step(line: str) -> None:
        if line.startswith("#") and "[python 1/1]" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_env.build(cpuproj_plan, project, on_line=ctrl_c_at_python_step, force=True)
    logs = sorted(build_env.settings.logs_dir.glob("build-*.log"), key=lambda p: p.stat().st_mtime)
    assert logs[-1].read_text().rstrip().splitlines()[-1].startswith("# envbuilder: interrupted")
    key16 = logs[-1].name.split("-")[1]
    assert build_env.docker.image_inspect(f"{repo}:{key16}") is None
    assert build_env.docker.image_inspect(f"{repo}:latest")["Id"] == latest_before == first.image_id
    ps = run_command(["ps", "-eo", "args"], timeout=10)
    assert f"{repo}:{key16}" not in ps.stdout, "the docker build client is still running"


def test_cli_and_api_build_the_same_plan_and_key(cli, build_env, cpuproj_image, cpuproj_dir, torch_cpu_index):
    """Same inputs, same plan and image key, whether through `envbuilder build` or envbuilder.api.build_project.
    The base image's Python (3.11) is not the matrix's newest, so the API must pin it as the CLI does."""
    from support.fixtures import CPU_TARGET

    from envbuilder.api import build_project, plan_project
    from envbuilder.render.network import NetworkOptions
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags

    flags = TargetFlags(**CPU_TARGET)
    network = NetworkOptions(base_image=build_env.base_image, torch_index_url=torch_cpu_index.url,
                             ca_cert=str(HOST_CA), network="host")
    offline = ResolveRequest(offline=True)  # as the CLI here (conftest's ENVBUILDER_OFFLINE=1)
    _, unpinned = plan_project(str(cpuproj_dir), flags=flags, request=offline, settings=build_env.settings)
    assert unpinned.python != "3.11"
    api = build_project(str(cpuproj_dir), flags=flags, request=offline, network=network, settings=build_env.settings,
                        engine=build_env.docker)
    result = cli("--data-dir", str(build_env.settings.data_dir), "build", str(cpuproj_dir), "--target-os", "linux",
                 "--target-arch", "x86_64", "--gpu", "none", "--base-image", build_env.base_image,
                 "--torch-index-url", torch_cpu_index.url, "--ca-cert", str(HOST_CA), "--network", "host", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert api.plan.python == out["python"] == "3.11"
    assert (out["plan_hash"], out["build_key"]) == (api.image.plan_hash, api.image.build_key)
    assert api.image.build_key == cpuproj_image.build_key

"""The pure half of `envbuilder submit`: profiles, resources, the GPU-kernel check, the job descriptions
(sbatch checked by bash, the Kubernetes Job by the OpenAPI schema and the official client's models, the SkyPilot
task by SkyPilot's own parser) and the parsers of Slurm's output, on captured samples (tests/data/cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from envbuilder.cluster.kubernetes import job_state, pod_exit_code, render_job_manifest
from envbuilder.cluster.profiles import (
    ClusterProfile,
    load_profiles,
    parse_profiles,
    pick_profile,
)
from envbuilder.cluster.skypilot import render_task
from envbuilder.cluster.slurm import (
    enroot_uri,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_job,
    parse_squeue,
    render_sbatch,
    slurm_time,
)
from envbuilder.cluster.spec import (
    ImageTorch,
    ResourceRequest,
    Resources,
    check_gpu_kernels,
    cluster_job,
    job_resources,
)
from envbuilder.cluster.submit import target_flags
from envbuilder.cluster.text import manifest_text
from envbuilder.errors import EnvbuilderError, UsageError
from envbuilder.project.jobs import Job
from envbuilder.resolve.matrix import load_matrix
from envbuilder.run.spec import run_spec

DATA = Path(__file__).parent / "data" / "cluster"
MATRIX = load_matrix()
RUN_ID = "r-20261130-081628-5f31"


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "proj").mkdir()
    (tmp_path / "data").mkdir()
    return tmp_path / "proj"


def _job(project: Path, resources: Resources, **job_fields):
    job = Job.model_validate({"command": "python -m tinynet.train --epochs 10", **job_fields})
    spec = run_spec("registry.example.com/team/tinynet@sha256:" + "a" * 64, project, job=job, job_name="train",
                    project_name="tinynet", has_nvidia=lambda: False)
    return cluster_job(spec, run_id=RUN_ID, log_path=project.parent / "runs" / RUN_ID / "log.txt", resources=resources)


GPU = Resources(gpus=2, gpu_type="H100", cpus=8, memory="32g", time_s=7200, shm_size="8g")


# --- profiles and resources -------------------------------------------------------------------------------


def test_profiles_load_from_the_data_dir_config_and_every_problem_is_reported(tmp_path):
    (tmp_path / "config.toml").write_text(
        '[clusters.lab]\nengine = "slurm"\npartition = "gpu"\nruntime = "apptainer"\ngpu-type = "H100"\n'
        '[clusters.k8s]\nengine = "kubernetes"\nnamespace = "ml"\n', encoding="utf-8")
    profiles, origin = load_profiles(tmp_path, environ={})
    assert origin == tmp_path / "config.toml"
    assert profiles["lab"].partition == "gpu" and profiles["lab"].runtime == "apptainer"
    assert pick_profile(profiles, "k8s", None).namespace == "ml"
    with pytest.raises(UsageError, match="cluster-engine-mismatch|kubernetes cluster, not slurm"):
        pick_profile(profiles, "k8s", "slurm")
    with pytest.raises(UsageError, match="no cluster profile 'nope'"):
        pick_profile(profiles, "nope", None, origin)
    assert pick_profile({}, None, "skypilot").engine == "skypilot"
    with pytest.raises(UsageError) as caught:
        parse_profiles({"a": {"engine": "pbs"}, "b": {"runtime": "lxc", "sbatch-args": ["qos=high"]}})
    message = str(caught.value)
    assert "clusters.a.engine" in message and "clusters.b.runtime" in message and "clusters.b.sbatch-args" in message


def test_job_resources_come_from_the_command_line_then_the_job_then_the_profile():
    job = Job.model_validate({"command": "python x", "resources": {"gpu-type": "A100", "cpus": 4, "time": "2h"},
                              "timeout": 60})
    r = job_resources(job, ResourceRequest(cpus=16), profile_gpu_type="H100", shm_size="2g")
    assert (r.gpus, r.gpu_type, r.cpus, r.time_s) == (1, "A100", 16, 7200)  # auto GPUs: one, of the job's type
    assert job_resources(job, ResourceRequest(gpus=0), profile_gpu_type=None, shm_size="2g").gpu_type is None
    plain = Job.model_validate({"command": "python x", "gpus": "none", "timeout": 90})
    r = job_resources(plain, ResourceRequest(), profile_gpu_type="H100", shm_size="2g")
    assert (r.gpus, r.time_s) == (0, 90)
    with pytest.raises(EnvbuilderError, match="bad-size"):
        job_resources(plain, ResourceRequest(memory="lots"), profile_gpu_type=None, shm_size="2g")
    with pytest.raises(ValueError, match="not a time limit"):
        Job.model_validate({"command": "python x", "resources": {"time": "soon"}})


def test_the_plan_is_resolved_for_the_clusters_gpu_not_this_machines():
    flags = target_flags(GPU, ClusterProfile(cuda_driver="570.86.10"), MATRIX)
    assert (flags.os, flags.gpu, flags.compute_capability, flags.cuda_driver) == ("linux", "nvidia", ("9.0",), "570.86.10")
    assert target_flags(Resources(), ClusterProfile(), MATRIX).gpu == "none"
    with pytest.raises(UsageError, match="gpu-type-unknown"):
        target_flags(Resources(gpus=1, gpu_type="Quantum 9000"), ClusterProfile(), MATRIX)


@pytest.mark.parametrize(("gpu", "flavor", "refused"), [
    ("H100", "cu128", None), ("V100", "cu128", "no kernels for V100"), ("B200", "cu118", "no kernels for B200"),
    ("A100", "cpu", "no GPU kernels"), ("Foo 1", "cu128", "gpu-type-unknown"), ("H100", "rocm6.3", "NVIDIA GPU"),
])
def test_a_gpu_type_the_image_has_no_kernels_for_is_refused(gpu, flavor, refused):
    release = next(r for r in MATRIX.torch if r.version == "2.7.0")
    resources = Resources(gpus=1, gpu_type=gpu)
    if refused is None:
        assert check_gpu_kernels(resources, ImageTorch(release.version, flavor), MATRIX) == []
    else:
        with pytest.raises(UsageError, match=refused):
            check_gpu_kernels(resources, ImageTorch(release.version, flavor), MATRIX)
    assert check_gpu_kernels(Resources(), ImageTorch(release.version, "cpu"), MATRIX) == []


def test_image_torch_comes_from_the_plan_label_or_the_torch_and_flavour_labels():
    plan = {"torch": {"version": "2.7.0", "flavor": "cu128"}, "target": {"arch": "aarch64"}}
    assert ImageTorch.from_labels(plan, None, None) == ImageTorch("2.7.0", "cu128", "aarch64")
    assert ImageTorch.from_labels(None, "2.7.0+cu126", "cu126") == ImageTorch("2.7.0", "cu126")
    assert ImageTorch.from_labels(None, None, None) is None


# --- Slurm ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("runtime", ["docker", "podman", "apptainer", "singularity", "enroot"])
def test_the_sbatch_script_is_valid_bash_for_every_runtime(project, runtime, tmp_path):
    job = _job(project, GPU, mounts=[f"{project.parent / 'data'}:/data:ro"], env={"OMP_NUM_THREADS": 4})
    profile = ClusterProfile(partition="gpu", account="ml", runtime=runtime, gpu_names={"H100": "h100_80gb"},
                             sbatch_args=("--qos=high",))
    script = render_sbatch(job, profile, image_ref=job.image, local_engine=False)
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    for option in ("--partition=gpu", "--account=ml", "--cpus-per-task=8", "--mem=32768M", "--time=0-02:00:00",
                   "--gres=gpu:h100_80gb:2", "--qos=high", f"--output={job.log_path}", "--signal=B:TERM@30"):
        assert f"#SBATCH {option}\n" in script
    assert "trap stop_job TERM INT" in script and 'exit "$code"' in script
    mounts = {"docker": f"-v {project}:/workspace/project:ro", "podman": f"-v {project}:/workspace/project:ro",
              "apptainer": f"--bind {project}:/workspace/project:ro", "singularity": f"--bind {project}:/workspace/project:ro",
              "enroot": f"--container-mounts={project}:/workspace/project:ro,{project.parent / 'data'}:/data:ro"}
    assert mounts[runtime] in script
    image = {"docker": job.image, "podman": job.image, "apptainer": f"docker://{job.image}",
             "singularity": f"docker://{job.image}", "enroot": enroot_uri(job.image)}[runtime]
    assert image in script


def test_the_sbatch_script_uses_the_local_engines_image_and_the_gpus_flag(project):
    job = _job(project, Resources(gpus=1, gpu_type="A100"))
    docker = render_sbatch(job, ClusterProfile(gpu_flag="gpus"), image_ref="envbuilder/tinynet:abc", local_engine=True)
    assert "#SBATCH --gpus=a100:1" in docker and "envbuilder/tinynet:abc python -m tinynet.train" in docker
    assert 'gpu_args=(--gpus "\\"device=$gpu_ids\\"")' in docker
    apptainer = render_sbatch(job, ClusterProfile(runtime="apptainer"), image_ref="envbuilder/tinynet:abc", local_engine=True)
    assert "docker-daemon:envbuilder/tinynet:abc" in apptainer and "gpu_args=(--nv)" in apptainer
    enroot = render_sbatch(job, ClusterProfile(runtime="enroot"), image_ref="envbuilder/tinynet:abc", local_engine=True)
    assert "--container-image=dockerd://envbuilder/tinynet:abc" in enroot


def test_the_sbatch_script_forwards_sigterm_and_propagates_the_exit_code(tmp_path):
    """The script's own signal handling, run by bash with a stand-in `docker` on PATH (no Slurm needed)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    # `docker run` starts a job that exits 7 on SIGTERM; `docker kill --signal TERM` signals it.
    fake.write_text("#!/bin/bash\nif [ \"$1\" = run ]; then\n  echo $$ > \"$FAKE_PID\"\n"
                    "  trap 'echo got TERM; exit 7' TERM\n  echo started\n  while :; do sleep 0.05; done\nfi\n"
                    "if [ \"$1\" = kill ]; then kill -TERM \"$(cat \"$FAKE_PID\")\"; fi\n")
    fake.chmod(0o755)
    project = tmp_path / "proj"
    project.mkdir()
    job = _job(project, Resources())
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(job, ClusterProfile(), image_ref="img", local_engine=True))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_PID": str(tmp_path / "pid")}
    proc = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    proc.send_signal(15)
    out, _ = proc.communicate(timeout=60)  # generous: the test machine is shared
    assert "got TERM" in out and proc.returncode == 7


def test_slurm_times_and_enroot_image_names():
    assert slurm_time(90) == "0-00:01:30" and slurm_time(86400 + 3661) == "1-01:01:01"
    assert enroot_uri("registry.example.com/team/img:1") == "registry.example.com#team/img:1"
    assert enroot_uri("localhost:5000/img") == "localhost:5000#img" and enroot_uri("pytorch/pytorch") == "pytorch/pytorch"


def test_slurm_output_parsers_on_captured_samples():
    read = lambda name: (DATA / name).read_text()
    assert parse_sbatch("42\n") == "42" and parse_sbatch("42;cluster\n") == "42"
    with pytest.raises(EnvbuilderError, match="no job id"):
        parse_sbatch("sbatch: error: Batch job submission failed\n")
    assert parse_squeue(read("squeue-running.txt"), "6").status == "running"
    assert parse_squeue(read("squeue-pending.txt"), "7").status == "queued"
    assert parse_squeue(read("squeue-running.txt"), "99") is None
    assert parse_squeue(read("squeue-cancelled.txt"), "6").status == "stopped"
    assert parse_scontrol_job(read("scontrol-running.txt")).status == "running"
    completed = parse_scontrol_job(read("scontrol-completed.txt"))
    assert (completed.status, completed.exit_code) == ("completed", 0)
    failed = parse_scontrol_job(read("scontrol-failed-143.txt"))
    assert (failed.status, failed.exit_code) == ("failed", 143) and "NonZeroExitCode" in failed.detail
    assert parse_scontrol_job(read("scontrol-cancelled.txt")).status == "stopped"
    assert parse_scontrol_job(read("scontrol-invalid.stderr.txt")) is None
    assert (parse_sacct(read("sacct-failed.txt")).status, parse_sacct(read("sacct-failed.txt")).exit_code) == ("failed", 2)
    cancelled = parse_sacct(read("sacct-cancelled.txt"))
    assert (cancelled.status, cancelled.exit_code) == ("stopped", 143)


# --- Kubernetes ---------------------------------------------------------------------------------------------


K8S_PROFILES = [
    ClusterProfile(engine="kubernetes", namespace="ml", gpu_product_label="nvidia.com/gpu.product",
                   gpu_names={"H100": "NVIDIA-H100-80GB-HBM3"}, artifacts="pvc", artifacts_claim="runs",
                   image_pull_secret="regcred"),
    ClusterProfile(engine="kubernetes", artifacts="host-path", artifacts_host_path="/srv/artifacts"),
    ClusterProfile(engine="kubernetes"),
]


@pytest.mark.parametrize("profile", K8S_PROFILES, ids=["pvc-selector", "host-path", "defaults"])
@pytest.mark.parametrize("resources", [GPU, Resources()], ids=["gpu", "cpu"])
def test_the_job_manifest_passes_the_openapi_schema_and_the_official_models(project, profile, resources):
    import kubernetes_validate
    from kubernetes import client

    from envbuilder.cluster.engines import parse_job_model

    job = _job(project, resources)
    manifest = render_job_manifest(job, profile, image_ref=job.image)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    model = parse_job_model(json.loads(json.dumps(manifest)), client)
    assert isinstance(model, client.V1Job)
    # Round trip: the model serializes back to the manifest (nothing dropped, nothing renamed).
    assert client.ApiClient().sanitize_for_serialization(model) == manifest
    pod = model.spec.template.spec
    [container] = pod.containers
    assert container.image.endswith("@sha256:" + "a" * 64) and container.command[:3] == ["python", "-m", "tinynet.train"]
    assert pod.security_context.run_as_non_root and container.security_context.allow_privilege_escalation is False
    assert not any(m.mount_path == "/workspace/project" for m in container.volume_mounts)  # the code is the image's
    shm = next(v for v in pod.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory" and shm.empty_dir.size_limit == f"{resources.shm_mib}Mi"
    assert model.spec.backoff_limit == profile.backoff_limit and model.spec.ttl_seconds_after_finished == 86400
    if resources.gpus:
        assert container.resources.limits["nvidia.com/gpu"] == "2" and model.spec.active_deadline_seconds == 7200
    if resources.gpus and profile.gpu_product_label:
        assert pod.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


def test_data_mounts_become_the_volumes_the_profile_maps_and_the_rest_are_named(project):
    import kubernetes_validate

    from envbuilder.cluster.kubernetes import unmapped_mounts
    from envbuilder.cluster.submit import engine_notices

    data = project.parent / "data"
    (data / "imagenet").mkdir()
    scratch = project.parent / "scratch"
    scratch.mkdir()
    elsewhere = project.parent / "elsewhere"
    elsewhere.mkdir()
    profile = parse_profiles({"k8s": {"engine": "kubernetes", "volumes": {
        str(data): {"claim": "datasets"}, str(scratch): {"host-path": "/mnt/scratch", "read-only": False}}}})["k8s"]
    job = _job(project, GPU, mounts=[f"{data / 'imagenet'}:/data/imagenet:ro", f"{scratch}:/scratch:ro",
                                     f"{elsewhere}:/elsewhere:ro"])
    manifest = render_job_manifest(job, profile, image_ref=job.image)
    kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["volumes"][2:] == [
        {"name": "data-0", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
        {"name": "data-1", "hostPath": {"path": "/mnt/scratch", "type": "Directory"}}]
    assert pod["containers"][0]["volumeMounts"][2:] == [
        {"name": "data-0", "mountPath": "/data/imagenet", "readOnly": True, "subPath": "imagenet"},
        {"name": "data-1", "mountPath": "/scratch", "readOnly": False}]
    assert [m.target for m in unmapped_mounts(job, profile)] == ["/elsewhere"]
    [dropped, metrics] = engine_notices(job, profile, tracked=True)
    assert [n.code for n in engine_notices(job, profile, tracked=False)] == ["cluster-mounts-dropped"]
    assert dropped.code == "cluster-mounts-dropped" and f"{elsewhere}:/elsewhere" in dropped.message
    assert "[clusters.k8s.volumes]" in dropped.hint and str(data) not in dropped.message
    assert metrics.code == "metrics-file-not-read"
    with pytest.raises(UsageError, match="exactly one of claim"):
        parse_profiles({"k8s": {"engine": "kubernetes", "volumes": {"/d": {"claim": "a", "host-path": "/b"}}}})
    with pytest.raises(UsageError, match="absolute folder"):
        parse_profiles({"k8s": {"engine": "kubernetes", "volumes": {"data": {"claim": "a"}}}})


def test_a_broken_manifest_fails_the_schema(project):
    import kubernetes_validate

    manifest = render_job_manifest(_job(project, GPU), K8S_PROFILES[0], image_ref="img@sha256:" + "a" * 64)
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"cores": 8}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, kubernetes_validate.latest_version(), strict=True)


def test_job_states_from_the_api_status():
    assert job_state(None).status is None
    assert job_state({"conditions": [{"type": "Complete", "status": "True"}]}).status == "completed"
    assert job_state({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}).detail == \
        "Failed (DeadlineExceeded)"
    assert job_state({"active": 1, "startTime": "2026-01-01T00:00:00Z"}).status == "running"
    assert job_state({}).status == "queued"
    pod = {"containerStatuses": [{"name": "job", "state": {"terminated": {"exitCode": 3}}}]}
    assert pod_exit_code(pod) == 3 and pod_exit_code({}) is None


# --- SkyPilot -------------------------------------------------------------------------------------------------


def _skypilot_python() -> str:
    """An interpreter with SkyPilot: this one, $ENVBUILDER_SKYPILOT_PYTHON, or the venv scripts/test.sh makes
    (SkyPilot pins click < 8.2, so it is kept out of the project's own environment)."""
    try:
        import sky  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    for candidate in (os.environ.get("ENVBUILDER_SKYPILOT_PYTHON"),
                      str(Path.home() / ".cache" / "envbuilder-skypilot" / "bin" / "python")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("SkyPilot is not installed: run scripts/test.sh (it makes ~/.cache/envbuilder-skypilot), or set "
                "ENVBUILDER_SKYPILOT_PYTHON to a Python that has `skypilot`")


def test_the_skypilot_task_loads_with_skypilots_own_parser(project, tmp_path):
    job = _job(project, GPU, mounts=[f"{project.parent / 'data'}:/data:ro"], env={"WANDB_MODE": "offline"})
    task = render_task(job, ClusterProfile(engine="skypilot", cloud="aws"), image_ref="registry.example.com/t:1")
    assert task["resources"]["accelerators"] == "H100:2" and task["resources"]["image_id"] == "docker:registry.example.com/t:1"
    path = tmp_path / "task.yaml"
    path.write_text(manifest_text(task))
    program = ("import json, sys, sky\n"
               "t = sky.Task.from_yaml(sys.argv[1])\n"
               "[r] = list(t.resources)\n"
               "print(json.dumps({'name': t.name, 'acc': r.accelerators, 'image': r.image_id, 'envs': t.envs,"
               " 'mounts': t.file_mounts, 'run': t.run, 'cloud': str(r.cloud)}))\n")
    done = subprocess.run([_skypilot_python(), "-c", program, str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["name"] == job.name and loaded["acc"] == {"H100": 2}
    assert "docker:registry.example.com/t:1" in json.dumps(loaded["image"]) and loaded["cloud"].lower() == "aws"
    assert loaded["envs"]["WANDB_MODE"] == "offline" and loaded["envs"]["ENVBUILDER_ARTIFACTS"] == "/artifacts"
    assert loaded["mounts"] == {"/data": str(project.parent / "data")}
    assert "timeout --signal=TERM" in loaded["run"] and "python -m tinynet.train --epochs 10" in loaded["run"]

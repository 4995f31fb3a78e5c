"""submit_job: a project's job (or command) sent to a cluster and recorded as a `queued` run.

The steps `envbuilder submit` takes after parsing its arguments: read the project and the job, pick the cluster
profile (the command line over the job's `cluster` table over the user config), work out the resources, get
the image (the caller's build step resolves the plan for the cluster's GPU, not this machine's; or --image),
refuse a GPU type the image has no kernels for, render the engine's job description, then submit it and record
the run, tied to the engine's job id. `--dry-run` stops after the render. Without a kubeconfig (Kubernetes) or a
configured `sky` (SkyPilot) the description is printed instead of submitted, and nothing is recorded.
Must not import envbuilder.api or the CLI: the build step is a callable the caller passes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuilder.cluster.engines import (
    KubernetesEngine,
    SkyPilotEngine,
    SlurmEngine,
    engine_for,
)
from envbuilder.cluster.kubernetes import render_job_manifest, unmapped_mounts
from envbuilder.cluster.metrics import READABLE_ARTIFACTS
from envbuilder.cluster.profiles import (
    ClusterProfile,
    load_profiles,
    pick_profile,
    with_overrides,
)
from envbuilder.cluster.skypilot import render_task
from envbuilder.cluster.slurm import render_sbatch
from envbuilder.cluster.spec import (
    ClusterJob,
    ImageTorch,
    ResourceRequest,
    Resources,
    check_gpu_kernels,
    cluster_job,
    job_resources,
)
from envbuilder.cluster.text import manifest_text
from envbuilder.errors import DockerError, UsageError
from envbuilder.imagelayout import LABEL_FLAVOR, LABEL_PLAN, LABEL_TORCH
from envbuilder.notices import Notice
from envbuilder.resolve.matrix import Matrix
from envbuilder.resolve.plan import TargetFlags
from envbuilder.run.launch import ProjectImage, project_folder
from envbuilder.run.metric_channels import fresh_metrics_file
from envbuilder.run.spec import METRICS_RELPATH, RunOptions, default_shm_size, run_spec

# (project source, git commit or ref, the target the cluster's GPU asks for) -> the project's image
ClusterBuildStep = Callable[[str, "str | None", TargetFlags], ProjectImage]
DESCRIPTION_FILE = {"slurm": "job.sbatch", "kubernetes": "job.yaml", "skypilot": "task.yaml"}


@dataclass(frozen=True)
class SubmitRequest:
    """What to submit and where; None keeps the job's (then the profile's) value."""

    job: str | None = None
    command: tuple[str, ...] = ()
    engine: str | None = None  # --to
    profile: str | None = None
    image: str | None = None
    resources: ResourceRequest = field(default_factory=ResourceRequest)
    options: RunOptions = field(default_factory=RunOptions)
    partition: str | None = None
    account: str | None = None
    namespace: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Submission:
    """What submit_job did: the description it rendered and, unless it only printed it, the run it recorded."""

    engine: str
    profile: str
    description: str  # the sbatch script, Job manifest or SkyPilot task, as text
    image: str
    resources: Resources
    submitted: bool
    run_id: str | None = None
    job_id: str | None = None
    description_path: str | None = None
    log_path: str | None = None
    notes: tuple[str, ...] = field(default=())
    notices: tuple[Notice, ...] = field(default=())  # coded (envbuilder.notices); kept on the run as well

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "profile": self.profile, "submitted": self.submitted, "run_id": self.run_id,
                "job_id": self.job_id, "status": "queued" if self.submitted else None, "image": self.image,
                "resources": self.resources.to_json(), "description_path": self.description_path,
                "log_path": self.log_path, "notes": list(self.notes),
                "notices": [{"code": n.code, "message": n.message, "hint": n.hint} for n in self.notices],
                "description": self.description}


def submit_job(source: str, request: SubmitRequest, *, settings: Any, matrix: Matrix, ref: str | None = None,
               build: ClusterBuildStep | None = None, docker: Any = None, store: Any = None,
               on_image: Callable[[ProjectImage], None] | None = None) -> Submission:
    """Submit `request` from the project at `source`. Raises EnvbuilderError before anything is submitted when
    the project, job, profile, resources or image is wrong."""
    project_dir, commit = project_folder(source, ref, settings)
    from envbuilder.project.config import load_config

    config = load_config(project_dir)
    job = config.job(request.job) if request.job else None
    if job is None and not request.command:
        raise UsageError("usage", "nothing to submit", "name a JOB from the project's config, or pass -- CMD ...")
    profile = _profile(request, job, settings)
    engine = engine_for(profile)
    local_engine = _nodes_use_local_engine(profile, engine)
    resources = job_resources(job, request.resources, profile_gpu_type=profile.gpu_type,
                              shm_size=(job.shm_size if job is not None else None) or default_shm_size())
    notes: list[str] = []
    chosen, image_torch = _image(request, source, commit or ref, build, docker, resources, profile, matrix, local_engine)
    if on_image:
        on_image(chosen)
    notes += check_gpu_kernels(resources, image_torch, matrix)
    printed_only = _why_print_only(profile, request.dry_run)
    node_image = _node_image(chosen.ref, profile, docker, local_engine, notes, strict=printed_only is None)
    spec = run_spec(chosen.ref, project_dir, job=job, job_name=request.job, command=request.command,
                    options=request.options, plan=chosen.plan, project_name=chosen.project_name,
                    has_nvidia=lambda: False)  # the cluster's GPUs come from `resources`, not this machine
    vendor = "amd" if image_torch is not None and image_torch.flavor.startswith("rocm") else "nvidia"
    if printed_only:
        if printed_only != "dry run":
            notes.append(printed_only)
        from envbuilder.run.store import new_run_id

        run_id = new_run_id()
        planned = cluster_job(spec, run_id=run_id, log_path=Path(settings.runs_dir) / run_id / "log.txt",
                              resources=resources, gpu_vendor=vendor, notes=tuple(notes))
        text = render(planned, profile, image_ref=node_image, local_engine=local_engine)
        return Submission(profile.engine, profile.name, text, node_image, resources, False, notes=tuple(notes),
                          notices=tuple(engine_notices(planned, profile, tracked=False)))
    return _submit(spec, profile, engine, resources, vendor, node_image, local_engine, notes, settings, store)


def render(job: ClusterJob, profile: ClusterProfile, *, image_ref: str, local_engine: bool) -> str:
    """The engine's job description as text."""
    if profile.engine == "slurm":
        return render_sbatch(job, profile, image_ref=image_ref, local_engine=local_engine)
    if profile.engine == "kubernetes":
        return manifest_text(render_job_manifest(job, profile, image_ref=image_ref))
    return manifest_text(render_task(job, profile, image_ref=image_ref))


def _submit(spec: Any, profile: ClusterProfile, engine: Any, resources: Resources, vendor: str, node_image: str,
            local_engine: bool, notes: list[str], settings: Any, store: Any) -> Submission:
    if store is None:
        from envbuilder.run.store import RunStore

        store = RunStore.from_settings(settings)
    if spec.artifacts_dir is not None and (local_engine or profile.engine == "slurm"):
        # Created here, as the caller: a runtime would create a missing bind source as root.
        spec.artifacts_dir.mkdir(parents=True, exist_ok=True)
    if spec.artifacts_dir is not None and profile.engine in READABLE_ARTIFACTS:
        fresh_metrics_file(spec.artifacts_dir / METRICS_RELPATH)  # read from here as the job writes it
    record = store.start_run(spec.project_name, spec.argv, job=spec.job, image=spec.image, plan=spec.plan,
                             artifacts_dir=spec.artifacts_dir, backend=profile.engine,
                             args={**spec.record_args(), "cluster": _cluster_args(profile, resources, node_image,
                                                                                   spec.metric_patterns)})
    job = cluster_job(spec, run_id=record.id, log_path=Path(record.log_path), resources=resources, gpu_vendor=vendor,
                      notes=tuple(notes))
    path = Path(record.log_path).parent / DESCRIPTION_FILE[profile.engine]
    try:
        text = render(job, profile, image_ref=node_image, local_engine=local_engine)
        path.write_text(text, encoding="utf-8")
        if isinstance(engine, SlurmEngine):
            job_id = engine.submit(path)
        elif isinstance(engine, KubernetesEngine):
            job_id = engine.submit(render_job_manifest(job, profile, image_ref=node_image))
        else:
            job_id = engine.submit(path, profile.sky_cluster or job.name)
    except BaseException as exc:
        store.finish_run(record.id, "failed", None, f"not submitted: {exc}")
        raise
    store.set_backend_job(record.id, job_id)
    notices = engine_notices(job, profile, tracked=True)
    for notice in notices:
        store.add_notice(record.id, notice.code, notice.message)
    return Submission(profile.engine, profile.name, text, node_image, resources, True, record.id, job_id, str(path),
                      record.log_path, tuple(notes), tuple(notices))


def engine_notices(job: ClusterJob, profile: ClusterProfile, *, tracked: bool) -> list[Notice]:
    """What the engine cannot do of the job as a local run does it: said once, at submit, and kept on the run.
    tracked: the job was submitted and is recorded as a run (else the description is only printed)."""
    notices = []
    dropped = unmapped_mounts(job, profile) if profile.engine == "kubernetes" else []
    if dropped:
        listed = ", ".join(f"{m.source}:{m.target}" for m in dropped)
        first = dropped[0].source
        notices.append(Notice(
            "cluster-mounts-dropped",
            f"the Job does not mount {listed}: the profile {profile.name!r} maps no cluster volume for "
            f"{'it' if len(dropped) == 1 else 'them'}, and the pod cannot see this machine's folders",
            f'put the data on a PVC or a node folder and map it in the user config: [clusters.{profile.name}.volumes] '
            f'"{first}" = {{ claim = "PVC" }} (or host-path = "/node/folder")'))
    if tracked and job.artifacts_dir is not None and profile.engine not in READABLE_ARTIFACTS:
        where = "the pod's /artifacts volume" if profile.engine == "kubernetes" else "the SkyPilot node"
        notices.append(Notice(
            "metrics-file-not-read",
            f"metrics come from the job's output: $ENVBUILDER_METRICS is written on {where}, which cannot be "
            "read from here",
            "print `ENVBUILDER_METRIC {json}` lines to stdout to send metrics from the job explicitly"))
    return notices


def _cluster_args(profile: ClusterProfile, resources: Resources, node_image: str, patterns: tuple[Any, ...]) -> dict:
    """What the run store keeps to track the run later: the profile as it was, the resources, the metric patterns."""
    return {"profile": profile.model_dump(mode="json", by_alias=True), "resources": resources.to_json(),
            "node_image": node_image, "metric_patterns": [list(p) if isinstance(p, tuple) else p for p in patterns]}


def _profile(request: SubmitRequest, job: Any, settings: Any) -> ClusterProfile:
    profiles, origin = load_profiles(Path(settings.data_dir))
    defaults = getattr(job, "cluster", None)
    name = request.profile or getattr(defaults, "profile", None)
    engine = request.engine or (getattr(defaults, "to", None) if request.profile is None else None)
    profile = pick_profile(profiles, name, engine, origin)
    if defaults is not None:
        profile = with_overrides(profile, partition=defaults.partition, account=defaults.account,
                                 namespace=defaults.namespace)
    return with_overrides(profile, partition=request.partition, account=request.account, namespace=request.namespace)


def _nodes_use_local_engine(profile: ClusterProfile, engine: Any) -> bool:
    if profile.node_uses_local_engine is not None:
        return profile.node_uses_local_engine
    return isinstance(engine, SlurmEngine) and profile.runtime == "docker" and engine.nodes_are_local()


def target_flags(resources: Resources, profile: ClusterProfile, matrix: Matrix) -> TargetFlags:
    """The target the plan is resolved for: the cluster's GPU (or none), whatever this machine has."""
    if not resources.gpus or not resources.gpu_type:
        gpu = "nvidia" if resources.gpus else "none"
        return TargetFlags(os="linux", arch=profile.arch, gpu=gpu, cuda_driver=profile.cuda_driver if resources.gpus else None)
    cc = matrix.gpu_compute_capability(resources.gpu_type)
    if cc is None:
        raise UsageError("gpu-type-unknown", f"GPU type {resources.gpu_type!r} is not in compatibility.json's gpus table",
                         "use a model name such as H100, A100, L4 or T4")
    return TargetFlags(os="linux", arch=profile.arch, gpu="nvidia", cuda_driver=profile.cuda_driver,
                       compute_capability=(cc,))


def _image(request: SubmitRequest, source: str, ref: str | None, build: ClusterBuildStep | None, docker: Any,
           resources: Resources, profile: ClusterProfile, matrix: Matrix, local_engine: bool) -> tuple[ProjectImage, ImageTorch | None]:
    if request.image is None:
        if build is None:
            raise UsageError("usage", "no image to submit", "pass --image, or use envbuilder.api.submit_project to build one")
        chosen = build(source, ref, target_flags(resources, profile, matrix))
        plan = getattr(chosen.build, "plan", None)
        torch = ImageTorch(plan.torch.version, plan.torch.flavor, plan.target.arch) if plan is not None else None
        return chosen, torch
    try:
        info = docker.image_inspect(request.image) if docker is not None else None
    except DockerError:
        if local_engine:
            raise
        info = None  # no engine here (a laptop submitting a pushed image): the nodes pull it
    if info is None:
        if local_engine:
            raise DockerError("image-not-found", f"image {request.image} is not available locally",
                              "build it with `envbuilder build`, or drop --image to build it now")
        return ProjectImage(request.image), None  # the nodes pull it; its labels cannot be read from here
    labels = (info.get("Config") or {}).get("Labels") or {}
    from envbuilder.run.launch import existing_image

    chosen = existing_image(docker, request.image)
    plan = _json(labels.get(LABEL_PLAN))
    return chosen, ImageTorch.from_labels(plan, labels.get(LABEL_TORCH), labels.get(LABEL_FLAVOR))


def _node_image(ref: str, profile: ClusterProfile, docker: Any, local_engine: bool, notes: list[str], *, strict: bool) -> str:
    """What the nodes run: the local image when they use this engine, else a registry reference (by digest for
    Kubernetes). Pushing is the ship workflow's (`envbuilder build --push`); here the image must be there."""
    if local_engine and profile.engine != "kubernetes":
        return ref
    try:
        info = docker.image_inspect(ref) if docker is not None and "@sha256:" not in ref else None
    except DockerError:
        info = None
    digests = [d for d in ((info or {}).get("RepoDigests") or []) if _in_registry(d, profile.registry)]
    if "@sha256:" in ref:
        return ref
    if digests:
        return digests[0]
    if profile.engine != "kubernetes" and _has_registry_host(ref):
        return ref
    problem = (f"the {profile.name} nodes cannot use {ref}: it is not in a registry"
               + (f" ({profile.registry})" if profile.registry else ""))
    if not strict:
        notes.append(problem + "; the description names the local tag")
        return ref
    raise UsageError("cluster-needs-registry", problem,
                     "push it (docker push REGISTRY/REPO:TAG) and pass --image with the pushed name, or set "
                     "node-uses-local-engine = true in the profile when the nodes use this machine's engine")


def _in_registry(digest_ref: str, registry: str | None) -> bool:
    return registry is None or digest_ref.startswith((registry.rstrip("/") + "/", registry + "@"))


def _has_registry_host(ref: str) -> bool:
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _why_print_only(profile: ClusterProfile, dry_run: bool) -> str | None:
    if dry_run:
        return "dry run"
    if profile.engine == "kubernetes" and (not KubernetesEngine.client_installed() or KubernetesEngine(profile).kubeconfig is None):
        return ("printed, not submitted: no kubeconfig ($KUBECONFIG or ~/.kube/config)" if KubernetesEngine.client_installed()
                else "printed, not submitted: the kubernetes client is not installed (pip install 'envbuilder[kubernetes]')")
    if profile.engine == "skypilot" and not SkyPilotEngine.configured():
        if not SkyPilotEngine.installed():
            return ("printed, not submitted: SkyPilot is not installed (pipx install skypilot, then `sky check`; "
                    "or run `sky launch` on the printed task)")
        return "printed, not submitted: SkyPilot is not set up (run `sky check`, then submit again)"
    return None


def _json(text: str | None) -> Mapping[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


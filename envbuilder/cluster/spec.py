"""ClusterJob: one job as every cluster engine's renderer takes it, and the resources it asks for.

The container layout (argv, mounts, environment, user, shared memory, working directory) is the local run's,
decided by envbuilder.run.spec.run_spec, so a job runs the same on a cluster as on this machine. On top of it
come the scheduler's resources (GPUs and their type, CPUs, memory, a time limit) from the job's `resources`
table, the profile and the command line, and the one check a cluster adds: the image must have kernels for
the GPU type asked for (compatibility.json's gpus table maps the name to a compute capability; the image's
torch build says which it carries SASS or PTX for).
Pure: must not import proc, docker, the run store or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envbuilder.errors import EnvbuilderError, UsageError
from envbuilder.quantities import normalize_size, parse_size_bytes
from envbuilder.resolve.candidates import sass_fit
from envbuilder.resolve.matrix import Matrix, TorchBuild, flavor_kind
from envbuilder.resolve.plan import Target
from envbuilder.run.spec import ResolvedMount, RunSpec

DEFAULT_GRACE_S = 30.0  # between the graceful SIGTERM and the scheduler's full cancel


@dataclass(frozen=True)
class Resources:
    """What the scheduler is asked for."""

    gpus: int = 0
    gpu_type: str | None = None  # as the user wrote it ("H100"); engines map it to their own names
    cpus: int | None = None
    memory: str | None = None  # Docker size syntax, normalized ("32g")
    time_s: int | None = None
    shm_size: str = "2g"

    @property
    def memory_mib(self) -> int | None:
        return None if self.memory is None else max(1, parse_size_bytes(self.memory) // 1024**2)

    @property
    def shm_mib(self) -> int:
        return max(1, parse_size_bytes(self.shm_size) // 1024**2)

    def to_json(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "gpu_type": self.gpu_type, "cpus": self.cpus, "memory": self.memory,
                "time_s": self.time_s, "shm_size": self.shm_size}


@dataclass(frozen=True)
class ResourceRequest:
    """The command line's resource options; None keeps the job's (then the profile's) value."""

    gpus: int | None = None
    gpu_type: str | None = None
    cpus: int | None = None
    memory: str | None = None
    time_s: int | None = None


def job_resources(job: Any, request: ResourceRequest, *, profile_gpu_type: str | None, shm_size: str) -> Resources:
    """Command line over the job's `resources` table over the profile. GPUs default to the job's local
    `gpus` (a count; auto/all mean one on a cluster that has a GPU type; none means none)."""
    table = getattr(job, "resources", None)
    gpu_type = request.gpu_type or getattr(table, "gpu_type", None) or profile_gpu_type
    gpus = request.gpus if request.gpus is not None else getattr(table, "gpus", None)
    if gpus is None:
        local = getattr(job, "gpus", "auto") if job is not None else "auto"
        if isinstance(local, int):
            gpus = local
        else:
            gpus = 1 if local in ("auto", "all") and gpu_type else 0
    memory = request.memory or getattr(table, "memory", None)
    time_s = request.time_s or getattr(table, "time", None) or (int(job.timeout) if getattr(job, "timeout", None) else None)
    try:
        memory = None if memory is None else normalize_size(memory)
    except ValueError as exc:
        raise EnvbuilderError("bad-size", f"--memory {memory!r}: {exc}", "write e.g. --memory 32g") from None
    return Resources(gpus=int(gpus), gpu_type=gpu_type if gpus else None,
                     cpus=request.cpus or getattr(table, "cpus", None), memory=memory, time_s=time_s,
                     shm_size=shm_size)


# --- the GPU check ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTorch:
    """What the image's torch build is: from the plan that built it, or the labels envbuilder put on it."""

    version: str  # "2.7.1" (no local part)
    flavor: str  # "cu128", "cpu", "rocm6.3"
    arch: str = "x86_64"

    @classmethod
    def from_labels(cls, plan: Mapping[str, Any] | None, torch_label: str | None, flavor_label: str | None) -> ImageTorch | None:
        if plan and isinstance(plan.get("torch"), Mapping):
            torch = plan["torch"]
            arch = (plan.get("target") or {}).get("arch") or "x86_64"
            return cls(str(torch.get("version")), str(torch.get("flavor")), arch)
        if torch_label and flavor_label:
            return cls(torch_label.split("+")[0], flavor_label)
        return None


def check_gpu_kernels(resources: Resources, image: ImageTorch | None, matrix: Matrix) -> list[str]:
    """Refuse GPUs the image has no kernels for (UsageError `gpu-type-unsupported`); returns notes
    (PTX JIT, an image or GPU the matrix cannot vouch for)."""
    if not resources.gpus:
        return []
    if image is None:
        return ["the image carries no envbuilder labels: its GPU kernels were not checked"]
    kind = flavor_kind(image.flavor)
    gpu = resources.gpu_type
    if kind in ("cpu", "default"):
        raise UsageError("gpu-type-unsupported", f"the image's torch {image.version} is the {image.flavor} build: it has "
                         f"no GPU kernels, but the job asks for {resources.gpus} GPU(s)"
                         + (f" ({gpu})" if gpu else ""),
                         "build for the cluster's GPU (a profile's gpu-type, or --gpu-type) instead of --image, "
                         "or pass --gpus 0")
    if gpu is None:
        return [f"no GPU type given: the {image.flavor} kernels were not checked against the cluster's GPUs"]
    cc = matrix.gpu_compute_capability(gpu)
    if kind == "rocm":
        if cc is not None:
            raise UsageError("gpu-type-unsupported", f"{gpu} is an NVIDIA GPU; the image's torch is a ROCm build ({image.flavor})",
                             "build for the cluster's GPU without --image")
        return [f"{gpu}: AMD GPU names are not in the matrix; ROCm kernels not checked"]
    if cc is None:
        raise UsageError("gpu-type-unknown", f"GPU type {gpu!r} is not in compatibility.json's gpus table",
                         f"use a model name such as {', '.join(_example_names(matrix))}")
    build = torch_build(matrix, image)
    if build is None:
        return [f"torch {image.version} {image.flavor} is not in the matrix: kernels for {gpu} not checked"]
    target = Target(os="linux", arch=image.arch, gpu="nvidia", compute_capabilities=(cc,))
    ok, notes = sass_fit(build, target, jit_allowed=True, matrix=matrix)
    if not ok:
        raise UsageError("gpu-type-unsupported", f"the image has no kernels for {gpu} (sm_{cc.replace('.', '')}): "
                         f"{notes[0] if notes else 'no SASS or PTX for it'}",
                         f"build for {gpu} (drop --image; envbuilder resolves for the GPU type), or ask for a GPU "
                         f"the image has kernels for (sm {', '.join(build.sm)})")
    return notes


def torch_build(matrix: Matrix, image: ImageTorch) -> TorchBuild | None:
    release = matrix.release(image.version)
    if release is None:
        return None
    return next((b for b in release.builds if b.os == "linux" and b.arch == image.arch and b.flavor == image.flavor), None)


def _example_names(matrix: Matrix) -> list[str]:
    names = []
    for gpu in matrix.gpus:
        match = re.search(r"\\b([A-Z]+\d+[A-Z]?)\\b", gpu.pattern)
        if match and match.group(1) not in names:
            names.append(match.group(1))
    return names[:5] or ["H100", "A100"]


# --- the job ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterJob:
    """One job on a cluster: what runs, in which image, with which mounts and resources, and where its output goes."""

    run_id: str
    name: str  # a name every engine accepts: lower case, digits and '-', at most 63 characters
    image: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    mounts: tuple[ResolvedMount, ...]  # the project first, as in local runs
    artifacts_dir: Path | None
    workdir: str
    user: str
    resources: Resources
    log_path: Path
    gpu_vendor: str = "nvidia"  # which device plugin / runtime flag: nvidia or amd
    grace_s: float = DEFAULT_GRACE_S
    project: str = ""
    job: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def data_mounts(self) -> tuple[ResolvedMount, ...]:
        """The job's own mounts (datasets), without the project."""
        return self.mounts[1:]


def cluster_job(spec: RunSpec, *, run_id: str, log_path: Path, resources: Resources, gpu_vendor: str = "nvidia",
                grace_s: float = DEFAULT_GRACE_S, notes: tuple[str, ...] = ()) -> ClusterJob:
    """The local run `spec` as a cluster job: same argv, mounts, environment and user; the scheduler's resources."""
    return ClusterJob(
        run_id=run_id, name=job_name(spec.project_name, spec.job, run_id), image=spec.image, argv=spec.argv,
        env=dict(spec.env), mounts=spec.mounts, artifacts_dir=spec.artifacts_dir, workdir=spec.workdir, user=spec.user,
        resources=resources, log_path=Path(log_path), gpu_vendor=gpu_vendor, grace_s=grace_s, project=spec.project_name,
        job=spec.job, notes=notes,
    )


def job_name(project: str, job: str | None, run_id: str) -> str:
    """`eb-PROJECT-JOB-SUFFIX`: an RFC 1123 label (Kubernetes), a valid Slurm job and SkyPilot cluster name."""
    suffix = re.sub(r"[^a-z0-9-]+", "-", run_id.lower().removeprefix("r-"))  # the run id: unique, and sorts
    stem = "-".join(part for part in ("eb", project, job or "cmd") if part)
    stem = re.sub(r"[^a-z0-9-]+", "-", stem.lower()).strip("-")
    stem = re.sub(r"-{2,}", "-", stem)[: 63 - len(suffix) - 1].rstrip("-")
    return f"{stem}-{suffix}"


# --- what an engine says of a job ---------------------------------------------------------------------------


@dataclass(frozen=True)
class JobState:
    """A job's state as the engine reports it, in the run store's words.

    status: queued | running | completed | failed | stopped, or None when the engine no longer knows the job."""

    status: str | None
    exit_code: int | None = None
    detail: str | None = None  # the engine's own state and reason, for the record's error line

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "stopped")

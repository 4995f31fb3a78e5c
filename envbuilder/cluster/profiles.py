"""Named cluster profiles: `[clusters.NAME]` tables in the user config, validated into ClusterProfile values.

The user config is the first of $ENVBUILDER_CONFIG, DATA_DIR/config.toml and ~/.config/envbuilder/config.toml
(XDG_CONFIG_HOME honoured) that exists. A profile says which engine runs the job and how the cluster is laid
out (partition, account, namespace, registry, container runtime, whether its nodes use this machine's Docker
engine) and, since the user's machine may have no GPU, what GPU the cluster has: the plan is resolved for it.
Pure: reads a file, runs nothing. Must not import proc, docker, the run store or the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from envbuilder.errors import UsageError
from envbuilder.project.jobs import ClusterEngine, ConfigValue
from envbuilder.settings import user_config_paths
from envbuilder.tomlparser import tomllib

ENGINES: tuple[str, ...] = ("slurm", "kubernetes", "skypilot")
Runtime = Literal["docker", "podman", "apptainer", "singularity", "enroot"]
ArtifactsVolume = Literal["pvc", "host-path", "none"]


class ClusterVolume(ConfigValue):
    """Where a folder the job mounts from this machine is on the cluster (Kubernetes): a PVC or a node folder."""

    claim: str | None = Field(None, min_length=1, description="PersistentVolumeClaim that holds the folder.")
    host_path: str | None = Field(None, min_length=1, description="The folder on the nodes (hostPath).")
    read_only: StrictBool | None = Field(None, description="Mount it read-only whatever the job's mount says.")

    @model_validator(mode="after")
    def _one_source(self) -> ClusterVolume:
        if (self.claim is None) == (self.host_path is None):
            raise ValueError("give exactly one of claim (a PVC) or host-path (a node folder)")
        if self.host_path is not None and not self.host_path.startswith("/"):
            raise ValueError(f"host-path {self.host_path!r} must be absolute")
        return self


class ClusterProfile(ConfigValue):
    """One cluster: the engine that runs jobs there, its layout, and the GPU its nodes have."""

    name: str = Field("default", description="The profile's name (the key under [clusters]).")
    engine: ClusterEngine = Field("slurm", description="slurm, kubernetes or skypilot.")
    # Slurm
    partition: str | None = Field(None, min_length=1, description="Slurm partition (sbatch --partition).")
    account: str | None = Field(None, min_length=1, description="Slurm account (sbatch --account).")
    runtime: Runtime = Field("docker", description="How a Slurm node runs the image: docker, podman, "
                             "apptainer/singularity, or enroot (pyxis: srun --container-image).")
    gpu_flag: Literal["gres", "gpus"] = Field("gres", description="Ask Slurm for GPUs with --gres=gpu[:TYPE]:N "
                                              "or --gpus=[TYPE:]N.")
    gpu_names: dict[str, str] = Field(default_factory=dict, description="GPU type -> the name this cluster uses "
                                      "for it (Slurm gres type, Kubernetes product label, SkyPilot accelerator).")
    sbatch_args: tuple[str, ...] = Field((), description="Extra sbatch options, e.g. ['--qos=high'].")
    # Kubernetes
    namespace: str = Field("default", min_length=1, description="Kubernetes namespace.")
    context: str | None = Field(None, description="kubeconfig context (default: the current one).")
    gpu_product_label: str | None = Field(None, description="Node label that names the GPU product, e.g. "
                                          "nvidia.com/gpu.product (GPU feature discovery); the Job selects on it.")
    artifacts: ArtifactsVolume = Field("none", description="Where the Job's /artifacts lives: a PVC, a hostPath, "
                                       "or an emptyDir (none: lost with the pod).")
    artifacts_claim: str | None = Field(None, description="PersistentVolumeClaim for /artifacts (artifacts = pvc).")
    artifacts_host_path: str | None = Field(None, description="Node folder for /artifacts (artifacts = host-path).")
    volumes: dict[str, ClusterVolume] = Field(default_factory=dict, description="The job's data mounts on the "
                                              "cluster: a folder of this machine -> {claim = PVC} or {host-path = "
                                              "node folder}; a mount of that folder or of one under it uses it.")
    image_pull_secret: str | None = Field(None, description="Secret the kubelet pulls the image with.")
    backoff_limit: int = Field(0, ge=0, description="Retries of a failed pod (training jobs checkpoint: default 0).")
    ttl_after_finished_s: int = Field(86400, ge=0, description="Seconds a finished Job is kept for its logs.")
    # SkyPilot
    cloud: str | None = Field(None, description="SkyPilot cloud (aws, gcp, kubernetes...); default: any enabled.")
    region: str | None = Field(None, description="SkyPilot region.")
    sky_cluster: str | None = Field(None, description="Launch onto this SkyPilot cluster (default: one per run).")
    # Every engine
    registry: str | None = Field(None, description="Registry the nodes pull from (REGISTRY/REPO).")
    node_uses_local_engine: StrictBool | None = Field(None, description="The nodes run this machine's Docker "
                                                      "engine (a single-node cluster): the local image is used "
                                                      "and no registry is needed. Default: Slurm asks sinfo.")
    gpu_type: str | None = Field(None, description="The GPU the cluster's nodes have (e.g. H100): the plan is "
                                 "resolved for it, and jobs ask for it unless they say otherwise.")
    cuda_driver: str | None = Field(None, description="The nodes' NVIDIA driver version, for the plan.")
    arch: Literal["x86_64", "aarch64"] = Field("x86_64", description="The nodes' CPU architecture.")

    @field_validator("volumes")
    @classmethod
    def _absolute_folders(cls, value: dict[str, ClusterVolume]) -> dict[str, ClusterVolume]:
        for folder in value:
            if not folder.startswith(("/", "~")):
                raise ValueError(f"{folder!r} must be an absolute folder of this machine (the mount's source)")
        return value

    @field_validator("sbatch_args")
    @classmethod
    def _options_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for arg in value:
            if not arg.startswith("-") or "\n" in arg:
                raise ValueError(f"{arg!r} is not an sbatch option (each entry is one --option=value)")
        return value


def config_paths(data_dir: Path, environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Where the user config may be, first match wins (envbuilder.settings owns the list)."""
    return user_config_paths(Path(data_dir), environ)


def load_profiles(data_dir: Path, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, ClusterProfile], Path | None]:
    """({name: profile}, the file they came from); ({}, None) when there is no user config."""
    for path in config_paths(data_dir, environ):
        if path.is_file():
            try:
                raw = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
                raise UsageError("cluster-config-invalid", f"{path} cannot be read as TOML: {exc}",
                                 "fix the file (it holds [clusters.NAME] tables)") from None
            return parse_profiles(raw.get("clusters", {}), origin=str(path)), path
    return {}, None


def parse_profiles(table: Any, *, origin: str = "config") -> dict[str, ClusterProfile]:
    """The [clusters] table -> {name: profile}; every problem of every profile in one error."""
    if not isinstance(table, dict):
        raise UsageError("cluster-config-invalid", f"{origin}: [clusters] must be a table of [clusters.NAME] tables",
                         "write e.g. [clusters.lab] with engine = \"slurm\"")
    profiles: dict[str, ClusterProfile] = {}
    problems: list[str] = []
    for name, values in table.items():
        if not isinstance(values, dict):
            problems.append(f"clusters.{name}: must be a table")
            continue
        try:
            profiles[name] = ClusterProfile.model_validate({**values, "name": name})
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"])
                problems.append(f"clusters.{name}.{where}: {str(error['msg']).removeprefix('Value error, ')}")
    if problems:
        raise UsageError("cluster-config-invalid", f"{origin}: " + "; ".join(problems),
                         "fix these keys; docs/clusters.md lists every profile key")
    return profiles


def pick_profile(profiles: Mapping[str, ClusterProfile], name: str | None, engine: str | None,
                 origin: Path | None = None) -> ClusterProfile:
    """The named profile (its engine must agree with --to), else a default profile for the engine."""
    if name is not None:
        if name not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            where = str(origin) if origin else "~/.config/envbuilder/config.toml"
            raise UsageError("cluster-profile-not-found", f"no cluster profile {name!r} (profiles: {known})",
                             f"add [clusters.{name}] to {where}")
        profile = profiles[name]
        if engine is not None and engine != profile.engine:
            raise UsageError("cluster-engine-mismatch", f"profile {name!r} is a {profile.engine} cluster, not {engine}",
                             f"drop --to, or pass --to {profile.engine}")
        return profile
    if engine is None:
        raise UsageError("cluster-engine-missing", "no cluster engine given",
                         "pass --to slurm|kubernetes|skypilot, or --profile NAME")
    return ClusterProfile(name=f"default-{engine}", engine=engine)


def with_overrides(profile: ClusterProfile, **values: Any) -> ClusterProfile:
    """The profile with the non-None values replacing its own (job defaults, then the command line)."""
    changes = {key: value for key, value in values.items() if value is not None}
    return profile.model_copy(update=changes) if changes else profile

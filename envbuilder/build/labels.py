"""The labels an image gets at build time, beyond those its Dockerfile writes, and reading them back.

OCI provenance (`org.opencontainers.image.source`, `revision`, `created`) and the resolved target (flavour,
CUDA, the compute capabilities the torch build has kernels for, from compatibility.json) are given as
`--label` at build time: they describe a build without being part of the Dockerfile text, so neither the
build key nor BuildKit's layer cache changes with the clock. `image_fit` reads an image's labels back and
says whether it runs on a host (`envbuilder image inspect`), with the resolver's own hardware rule.
A source URL never carries credentials (redacted). Must not import docker or the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from envbuilder.imagelayout import (
    LABEL_CUDA,
    LABEL_FLAVOR,
    LABEL_GFX,
    LABEL_PLAN,
    LABEL_PLAN_HASH,
    LABEL_PROJECT,
    LABEL_PTX,
    LABEL_PYTHON,
    LABEL_ROCM,
    LABEL_SM,
    LABEL_TARGET,
    LABEL_TORCH,
)
from envbuilder.redact import redact_url
from envbuilder.resolve.matrix import Matrix, TorchBuild, flavor_kind
from envbuilder.resolve.plan import Plan, Target

OCI_SOURCE = "org.opencontainers.image.source"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_CREATED = "org.opencontainers.image.created"


def provenance_labels(source: str | None, revision: str | None, now: datetime | None = None) -> dict[str, str]:
    """org.opencontainers.image.{created,source,revision}; the source URL with its credentials removed."""
    labels = {OCI_CREATED: (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if source:
        labels[OCI_SOURCE] = redact_url(source)
    if revision:
        labels[OCI_REVISION] = revision
    return labels


def torch_build(matrix: Matrix, version: str, flavor: str, os_name: str, arch: str) -> TorchBuild | None:
    """The matrix row of a torch build (its kernels), or None when the matrix does not list it."""
    release = matrix.release(version.split("+", 1)[0])
    if release is None:
        return None
    return next((b for b in release.builds if (b.flavor, b.os, b.arch) == (flavor, os_name, arch)), None)


def target_labels(plan: Plan, matrix: Matrix) -> dict[str, str]:
    """The resolved target: OS/arch and GPU vendor, CUDA or ROCm, and the kernels the torch build carries."""
    t = plan.target
    labels = {LABEL_TARGET: f"{t.os}/{t.arch} {t.gpu}"}
    if plan.torch.cuda:
        labels[LABEL_CUDA] = plan.torch.cuda
    if plan.torch.rocm:
        labels[LABEL_ROCM] = plan.torch.rocm
    build = torch_build(matrix, plan.torch.version, plan.torch.flavor, t.os, t.arch)
    if build is not None and build.sm:
        labels[LABEL_SM] = ",".join(build.sm)
    if build is not None and build.ptx:
        labels[LABEL_PTX] = build.ptx
    if build is not None and flavor_kind(build.flavor) == "rocm":
        labels[LABEL_GFX] = ",".join(matrix.rocm_gfx(build))
    return labels


def build_labels(plan: Plan, project_dir: Path, matrix: Matrix) -> dict[str, str]:
    """Every label a build is given beyond its Dockerfile's: OCI provenance (the git URL and commit the plan
    records, else the local checkout's) and the resolved target."""
    if plan.project and plan.project.git_url:
        source, revision = plan.project.git_url, plan.project.commit
    else:
        source, revision = local_provenance(project_dir)
    return {**provenance_labels(source, revision), **target_labels(plan, matrix)}


def local_provenance(project_dir: Path) -> tuple[str | None, str | None]:
    """(origin URL, HEAD commit) of a local git checkout, or Nones: what `source` and `revision` say."""
    from envbuilder.proc import run_command

    if not (Path(project_dir) / ".git").exists():
        return None, None
    head = run_command(["git", "-C", str(project_dir), "rev-parse", "HEAD"], timeout=10)
    origin = run_command(["git", "-C", str(project_dir), "config", "--get", "remote.origin.url"], timeout=10)
    return (origin.stdout.strip() or None if origin.ok else None), (head.stdout.strip() or None if head.ok else None)


@dataclass(frozen=True)
class ImageFit:
    """What an image's labels say, and whether it runs on a host's GPU and driver."""

    ref: str
    image_id: str
    built_by_envbuilder: bool
    labels: Mapping[str, str] = field(default_factory=dict)  # the ones inspect shows
    fits: bool | None = None  # None: not an envbuilder image, nothing to judge
    why: str = ""
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"image": self.ref, "image_id": self.image_id, "envbuilder": self.built_by_envbuilder,
                "labels": dict(self.labels), "fits": self.fits, "why": self.why, "warnings": list(self.warnings)}


SHOWN = (LABEL_PROJECT, LABEL_TORCH, LABEL_FLAVOR, LABEL_PYTHON, LABEL_PLAN_HASH, LABEL_TARGET, LABEL_CUDA, LABEL_ROCM,
         LABEL_SM, LABEL_PTX, LABEL_GFX, OCI_SOURCE, OCI_REVISION, OCI_CREATED)


def image_fit(ref: str, info: Mapping, host_target: Target, matrix: Matrix) -> ImageFit:
    """Whether the image (its inspect dict) runs on host_target, by the resolver's hardware rule (driver floors,
    SASS/PTX for the GPUs, ROCm gfx lists). A CPU image fits any host of its platform (its GPU goes unused)."""
    labels = (info.get("Config") or {}).get("Labels") or {}
    shown = {k: labels[k] for k in SHOWN if labels.get(k)}
    if not labels.get(LABEL_TORCH):
        return ImageFit(ref, info.get("Id", ""), False, shown, None, "no envbuilder labels: not an envbuilder image")
    flavor = labels.get(LABEL_FLAVOR, "")
    os_name, arch = _platform(labels, info)
    if (os_name, arch) != (host_target.os, host_target.arch):
        return ImageFit(ref, info["Id"], True, shown, False,
                        f"the image is for {os_name}/{arch}; this host is {host_target.os}/{host_target.arch}")
    if flavor_kind(flavor) in ("cpu", "default"):
        note = () if host_target.gpu in ("none", "apple") else (f"a {flavor} build: it runs on the CPU, the "
                                                                 f"host's {host_target.gpu} GPU goes unused",)
        return ImageFit(ref, info["Id"], True, shown, True, f"{flavor} build on {os_name}/{arch}", note)
    build = torch_build(matrix, labels[LABEL_TORCH], flavor, os_name, arch)
    if build is None:
        return ImageFit(ref, info["Id"], True, shown, None,
                        f"torch {labels[LABEL_TORCH]} ({flavor}) is not in this compatibility matrix: "
                        "`envbuilder compat update`, then inspect again")
    from envbuilder.resolve.candidates import hardware_fit

    fit = hardware_fit(build, host_target, matrix, "auto")
    warnings = tuple(w.message for w in fit.warnings)
    if not fit.ok:
        return ImageFit(ref, info["Id"], True, shown, False, fit.why_not, warnings)
    how = " under CUDA minor-version compatibility" if fit.mode == "minor" else ""
    return ImageFit(ref, info["Id"], True, shown, True, f"{flavor} kernels run on this host's GPU and driver{how}",
                    warnings)


def _platform(labels: Mapping[str, str], info: Mapping) -> tuple[str, str]:
    """(os, arch) the image was resolved for: its target label, else its plan, else the image's own platform."""
    if labels.get(LABEL_TARGET):
        return tuple(labels[LABEL_TARGET].split(" ", 1)[0].split("/", 1))  # type: ignore[return-value]
    try:
        target = json.loads(labels.get(LABEL_PLAN, "{}")).get("target") or {}
    except ValueError:
        target = {}
    if target.get("os") and target.get("arch"):
        return target["os"], target["arch"]
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(info.get("Architecture", ""), info.get("Architecture", ""))
    return info.get("Os", "linux"), arch


__all__ = ["ImageFit", "image_fit", "local_provenance", "provenance_labels", "target_labels", "torch_build"]

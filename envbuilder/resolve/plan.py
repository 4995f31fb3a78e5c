"""What we resolve for (Target), what the user asked for (ResolveRequest) and what we decided (Plan).

These are the values the resolver produces and the renderers and builders consume. Plans are immutable;
`plan_digest` fingerprints one so that renders and builds are content-addressed.
Must not import docker, subprocess helpers or the CLI.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field

from envbuilder.host.types import ArchName, GpuVendor, OsName
from envbuilder.notices import Notice
from envbuilder.project.spec import IndexDecl, ProjectInstall, ProjectSource
from envbuilder.values import Value

PlanStatus = Literal["ok", "minor-version-compat", "potential-incompatibility", "cpu-fallback"]


class Target(Value):
    """The platform a plan is for: detected from the host, declared with flags, or both (flags win)."""

    os: OsName
    arch: ArchName
    gpu: GpuVendor = "none"
    cuda_driver: str | None = None  # NVIDIA driver version, "570.86.10"
    compute_capabilities: tuple[str, ...] = ()  # every GPU's, e.g. ("9.0",); the plan must serve all
    gpu_archs: tuple[str, ...] = ()  # AMD gfx targets, e.g. ("gfx942",)
    gpu_names: tuple[str, ...] = ()
    source: Literal["detected", "declared", "mixed"] = "declared"
    declared: tuple[str, ...] = ()  # the fields the user's flags set ("gpu", "cuda_driver"...): an explicit --gpu none is a choice


class TargetFlags(Value):
    """Target flags as the user typed them; any given one replaces detection for that field."""

    os: OsName | None = None
    arch: ArchName | None = None
    gpu: GpuVendor | None = None
    cuda_driver: str | None = None
    compute_capability: tuple[str, ...] = ()
    gpu_arch: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not any((self.os, self.arch, self.gpu, self.cuda_driver, self.compute_capability, self.gpu_arch))


class ResolveRequest(Value):
    """What the user asked of the resolver beyond the project's own constraints."""

    python: str | None = None  # "3.11" pin
    extras: tuple[str, ...] = ()
    # auto: CUDA minor-version compatibility where the wheel carries SASS for every GPU (no PTX JIT needed), else
    # the toolkit's own driver; strict: always the toolkit's own driver; minor: minor-version compatibility allowed.
    cuda_compat: Literal["auto", "strict", "minor"] = "auto"
    flavor: str | None = None  # force a flavour ("cpu", "cu128"); None: auto
    with_onnxruntime: bool | None = None  # None: only when the project asks for onnxruntime
    # --with / --with-requirements: PEP 508 strings added to the project's own requirements (like `uv run --with`),
    # so they resolve, lock and key the image with them.
    with_packages: tuple[str, ...] = ()
    # --offline: resolve from the matrix alone, asking no index whether the project's other dependencies install.
    # It changes how the plan was checked, not what it installs, so it stays out of the plan's JSON and digest.
    offline: bool = Field(False, exclude=True)


class TorchChoice(Value):
    version: str  # "2.7.1"
    flavor: str  # "cu118", "rocm6.3", "cpu", "default"
    local: str  # "2.7.1+cu118" (the version string pip sees; plain version for "default")
    index_url: str
    cuda: str | None = None  # "11.8"
    rocm: str | None = None  # "6.3"
    url: str | None = None  # the wheel the project names by URL (torch @ https://...whl); install that file


class PackageChoice(Value):
    name: str
    version: str  # exact version, local part included where the index uses one
    index_url: str | None = None  # None: the default index

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


class Plan(Value):
    status: PlanStatus
    python: str  # "3.11"
    torch: TorchChoice
    companions: dict[str, PackageChoice] = {}  # torchvision, torchaudio, onnxruntime | onnxruntime-gpu
    dependencies: tuple[str, ...] = ()  # project requirements for the target, torch family removed, markers evaluated
    indexes: tuple[IndexDecl, ...] = ()  # project indexes that still apply (not the torch one)
    system_packages: tuple[str, ...] = ()
    project_name: str | None = None
    project: ProjectSource | None = None
    import_roots: tuple[str, ...] = (".",)
    target: Target
    request: ResolveRequest = ResolveRequest()
    reasons: tuple[str, ...] = ()
    warnings: tuple[Notice, ...] = ()  # each with a code (envbuilder.notices); the CLI prints the message
    matrix_updated: str | None = None
    # Why the project's build needs torch installed first (a setup.py CUDA/C++ extension, torch in
    # [build-system] requires); None: an ordinary build. The build then installs the project without isolation.
    build_requires_torch: str | None = None
    # How the project itself is installed in the image (editable, no dependencies); None: not a package
    # (no [build-system], no setup.py), its files importable through PYTHONPATH only.
    install: ProjectInstall | None = None

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


def plan_digest(plan: Plan, *extra: str) -> str:
    """A stable 16-hex fingerprint of what a plan installs (reasons and warnings excluded) plus extra inputs."""
    # How a choice was reached (the compat rule, which target fields were typed) is not what gets installed.
    payload = plan.model_dump(mode="json", exclude={"reasons": True, "warnings": True, "status": True, "matrix_updated": True,
                                                    "project": True, "target": {"declared"}, "request": {"cuda_compat"}})
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    for item in extra:
        h.update(b"\0" + item.encode())
    return h.hexdigest()[:16]

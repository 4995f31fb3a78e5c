"""The target a plan is for: detection combined with declared flags (target_for).

Pure: host facts arrive as a HostInfo value (envbuilder.host.types); this module never probes. Must not
import subprocess, urllib.request, docker, envbuilder.host.probes or the CLI.
"""

from __future__ import annotations

import re

from packaging.version import Version

from envbuilder.errors import UsageError
from envbuilder.host.types import HostInfo
from envbuilder.resolve.matrix import Matrix
from envbuilder.resolve.plan import Target, TargetFlags

_DRIVER_RE = re.compile(r"^\d+(\.\d+){0,3}$")
_GFX_RE = re.compile(r"^gfx[0-9a-f]{3,4}$")
_CC_RE = re.compile(r"^\d{1,2}\.\d$")


def target_for(host: HostInfo | None, flags: TargetFlags, matrix: Matrix) -> Target:
    """Combine detection with declared flags; any flag replaces what detection found for that field.

    A declared OS other than the host's, or a declared --gpu, means the host's GPU facts do not apply.
    """
    _check_flags(flags, matrix)
    os_name = flags.os or (host.os if host else "linux")
    arch = _normal_arch(os_name, flags.arch or (host.arch if host else "x86_64"))
    host_applies = host is not None and (flags.os in (None, host.os)) and flags.gpu is None and _normal_arch(os_name, host.arch) == arch
    declared_gpu = flags.gpu
    if declared_gpu is None and (flags.cuda_driver or flags.compute_capability):
        declared_gpu = "nvidia"
    if declared_gpu is None and flags.gpu_arch:
        declared_gpu = "amd"
    gpu = declared_gpu or (host.gpu_vendor if host_applies and host else "none")
    if os_name == "macos" and gpu not in ("none", "apple"):
        raise UsageError("target-invalid", f"--gpu {gpu} is not available on macOS", "use --gpu apple or --gpu none")
    if gpu == "apple" and os_name != "macos":
        raise UsageError("target-invalid", "--gpu apple needs --target-os macos", "add --target-os macos --target-arch arm64")

    host_gpus = [g for g in (host.gpus if host_applies and host else ()) if g.vendor == gpu]
    cuda_driver = flags.cuda_driver or (host.nvidia_driver if host_applies and host and gpu == "nvidia" else None)
    ccs: list[str] = list(flags.compute_capability)
    names: list[str] = []
    if not ccs and gpu == "nvidia":
        for g in host_gpus:
            cc = g.compute_capability or matrix.gpu_compute_capability(g.name)
            if cc:
                ccs.append(cc)
            names.append(g.name)
    gfx = list(flags.gpu_arch) or ([g.gfx_arch for g in host_gpus if g.gfx_arch] if gpu == "amd" else [])
    if gpu == "amd" and not names:
        names = [g.name for g in host_gpus]
    if gpu == "apple" and not names:
        names = [g.name for g in host_gpus] or ["Apple Silicon"]

    declared_any = not flags.empty
    source = "declared" if host is None or not host_applies else ("mixed" if declared_any else "detected")
    declared = tuple(name for name in ("os", "arch", "gpu", "cuda_driver", "compute_capability", "gpu_arch") if getattr(flags, name))
    return Target(
        os=os_name,
        arch=arch,
        gpu=gpu,
        cuda_driver=cuda_driver if gpu == "nvidia" else None,
        compute_capabilities=tuple(sorted(set(ccs), key=Version)),
        gpu_archs=tuple(sorted(set(gfx))),
        gpu_names=tuple(names),
        source=source,
        declared=declared,
    )

def _normal_arch(os_name: str, arch: str) -> str:
    if os_name == "macos" and arch in ("aarch64", "arm64"):
        return "arm64"
    if os_name != "macos" and arch == "arm64":
        return "aarch64"
    return arch

def _check_flags(flags: TargetFlags, matrix: Matrix) -> None:
    if flags.cuda_driver and not _DRIVER_RE.match(flags.cuda_driver):
        raise UsageError("target-invalid", f"--cuda-driver {flags.cuda_driver!r} is not a driver version",
                              "give the NVIDIA driver version nvidia-smi shows, e.g. 570.86.10")
    known = sorted({g.compute_capability for g in matrix.gpus} | {sm for r in matrix.torch for b in r.builds for sm in b.sm}, key=Version)
    for cc in flags.compute_capability:
        if not _CC_RE.match(cc) or cc not in known:
            raise UsageError("unknown-compute-capability", f"--compute-capability {cc} is not a known NVIDIA compute capability",
                                  f"use one of {', '.join(known)} (see NVIDIA's CUDA GPUs page)")
    for gfx in flags.gpu_arch:
        if not _GFX_RE.match(gfx):
            raise UsageError("target-invalid", f"--gpu-arch {gfx!r} is not an AMD gfx architecture",
                                  "give the gfx name rocminfo shows, e.g. gfx942 or gfx1100")

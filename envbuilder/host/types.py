"""What the host has, as pure values: HostInfo, GpuInfo and the OS/arch/vendor names.

Owns only these values; they are what the resolver's Target is built from, so this module must stay
import-light. Must not import subprocess (nor envbuilder.proc), the parsers, the probes, docker or the CLI.
"""

from __future__ import annotations

from typing import Literal

from envbuilder.notices import Notice
from envbuilder.values import Value

OsName = Literal["linux", "windows", "macos"]
ArchName = Literal["x86_64", "aarch64", "arm64"]
GpuVendor = Literal["none", "nvidia", "amd", "apple"]


class GpuInfo(Value):
    index: int
    vendor: Literal["nvidia", "amd", "apple"]
    name: str
    compute_capability: str | None = None  # NVIDIA, "9.0"
    memory_mib: int | None = None
    gfx_arch: str | None = None  # AMD, "gfx942"
    uuid: str | None = None


class HostInfo(Value):
    """What the host has. Never edited by later stages, never mixed with what the user asked for."""

    os: OsName
    arch: ArchName
    wsl: bool = False
    os_release: str | None = None  # e.g. "Debian GNU/Linux 12 (bookworm)", "macOS 15.1", "Windows 11"
    gpu_vendor: GpuVendor = "none"
    gpus: tuple[GpuInfo, ...] = ()
    nvidia_driver: str | None = None  # "570.124.06"
    cuda_driver_version: str | None = None  # the CUDA version the driver reports ("12.8"), from nvidia-smi
    rocm_version: str | None = None  # "6.3.1"
    findings: tuple[Notice, ...] = ()  # probe problems and notes, each with a code (envbuilder.notices)


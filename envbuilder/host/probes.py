"""Detect the host: OS, CPU architecture, WSL, and the accelerator (NVIDIA, AMD ROCm, Apple Silicon, none).

Owns the thin probes (run a program with a timeout, return text) and detect_host(), which composes them
with the pure parsers in envbuilder.host.parsers into a HostInfo (envbuilder.host.types). Probes never
raise for a missing, hanging or garbage-printing program: they add a finding instead. Every file is read
under `root` and every program is looked up on `path`, so tests point both at fakes instead of patching
this module. Must not import docker, the resolver or the CLI; nothing pure may import this module.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from envbuilder.host.parsers import (NVIDIA_QUERY_FIELDS, NVIDIA_QUERY_FIELDS_NO_CC, RocmAgents, VERSION_RE, is_wsl,
                                     normalise_arch, normalise_os, parse_nvidia_proc_version, parse_nvidia_query,
                                     parse_nvidia_smi_header, parse_os_release, parse_rocm_agent_enumerator,
                                     parse_rocm_smi_product_names, parse_rocm_version, parse_rocminfo)
from envbuilder.host.types import GpuInfo, GpuVendor, HostInfo
from envbuilder.notices import Notice
from envbuilder.proc import CommandResult, run_command

# ---------------------------------------------------------------------------------------------------
# Probes: run one program (with a timeout) or read one file, and say in words what went wrong.
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    """Where probes look: the PATH to search, the root to read files under, and how long to wait."""

    path: str | None
    root: Path
    timeout: float

    def file(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/\\")

    def read(self, absolute: str) -> str | None:
        try:
            return self.file(absolute).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def which(self, program: str, *extra_dirs: str) -> str | None:
        found = shutil.which(program, path=self.path)
        for directory in extra_dirs:
            if found:
                break
            candidate = self.file(directory)
            if candidate.is_dir():
                found = shutil.which(program, path=str(candidate))
        return found

    def run(self, executable: str, *args: str) -> CommandResult:
        # LC_ALL=C keeps number formats and messages in the shapes the parsers expect
        return run_command([executable, *args], timeout=self.timeout, env={"LC_ALL": "C"})


def _seconds(timeout: float) -> str:
    return f"{timeout:g} s"


def _first_line(text: str, limit: int = 120) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _failure(program: str, result: CommandResult, timeout: float, consequence: str) -> str:
    """One sentence for a program that timed out, could not start, or exited non-zero."""
    if result.timed_out:
        return f"{program} timed out after {_seconds(timeout)}; the driver may be hung; {consequence}"
    if result.missing:
        return f"{program} could not be started ({_first_line(result.stderr) or 'not executable'}); {consequence}"
    said = _first_line(result.stdout + "\n" + result.stderr) or "no output"
    return f"{program} exited with status {result.returncode} ({said}); {consequence}"


@dataclass(frozen=True)
class _Found:
    """What the accelerator probes found, gathered before it becomes a HostInfo."""

    gpus: tuple[GpuInfo, ...] = ()
    vendor: GpuVendor = "none"
    nvidia_driver: str | None = None
    cuda_driver_version: str | None = None
    rocm_version: str | None = None


def _probe_nvidia(probe: _Probe, *, wsl: bool, findings: list[Notice]) -> _Found:
    """NVIDIA GPUs, driver version and the driver's CUDA version, from nvidia-smi and /proc/driver/nvidia."""
    proc_text = probe.read("/proc/driver/nvidia/version")
    kernel_driver = parse_nvidia_proc_version(proc_text) if proc_text else None
    # WSL ships nvidia-smi with the Windows driver in /usr/lib/wsl/lib, which is often not on PATH
    exe = probe.which("nvidia-smi", *(("/usr/lib/wsl/lib",) if wsl else ()))
    skipped = "NVIDIA GPU detection skipped"

    def without_smi(problem: str | None) -> _Found:
        if kernel_driver is None:
            if problem:
                findings.append(Notice("probe-failed", problem))
            return _Found()
        findings.append(
            Notice("probe-failed", (problem + ". " if problem else "nvidia-smi was not found. ")
            + f"The NVIDIA kernel driver {kernel_driver} is loaded (/proc/driver/nvidia/version); "
            "GPU models and compute capability are unknown")
        )
        return _Found(vendor="nvidia", nvidia_driver=kernel_driver)

    if exe is None:
        return without_smi(None)

    fields = NVIDIA_QUERY_FIELDS
    result = probe.run(exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits")
    output = result.stdout + "\n" + result.stderr
    if not result.ok and not result.timed_out and "is not a valid field" in output:
        findings.append(Notice("nvidia-smi-too-old", "this nvidia-smi is too old to report compute capability (compute_cap); it is left unknown"))
        fields = NVIDIA_QUERY_FIELDS_NO_CC
        result = probe.run(exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits")
        output = result.stdout + "\n" + result.stderr

    if result.timed_out:
        return without_smi(_failure("nvidia-smi", result, probe.timeout, "GPU detection skipped"))
    if "No devices were found" in output:
        findings.append(Notice("no-nvidia-gpus", "nvidia-smi found no NVIDIA GPUs"))
        return _Found(nvidia_driver=kernel_driver)
    if "couldn't communicate with the NVIDIA driver" in output or "could not communicate with the NVIDIA driver" in output:
        return without_smi(
            "nvidia-smi could not communicate with the NVIDIA driver (is it installed and loaded?); " + skipped
        )
    if "version mismatch" in output.lower():
        return without_smi(
            "nvidia-smi reports a driver/library version mismatch (a driver update without a reboot?); " + skipped
        )
    if not result.ok:
        return without_smi(_failure("nvidia-smi", result, probe.timeout, skipped))

    query = parse_nvidia_query(result.stdout, fields)
    if not query.gpus:
        said = _first_line(result.stdout) or "nothing"
        return without_smi(f"nvidia-smi printed output envbuilder could not read ({said!r}); {skipped}")
    mig_lines = [ln for ln in query.ignored_lines if ln.upper().startswith("MIG")]
    if mig_lines:
        findings.append(
            Notice("probe-lines-ignored", f"nvidia-smi listed {len(mig_lines)} MIG device(s); they share their parent GPU's compute capability")
        )
    if len(query.ignored_lines) > len(mig_lines):
        findings.append(Notice("probe-lines-ignored", f"nvidia-smi printed {len(query.ignored_lines) - len(mig_lines)} line(s) that are not GPU rows; ignored"))
    missing_cc = [g.index for g in query.gpus if g.compute_capability is None]
    if missing_cc and fields is NVIDIA_QUERY_FIELDS:
        findings.append(Notice("compute-capability-unknown", f"nvidia-smi gave no compute capability for GPU {', '.join(map(str, missing_cc))}; left unknown"))

    header = probe.run(exe)
    header_driver, cuda = parse_nvidia_smi_header(header.stdout) if header.ok else (None, None)
    if not header.ok:
        findings.append(Notice("cuda-version-unknown", _failure("nvidia-smi", header, probe.timeout, "the driver's CUDA version is unknown")))
    elif cuda is None:
        findings.append(Notice("cuda-version-unknown", "nvidia-smi did not report the driver's CUDA version; it is unknown"))
    return _Found(
        gpus=query.gpus,
        vendor="nvidia",
        nvidia_driver=query.driver or header_driver or kernel_driver,
        cuda_driver_version=cuda,
    )


def _rocm_dirs(env: Mapping[str, str]) -> tuple[str, ...]:
    dirs = [env["ROCM_PATH"]] if env.get("ROCM_PATH") else []
    return (*dirs, "/opt/rocm")


def _probe_rocm_version(probe: _Probe, env: Mapping[str, str]) -> str | None:
    """The installed ROCm release from <ROCM_PATH or /opt/rocm>/.info/version, or the /opt/rocm-X.Y.Z link.

    rocminfo's "Runtime Version" is the HSA runtime's own number (1.14, 1.15), not the ROCm release, so
    it is not used here.
    """
    for directory in _rocm_dirs(env):
        text = probe.read(f"{directory}/.info/version")
        version = parse_rocm_version(text) if text else None
        if version:
            return version
        try:
            target = probe.file(directory).resolve(strict=True).name
        except OSError:
            continue
        match = re.fullmatch(r"rocm-(\d+\.\d+(?:\.\d+)?)", target)
        if match:
            return match.group(1)
    return None


def _probe_amd(probe: _Probe, env: Mapping[str, str], findings: list[Notice]) -> _Found:
    """AMD GPUs from rocminfo, falling back to rocm_agent_enumerator (+ rocm-smi for names)."""
    bin_dirs = tuple(f"{d}/bin" for d in _rocm_dirs(env))
    kfd = probe.file("/dev/kfd").exists()
    rocm_version = _probe_rocm_version(probe, env)
    gpus: tuple[GpuInfo, ...] = ()
    problem: str | None = None

    rocminfo = probe.which("rocminfo", *bin_dirs)
    if rocminfo:
        result = probe.run(rocminfo)
        output = result.stdout + "\n" + result.stderr
        parsed = parse_rocminfo(result.stdout) if result.ok else RocmAgents()
        if result.ok and parsed.agents_seen:
            gpus = parsed.gpus
        elif "NOT loaded" in output:
            problem = "rocminfo reports that the amdgpu kernel driver is not loaded; AMD GPU detection skipped"
        elif re.search(r"permission denied|/dev/kfd|OUT_OF_RESOURCES", output, flags=re.IGNORECASE) and not result.timed_out:
            problem = ("rocminfo could not open /dev/kfd; add your user to the render and video groups; "
                       "AMD GPU detection skipped")
        elif result.ok:
            problem = (f"rocminfo printed output envbuilder could not read ({_first_line(result.stdout) or 'nothing'!r}); "
                       "AMD GPU detection skipped")
        else:
            problem = _failure("rocminfo", result, probe.timeout, "AMD GPU detection skipped")

    enumerator = probe.which("rocm_agent_enumerator", *bin_dirs) if not gpus and (problem or not rocminfo) else None
    if enumerator:
        result = probe.run(enumerator)
        archs = parse_rocm_agent_enumerator(result.stdout) if result.ok else ()
        if archs:
            names = _rocm_smi_names(probe, bin_dirs)
            gpus = tuple(
                GpuInfo(index=i, vendor="amd", name=names.get(i, f"AMD GPU ({gfx})"), gfx_arch=gfx)
                for i, gfx in enumerate(archs)
            )
            if problem:
                findings.append(Notice("rocm-fallback", problem.replace("AMD GPU detection skipped", "used rocm_agent_enumerator instead")))
                problem = None
        elif not result.ok and not problem:
            problem = _failure("rocm_agent_enumerator", result, probe.timeout, "AMD GPU detection skipped")

    if problem:
        findings.append(Notice("probe-failed", problem))
    if gpus:
        if rocm_version is None:
            findings.append(Notice("rocm-version-unknown", "the ROCm version is unknown (no /opt/rocm/.info/version)"))
        return _Found(gpus=gpus, vendor="amd", rocm_version=rocm_version)
    if kfd and not rocminfo and not enumerator:
        findings.append(
            Notice("probe-failed", "/dev/kfd exists (the amdgpu compute driver is loaded) but neither rocminfo nor rocm_agent_enumerator "
            "was found; install ROCm or pass --gpu amd --gpu-arch gfxNNN")
        )
    return _Found(rocm_version=rocm_version)


def _rocm_smi_names(probe: _Probe, bin_dirs: tuple[str, ...]) -> dict[int, str]:
    exe = probe.which("rocm-smi", *bin_dirs)
    if exe is None:
        return {}
    result = probe.run(exe, "--showproductname")
    return parse_rocm_smi_product_names(result.stdout) if result.ok else {}


def _probe_apple(probe: _Probe) -> _Found:
    """Apple Silicon: one GPU (the SoC's), named after the chip ("Apple M2 Pro") when sysctl says so."""
    name = "Apple M-series"
    exe = probe.which("sysctl")
    if exe:
        result = probe.run(exe, "-n", "machdep.cpu.brand_string")
        brand = _first_line(result.stdout) if result.ok else ""
        if brand.startswith("Apple"):
            name = brand
    return _Found(gpus=(GpuInfo(index=0, vendor="apple", name=name),), vendor="apple")


def _macos_runs_translated(probe: _Probe) -> bool:
    """True when this (x86_64) Python runs under Rosetta 2 on Apple Silicon: sysctl.proc_translated is 1."""
    exe = probe.which("sysctl")
    if exe is None:
        return False
    result = probe.run(exe, "-n", "sysctl.proc_translated")
    return result.ok and result.stdout.strip() == "1"


def _macos_release(probe: _Probe) -> str | None:
    exe = probe.which("sw_vers")
    if exe is None:
        return None
    result = probe.run(exe, "-productVersion")
    version = result.stdout.strip() if result.ok else ""
    return f"macOS {version}" if VERSION_RE.match(version) or version.isdigit() else None


# ---------------------------------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------------------------------


def detect_host(
    *,
    env: Mapping[str, str] | None = None,
    path: str | None = None,
    timeout: float = 10.0,
    root: Path = Path("/"),
    system: str | None = None,
    machine: str | None = None,
) -> HostInfo:
    """Detect this machine: OS, CPU architecture, WSL, GPUs and their driver/ROCm versions.

    env (default os.environ) is read for WSL_DISTRO_NAME, ROCM_PATH and PATH; path (default env's PATH)
    is where programs are looked up; files (/proc, /etc/os-release, /dev/kfd, /opt/rocm) are read under
    root; system and machine default to platform.system() and platform.machine(). Each program gets
    `timeout` seconds. Probe problems become findings, never exceptions; only an OS or architecture
    envbuilder cannot build for raises ProbeError.
    """
    env = os.environ if env is None else env
    probe = _Probe(path=path if path is not None else env.get("PATH", os.defpath), root=Path(root), timeout=timeout)
    running_system = platform.system()
    os_name = normalise_os(system if system is not None else running_system)
    arch = normalise_arch(machine if machine is not None else platform.machine(), os_name)
    findings: list[Notice] = []

    wsl = False
    os_release: str | None = None
    if os_name == "linux":
        wsl = is_wsl(probe.read("/proc/version"), env)
        text = probe.read("/etc/os-release") or probe.read("/usr/lib/os-release")
        os_release = parse_os_release(text) if text else None
    elif os_name == "macos":
        os_release = _macos_release(probe)
        if arch == "x86_64" and _macos_runs_translated(probe):
            findings.append(Notice("rosetta", "Python runs under Rosetta 2; the CPU is Apple Silicon, so arm64 is reported"))
            arch = "arm64"
    elif os_name == "windows" and normalise_os(running_system) == "windows":
        os_release = f"Windows {platform.release()}".strip()

    if os_name == "macos":
        found = _probe_apple(probe) if arch == "arm64" else _Found()
    else:
        found = _probe_nvidia(probe, wsl=wsl, findings=findings)
        if found.vendor == "none" and os_name == "linux":
            amd = _probe_amd(probe, env, findings)
            found = amd if amd.vendor == "amd" else _Found(
                nvidia_driver=found.nvidia_driver, rocm_version=amd.rocm_version
            )

    ccs = sorted({g.compute_capability for g in found.gpus if g.compute_capability})
    gfx = sorted({g.gfx_arch for g in found.gpus if g.gfx_arch})
    if len(ccs) > 1:
        findings.append(Notice("mixed-gpus", f"the GPUs have different compute capabilities ({', '.join(ccs)}); a build must cover all of them"))
    if len(gfx) > 1:
        findings.append(Notice("mixed-gpus", f"the GPUs have different architectures ({', '.join(gfx)}); a build must cover all of them"))
    if found.vendor == "none" and os_name != "macos":
        findings.append(Notice("cpu-only-host", "no NVIDIA or AMD GPU was found; this host runs on CPU only"))
    elif found.vendor == "none":
        findings.append(Notice("cpu-only-host", "this Mac has an Intel CPU; envbuilder detects only Apple Silicon GPUs, so it runs on CPU only"))

    return HostInfo(
        os=os_name,
        arch=arch,
        wsl=wsl,
        os_release=os_release,
        gpu_vendor=found.vendor,
        gpus=found.gpus,
        nvidia_driver=found.nvidia_driver,
        cuda_driver_version=found.cuda_driver_version,
        rocm_version=found.rocm_version,
        findings=tuple(findings),
    )

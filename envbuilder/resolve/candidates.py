"""Candidate builds: the hardware filter (driver floors, SASS/PTX, ROCm gfx lists) and the software filter
(Python, flavour, pairing, what an index serves) over (torch release, build, Python) triples, and the pick.

Pure: must not import subprocess, urllib.request, docker or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from envbuilder.notices import Notice
from envbuilder.resolve.matrix import (ComputeCapability, CudaMinorCompat, CudaToolkit, Matrix, TorchBuild, TorchRelease,
                                       flavor_cuda, flavor_kind, flavor_rocm, split_local)
from envbuilder.project.spec import TORCH_COMPANIONS
from envbuilder.resolve.plan import Target
from envbuilder.resolve.served import IndexSnapshot, platform_matches
from envbuilder.resolve.software import ProjectView, Software


@dataclass(frozen=True)
class Fit:
    ok: bool
    mode: str = "strict"  # strict | minor
    warnings: tuple[Notice, ...] = ()
    why_not: str = ""

@dataclass(frozen=True)
class Candidate:
    release: TorchRelease
    build: TorchBuild
    python: str
    fit: Fit

def _version_ge(a: str, b: str) -> bool:
    return dotted(a) >= dotted(b)

def dotted(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v))

def hardware_fit(build: TorchBuild, target: Target, matrix: Matrix, compat: str) -> Fit:
    """Whether the build runs on the target, and under which CUDA rule (mode strict or minor).

    compat: strict (the toolkit's own minimum driver), minor (CUDA minor-version compatibility allowed), or auto
    (minor-version compatibility only where the wheel carries SASS for every target GPU: minor compatibility
    cannot JIT PTX, so a wheel whose kernels are all SASS for the GPU loses nothing under it).
    """
    kind = flavor_kind(build.flavor)
    if target.os == "macos":
        return Fit(kind == "default", why_not="macOS uses the default PyPI wheel")
    if target.gpu in ("none", "apple"):
        return Fit(kind == "cpu", why_not="no GPU: the cpu flavour")
    if target.gpu == "amd":
        if kind != "rocm":
            return Fit(False, why_not="not a ROCm build")
        gfx = set(matrix.rocm_gfx(build))
        if not target.gpu_archs:
            return Fit(True, warnings=(Notice("gpu-arch-unknown", f"no gfx architecture known; assuming {build.flavor} "
                                              "supports the GPU", "pass --gpu-arch"),))
        missing = [g for g in target.gpu_archs if g not in gfx]
        return Fit(not missing, why_not=f"{build.flavor} wheels do not list {', '.join(missing)}")
    # NVIDIA
    if kind != "cuda":
        return Fit(False, why_not="not a CUDA build")
    cuda = flavor_cuda(build.flavor) or ""
    warnings: list[Notice] = []
    mode = "strict"
    if target.cuda_driver:
        too_old = _driver_below_gpu_floor(target, matrix)
        if too_old:
            return Fit(False, why_not=too_old)
        floor = os_floor(matrix.cuda_toolkit(cuda), target)
        if floor and not _version_ge(target.cuda_driver, floor):
            minor_floor = os_floor(matrix.minor_compat(int(cuda.split(".")[0])), target)
            needs = f"CUDA {cuda} needs driver >= {floor}"
            if compat == "strict" or not minor_floor:
                return Fit(False, why_not=needs)
            if not _version_ge(target.cuda_driver, minor_floor):
                return Fit(False, why_not=f"{needs} (>= {minor_floor} under minor-version compatibility)")
            if compat == "auto" and not target.compute_capabilities:
                return Fit(False, why_not=f"{needs}; minor-version compatibility needs the GPU's kernels checked "
                                          "(pass --compute-capability, or --cuda-compat minor)")
            mode = "minor"
    sass_ok, sass_warnings = sass_fit(build, target, jit_allowed=mode == "strict", matrix=matrix)
    if not sass_ok:
        return Fit(False, mode, why_not=sass_warnings[0] if sass_warnings else "no SASS for the GPU")
    warnings += [Notice("ptx-jit", w) for w in sass_warnings]
    if not target.cuda_driver:
        warnings.append(Notice("driver-unknown", "no NVIDIA driver version known; assumed new enough (pass --cuda-driver)"))
    if not target.compute_capabilities:
        warnings.append(Notice("compute-capability-not-checked", "no compute capability known; GPU kernels not checked (pass --compute-capability)"))
    return Fit(True, mode, tuple(warnings))

def os_floor(row: CudaToolkit | CudaMinorCompat | ComputeCapability | None, target: Target) -> str | None:
    """A driver floor from a matrix row, for the target's OS (Windows drivers are numbered apart)."""
    if row is None:
        return None
    return row.min_driver_windows if target.os == "windows" else row.min_driver_linux

def _driver_below_gpu_floor(target: Target, matrix: Matrix) -> str:
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        floor = os_floor(generation, target)
        if floor and target.cuda_driver and not _version_ge(target.cuda_driver, floor):
            return f"driver {target.cuda_driver} is older than {generation.architecture} GPUs (sm_{cc.replace('.', '')}) need (>= {floor})"
    return ""

def sass_fit(build: TorchBuild, target: Target, *, jit_allowed: bool, matrix: Matrix) -> tuple[bool, list[str]]:
    """SASS built for X.y runs on X.z when z >= y, never on another major, whatever toolkit built it: an sm_86
    build (and its cuBLAS/cuDNN kernels) runs on an RTX 4090 (sm_89) even from a toolkit that predates Ada.
    PTX JITs forward, but only under a strict driver, and only when the build's toolkit knows the architecture:
    its cuBLAS/cuDNN carry no kernels for GPUs newer than itself (an RTX 5090 needs CUDA 12.8 whatever PTX a
    cu124 wheel ships)."""
    warnings: list[str] = []
    cuda = flavor_cuda(build.flavor) or "0.0"
    for cc in target.compute_capabilities:
        sm = f"sm_{cc.replace('.', '')}"
        if has_sass(build, cc):
            continue
        generation = matrix.compute_capability(cc)
        if generation and Version(cuda) < Version(generation.min_cuda):
            return False, [(f"{build.flavor} wheels carry no kernels for {sm} (built for {', '.join(build.sm)}), and "
                            f"{generation.architecture} needs CUDA >= {generation.min_cuda} to JIT them")]
        if build.ptx and Version(build.ptx) <= Version(cc) and jit_allowed:
            warnings.append(f"{sm} runs {build.flavor} kernels through PTX JIT from sm_{build.ptx.replace('.', '')} "
                            "(slow first start, possibly slower kernels)")
            continue
        why = f"{build.flavor} wheels carry no kernels for {sm} (built for {', '.join(build.sm)})"
        if build.ptx and Version(build.ptx) <= Version(cc):
            why += f"; their sm_{build.ptx.replace('.', '')} PTX needs a JIT, which minor-version compatibility cannot do"
        return False, [why]
    return True, warnings

def has_sass(build: TorchBuild, cc: str) -> bool:
    """Whether the build carries SASS that runs on compute capability `cc` (same major, minor at or below)."""
    major, minor = (int(p) for p in cc.split("."))
    return any(int(s.split(".")[0]) == major and int(s.split(".")[1]) <= minor for s in build.sm)

def driver_floor(build: TorchBuild, target: Target, matrix: Matrix) -> str | None:
    """The oldest driver that runs this build on every target GPU: the toolkit's floor or the GPU generation's."""
    toolkit = matrix.cuda_toolkit(flavor_cuda(build.flavor) or "")
    floor = os_floor(toolkit, target)
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        gpu_floor = os_floor(generation, target)
        if floor and gpu_floor and dotted(gpu_floor) > dotted(floor):
            floor = gpu_floor
    return floor or None

def pythons_newest_first(pythons: tuple[str, ...]) -> list[str]:
    return sorted(pythons, key=Version, reverse=True)

def python_ok(py: str, view: ProjectView, sw: Software, *, with_fit: bool = True) -> bool:
    """Whether the project allows Python `py`; with_fit=False leaves out what the installability check found."""
    # An image carries the newest patch of X.Y, so X.Y is judged by a late patch release.
    if view.requires_python and not view.requires_python.contains(f"{py}.99", prereleases=True):
        return False
    if view.request.python and py != view.request.python:
        return False
    if sw.pinned_python and py != sw.pinned_python:
        return False
    if with_fit and view.python_fit is not None and view.python_fit.python and py != view.python_fit.python:
        return False
    return True

def software_ok(rel: TorchRelease, build: TorchBuild, py: str, view: ProjectView, matrix: Matrix, *, ignore_torch_bounds: bool) -> bool:
    sw = view.software(py)
    if not python_ok(py, view, sw):
        return False
    if view.request.flavor and build.flavor != view.request.flavor:
        return False
    if sw.onnxruntime and not onnxruntime_choices(matrix, sw, py):
        return False
    if view.available is not None and not _served(view, rel, build, py, sw, matrix):
        return False
    if ignore_torch_bounds:
        return True
    return not torch_bound_violations(rel, build, sw, matrix)

def served_version(available: IndexSnapshot, name: str, public: str, build: TorchBuild, py: str, target: Target) -> str | None:
    """The version string the index serves for this package, build and Python, or None."""
    for wheel in available.files(name):
        if wheel.public != public or (wheel.pythons and py not in wheel.pythons):
            continue
        if not platform_matches(wheel.platforms, target.os, target.arch):
            continue
        if wheel.local == build.flavor or (wheel.local is None and build.on_pypi):
            return wheel.version
    return None

def _served(view: ProjectView, rel: TorchRelease, build: TorchBuild, py: str, sw: Software, matrix: Matrix) -> bool:
    available = view.available
    if served_version(available, "torch", rel.version, build, py, view.target) is None:
        return False
    for name in TORCH_COMPANIONS:
        if getattr(sw, name) is not None and name in available.listed and not any(
                served_version(available, name, v, build, py, view.target) for v in companion_choices(rel, name, sw, matrix)):
            return False
    return True

def _pinned_exactly(spec: SpecifierSet, version: str) -> bool:
    return any(item.operator in ("==", "===") and "*" not in item.version and item.contains(version, prereleases=True)
               for item in split_local(spec)[0])

def companion_choices(rel: TorchRelease, name: str, sw: Software, matrix: Matrix) -> list[str]:
    """The `name` (torchvision, torchaudio) releases built for this torch that the project allows, oldest first.
    A release yanked on PyPI counts only when pinned exactly, as installers treat it (PEP 592)."""
    spec = getattr(sw, name)
    public = split_local(spec)[0] if spec is not None else SpecifierSet()
    return [v for v in rel.companions(name) if public.contains(v, prereleases=True)
            and (not matrix.is_yanked(name, v) or (spec is not None and _pinned_exactly(spec, v)))]

def torch_bound_violations(rel: TorchRelease, build: TorchBuild, sw: Software, matrix: Matrix) -> list[str]:
    """The project's torch-family constraints this build breaks, in words."""
    return pairing_violations(rel, sw, matrix) + flavor_violations(build, sw)

def pairing_violations(rel: TorchRelease, sw: Software, matrix: Matrix) -> list[str]:
    broken: list[str] = []
    if not sw.torch.contains(rel.version, prereleases=True):
        broken.append(f"torch{sw.torch}")
    for name in TORCH_COMPANIONS:
        spec = getattr(sw, name)
        if spec is not None and not companion_choices(rel, name, sw, matrix):
            built = ", ".join(rel.companions(name)) or "none"
            broken.append(f"{name}{spec} (torch {rel.version} pairs with {name} {built})")
    return broken

def flavor_violations(build: TorchBuild, sw: Software) -> list[str]:
    broken: list[str] = []
    if sw.pinned_flavor and build.flavor != sw.pinned_flavor:
        broken.append(f"the pinned torch build +{sw.pinned_flavor}")
    for name in TORCH_COMPANIONS:
        spec = getattr(sw, name)
        flavor = split_local(spec)[1] if spec is not None else None
        if flavor and build.flavor != flavor:
            broken.append(f"the pinned {name} build +{flavor}")
    if sw.index_flavor and build.flavor != sw.index_flavor:
        broken.append(f"the project's PyTorch index ({sw.index_origin})")
    return broken

def onnxruntime_choices(matrix: Matrix, sw: Software, py: str) -> list:
    if not sw.onnxruntime:
        return []
    _, spec = sw.onnxruntime
    return [o for o in matrix.onnxruntime if py in o.python and spec.contains(o.version, prereleases=True)]

def pick(candidates: list[Candidate]) -> Candidate:
    """Highest torch, then the highest CUDA/ROCm of that release, then the highest Python."""
    def key(c: Candidate):
        accel = flavor_cuda(c.build.flavor) or flavor_rocm(c.build.flavor) or "0"
        return (Version(c.release.version), c.fit.mode == "strict", Version(accel), Version(c.python))
    return max(candidates, key=key)

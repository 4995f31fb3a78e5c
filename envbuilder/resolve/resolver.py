"""Resolve: intersect the project's constraints with the matrix and the target's hardware into a Plan.

Pure: no subprocess, network, Docker or files. Inputs are values (ProjectSpec, Target, Matrix,
ResolveRequest); the output is a Plan that records why each choice was made, or a ResolveConflict.

The rule, in order (docs/resolver.md has the long form):
1. candidates are (torch release, build flavour, Python) for the target OS and CPU architecture;
2. software filter: the project's torch/torchvision/torchaudio specifiers (through the pairing table),
   requires-python, the release's Pythons, a --python pin, project-declared PyTorch indexes, local pins;
3. hardware filter: CUDA driver floors and SASS for every GPU; ROCm gfx lists; macOS default; CPU;
4. highest torch, then highest CUDA/ROCm, then highest Python every choice allows;
5. strict driver floors first, then CUDA minor-version compatibility;
6. hardware over software bounds when they can never meet (potential-incompatibility), else CPU;
7. contradictory software constraints are a conflict (exit code 3).
Must not import docker, proc, host probes or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from envbuilder.errors import EXIT_CONFLICT, EXIT_USAGE, EnvbuilderError, ResolveConflict
from envbuilder.host.probes import HostInfo
from envbuilder.resolve.matrix import (ComputeCapability, CudaMinorCompat, CudaToolkit, Matrix, TorchBuild, TorchRelease,
                               flavor_cuda, flavor_kind, flavor_rocm)
from envbuilder.resolve.plan import PackageChoice, Plan, PlanStatus, ResolveRequest, Target, TargetFlags, TorchChoice
from envbuilder.project.inspect import IndexDecl, ProjectSpec, target_environment
from envbuilder.index.snapshot import IndexSnapshot, parse_wheel_filename, platform_matches

TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
ONNXRUNTIME = ("onnxruntime", "onnxruntime-gpu")
_PYTORCH_INDEX_RE = re.compile(r"download\.pytorch\.org/whl/(?:nightly/|test/)?(?P<flavor>cpu|cu\d{3}|rocm\d+\.\d+(?:\.\d+)?)/?")
_DRIVER_RE = re.compile(r"^\d+(\.\d+){0,3}$")
_GFX_RE = re.compile(r"^gfx[0-9a-f]{3,4}$")
_CC_RE = re.compile(r"^\d{1,2}\.\d$")
_PYTHON_RE = re.compile(r"^3\.\d{1,2}$")


# --------------------------------------------------------------------------------------------------
# Target: what we resolve for
# --------------------------------------------------------------------------------------------------


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
        raise EnvbuilderError("target-invalid", f"--gpu {gpu} is not available on macOS", "use --gpu apple or --gpu none", exit_code=EXIT_USAGE)
    if gpu == "apple" and os_name != "macos":
        raise EnvbuilderError("target-invalid", "--gpu apple needs --target-os macos", "add --target-os macos --target-arch arm64", exit_code=EXIT_USAGE)

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
    return Target(
        os=os_name,
        arch=arch,
        gpu=gpu,
        cuda_driver=cuda_driver if gpu == "nvidia" else None,
        compute_capabilities=tuple(sorted(set(ccs), key=Version)),
        gpu_archs=tuple(sorted(set(gfx))),
        gpu_names=tuple(names),
        source=source,
    )


def _normal_arch(os_name: str, arch: str) -> str:
    if os_name == "macos" and arch in ("aarch64", "arm64"):
        return "arm64"
    if os_name != "macos" and arch == "arm64":
        return "aarch64"
    return arch


def _check_flags(flags: TargetFlags, matrix: Matrix) -> None:
    if flags.cuda_driver and not _DRIVER_RE.match(flags.cuda_driver):
        raise EnvbuilderError("target-invalid", f"--cuda-driver {flags.cuda_driver!r} is not a driver version",
                              "give the NVIDIA driver version nvidia-smi shows, e.g. 570.86.10", exit_code=EXIT_USAGE)
    known = sorted({g.compute_capability for g in matrix.gpus} | {sm for r in matrix.torch for b in r.builds for sm in b.sm}, key=Version)
    for cc in flags.compute_capability:
        if not _CC_RE.match(cc) or cc not in known:
            raise EnvbuilderError("unknown-compute-capability", f"--compute-capability {cc} is not a known NVIDIA compute capability",
                                  f"use one of {', '.join(known)} (see NVIDIA's CUDA GPUs page)", exit_code=EXIT_USAGE)
    for gfx in flags.gpu_arch:
        if not _GFX_RE.match(gfx):
            raise EnvbuilderError("target-invalid", f"--gpu-arch {gfx!r} is not an AMD gfx architecture",
                                  "give the gfx name rocminfo shows, e.g. gfx942 or gfx1100", exit_code=EXIT_USAGE)


# --------------------------------------------------------------------------------------------------
# The project's software constraints, per Python version (markers depend on it)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Software:
    """The torch-family and onnxruntime constraints that apply for one target Python."""

    torch: SpecifierSet
    torchvision: SpecifierSet | None  # None: not required
    torchaudio: SpecifierSet | None
    onnxruntime: tuple[str, SpecifierSet] | None  # (requested name, specifier)
    pinned_flavor: str | None  # from a local-version pin or a direct URL
    pinned_python: str | None  # from a direct URL wheel's cp tag
    index_flavor: str | None  # from a project-declared PyTorch index for torch
    index_origin: str | None
    others: tuple[Requirement, ...]  # the rest of the project's requirements
    indexes: tuple[IndexDecl, ...]  # non-PyTorch indexes that apply


class _ProjectView:
    """The project's requirements evaluated for one target platform, cached per Python version."""

    def __init__(self, project: ProjectSpec, target: Target, request: ResolveRequest, available: IndexSnapshot | None = None) -> None:
        self.available = available
        self.project = project
        self.target = target
        self.request = request
        self.requires_python = _specifier(project.requires_python or "", "requires-python")
        self._cache: dict[str, _Software] = {}

    def software(self, python: str) -> _Software:
        if python not in self._cache:
            self._cache[python] = self._evaluate(python)
        return self._cache[python]

    def _evaluate(self, python: str) -> _Software:
        env = target_environment(self.target.os, self.target.arch, python)
        reqs = self.project.requirements_for(env, self.request.extras)
        by_name: dict[str, list[Requirement]] = {}
        others: list[Requirement] = []
        for req in reqs:
            name = canonicalize_name(req.name)
            if name in TORCH_FAMILY or name in ONNXRUNTIME:
                by_name.setdefault(name, []).append(req)
            else:
                others.append(req)
        # `-c` constraint files bound a package only when something requires it (pip's semantics).
        for req in self.project.constraints_for(env):
            name = canonicalize_name(req.name)
            if name == "torch" or name in by_name:
                by_name.setdefault(name, []).append(req)
        torch_spec = SpecifierSet()
        pinned_flavor = pinned_python = None
        for req in by_name.get("torch", []):
            spec, flavor, py = _torch_requirement(req)
            torch_spec &= spec
            pinned_flavor = flavor or pinned_flavor
            pinned_python = py or pinned_python
        vision = _joined(by_name.get("torchvision"))
        audio = _joined(by_name.get("torchaudio"))
        ort = None
        for name in ONNXRUNTIME:
            if name in by_name:
                ort = (name, _joined(by_name[name]) or SpecifierSet())
        index_flavor = index_origin = None
        kept_indexes: list[IndexDecl] = []
        for decl in self.project.indexes_for(env):
            flavor = pytorch_index_flavor(decl.url)
            applies_to_torch = not decl.packages or "torch" in {canonicalize_name(p) for p in decl.packages}
            if flavor and applies_to_torch:
                index_flavor, index_origin = flavor, f"{decl.origin or 'project'} declares {decl.url}"
            elif not flavor:
                kept_indexes.append(decl)
        return _Software(torch_spec, vision, audio, ort, pinned_flavor, pinned_python, index_flavor, index_origin,
                         tuple(others), tuple(kept_indexes))


def _joined(reqs: list[Requirement] | None) -> SpecifierSet | None:
    if not reqs:
        return None
    spec = SpecifierSet()
    for req in reqs:
        spec &= req.specifier
    return spec


def _specifier(text: str, what: str) -> SpecifierSet:
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise EnvbuilderError("project-invalid-requirement", f"{what} {text!r} is not a valid version specifier",
                              "fix it in the project (PEP 440, e.g. >=3.10,<3.13)") from None


def _torch_requirement(req: Requirement) -> tuple[SpecifierSet, str | None, str | None]:
    """A torch requirement as (specifier on the public version, pinned flavour, pinned Python)."""
    if req.url:
        wheel = parse_wheel_filename(unquote(urlparse(req.url).path.rsplit("/", 1)[-1]))
        if wheel is None or len(wheel.pythons) != 1:
            raise EnvbuilderError("project-invalid-requirement", f"torch @ {req.url} is not a wheel URL envbuilder can read",
                                  "point torch at a .whl file, or use a version specifier and an index")
        return SpecifierSet(f"=={wheel.public}"), wheel.local or "default", wheel.pythons[0]
    spec = SpecifierSet()
    flavor = None
    for item in req.specifier:
        public, _, local = item.version.partition("+")
        if local and item.operator in ("==", "==="):
            flavor = local
            spec &= SpecifierSet(f"=={public}")
        else:
            spec &= SpecifierSet(str(item))
    return spec, flavor, None


def pytorch_index_flavor(url: str) -> str | None:
    """'https://download.pytorch.org/whl/cu121' -> 'cu121'; None for other indexes."""
    m = _PYTORCH_INDEX_RE.search(url)
    return m["flavor"] if m else None


# --------------------------------------------------------------------------------------------------
# Hardware
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    ok: bool
    mode: str = "strict"  # strict | minor
    warnings: tuple[str, ...] = ()
    why_not: str = ""


def _version_ge(a: str, b: str) -> bool:
    return _dotted(a) >= _dotted(b)


def _dotted(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v))


def _hardware_fit(build: TorchBuild, target: Target, matrix: Matrix, compat: str) -> _Fit:
    kind = flavor_kind(build.flavor)
    if target.os == "macos":
        return _Fit(kind == "default", why_not="macOS uses the default PyPI wheel")
    if target.gpu in ("none", "apple"):
        return _Fit(kind == "cpu", why_not="no GPU: the cpu flavour")
    if target.gpu == "amd":
        if kind != "rocm":
            return _Fit(False, why_not="not a ROCm build")
        gfx = set(matrix.rocm_gfx(build))
        if not target.gpu_archs:
            return _Fit(True, warnings=(f"no gfx architecture known; assuming {build.flavor} supports the GPU (pass --gpu-arch)",))
        missing = [g for g in target.gpu_archs if g not in gfx]
        return _Fit(not missing, why_not=f"{build.flavor} wheels do not list {', '.join(missing)}")
    # NVIDIA
    if kind != "cuda":
        return _Fit(False, why_not="not a CUDA build")
    cuda = flavor_cuda(build.flavor) or ""
    warnings: list[str] = []
    mode = "strict"
    if target.cuda_driver:
        too_old = _driver_below_gpu_floor(target, matrix)
        if too_old:
            return _Fit(False, why_not=too_old)
        toolkit = matrix.cuda_toolkit(cuda)
        floor = _os_floor(toolkit, target)
        if floor and not _version_ge(target.cuda_driver, floor):
            minor = matrix.minor_compat(int(cuda.split(".")[0]))
            minor_floor = _os_floor(minor, target)
            if compat == "minor" and minor_floor and _version_ge(target.cuda_driver, minor_floor):
                mode = "minor"
            else:
                return _Fit(False, why_not=f"CUDA {cuda} needs driver >= {floor}")
    sass_ok, sass_warnings = _sass_fit(build, target, jit_allowed=mode == "strict", matrix=matrix)
    if not sass_ok:
        return _Fit(False, why_not=sass_warnings[0] if sass_warnings else "no SASS for the GPU")
    warnings += sass_warnings
    if not target.cuda_driver:
        warnings.append("no NVIDIA driver version known; assumed new enough (pass --cuda-driver)")
    if not target.compute_capabilities:
        warnings.append("no compute capability known; GPU kernels not checked (pass --compute-capability)")
    return _Fit(True, mode, tuple(warnings))


def _os_floor(row: CudaToolkit | CudaMinorCompat | ComputeCapability | None, target: Target) -> str | None:
    """A driver floor from a matrix row, for the target's OS (Windows drivers are numbered apart)."""
    if row is None:
        return None
    return row.min_driver_windows if target.os == "windows" else row.min_driver_linux


def _driver_below_gpu_floor(target: Target, matrix: Matrix) -> str:
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        floor = _os_floor(generation, target)
        if floor and target.cuda_driver and not _version_ge(target.cuda_driver, floor):
            return f"driver {target.cuda_driver} is older than {generation.architecture} GPUs (sm_{cc.replace('.', '')}) need (>= {floor})"
    return ""


def _sass_fit(build: TorchBuild, target: Target, *, jit_allowed: bool, matrix: Matrix) -> tuple[bool, list[str]]:
    """SASS built for X.y runs on X.z when z >= y, never on another major. PTX JITs forward, but only under a
    strict driver, and only when the build's toolkit knows the architecture: its cuBLAS/cuDNN carry no kernels
    for GPUs newer than itself (an RTX 5090 needs CUDA 12.8 whatever PTX a cu124 wheel ships)."""
    warnings: list[str] = []
    cuda = flavor_cuda(build.flavor) or "0.0"
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        if generation and Version(cuda) < Version(generation.min_cuda):
            return False, [f"{generation.architecture} (sm_{cc.replace('.', '')}) needs CUDA >= {generation.min_cuda}; {build.flavor} is older"]
        major, minor = (int(p) for p in cc.split("."))
        sass = [s for s in build.sm if int(s.split(".")[0]) == major and int(s.split(".")[1]) <= minor]
        if sass:
            continue
        if build.ptx and Version(build.ptx) <= Version(cc) and jit_allowed:
            warnings.append(f"sm_{cc.replace('.', '')} runs {build.flavor} kernels through PTX JIT from sm_{build.ptx.replace('.', '')} "
                            "(slow first start, possibly slower kernels)")
            continue
        return False, [f"{build.flavor} wheels carry no kernels for sm_{cc.replace('.', '')} (built for {', '.join(build.sm)})"]
    return True, warnings


# --------------------------------------------------------------------------------------------------
# The resolver
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    release: TorchRelease
    build: TorchBuild
    python: str
    fit: _Fit


def resolve(project: ProjectSpec, target: Target, matrix: Matrix, request: ResolveRequest = ResolveRequest(),
            available: IndexSnapshot | None = None) -> Plan:
    """Pick Python, the torch build and companions for the project on the target. Raises ResolveConflict.

    With `available` (a snapshot of the torch index or wheelhouse the build will use), only builds that index
    really serves are candidates, and the plan pins the exact version strings it serves.
    """
    if request.python and not _PYTHON_RE.match(request.python):
        raise EnvbuilderError("request-invalid", f"--python {request.python!r} is not X.Y", "pass e.g. --python 3.11", exit_code=EXIT_USAGE)
    if request.flavor:
        try:
            flavor_kind(request.flavor)
        except ValueError:
            raise EnvbuilderError("request-invalid", f"--flavor {request.flavor!r} is not a flavour",
                                  "use cpu, default, cuNNN (cu128) or rocmX.Y (rocm6.3)", exit_code=EXIT_USAGE) from None
    view = _ProjectView(project, target, request, available)
    platform_builds = [(rel, b) for rel in matrix.releases_newest_first for b in rel.builds
                       if b.os == target.os and b.arch == target.arch]
    if not platform_builds:
        raise ResolveConflict("no-builds-for-platform", f"the matrix has no torch builds for {target.os}/{target.arch}",
                              "check --target-os/--target-arch, or update the matrix (`envbuilder compat update`)", exit_code=EXIT_CONFLICT)

    soft: list[tuple[TorchRelease, TorchBuild, str]] = []
    for rel, build in platform_builds:
        for py in _pythons_newest_first(rel.python_for(build)):
            if _software_ok(rel, build, py, view, matrix, ignore_torch_bounds=False):
                soft.append((rel, build, py))
    if not soft:
        raise _conflict(view, platform_builds, matrix)

    notes: list[str] = []
    status: PlanStatus = "ok"
    compat_modes = ["strict", "minor"] if request.cuda_compat == "strict" else ["minor"]
    chosen: list[_Candidate] = []
    for compat in compat_modes:
        chosen = [_Candidate(r, b, py, fit) for r, b, py in soft if (fit := _hardware_fit(b, target, matrix, compat)).ok]
        if chosen:
            break
    if not chosen:
        chosen, status, notes = _beyond_bounds(view, platform_builds, soft, target, matrix)
    best = _pick(chosen)
    if status == "ok" and best.fit.mode == "minor":
        status = "minor-version-compat"
    return _make_plan(best, status, notes, view, target, matrix, request, project)


def _pythons_newest_first(pythons: tuple[str, ...]) -> list[str]:
    return sorted(pythons, key=Version, reverse=True)


def _python_ok(py: str, view: _ProjectView, sw: _Software) -> bool:
    # An image carries the newest patch of X.Y, so X.Y is judged by a late patch release.
    if view.requires_python and not view.requires_python.contains(f"{py}.99", prereleases=True):
        return False
    if view.request.python and py != view.request.python:
        return False
    if sw.pinned_python and py != sw.pinned_python:
        return False
    return True


def _software_ok(rel: TorchRelease, build: TorchBuild, py: str, view: _ProjectView, matrix: Matrix, *, ignore_torch_bounds: bool) -> bool:
    sw = view.software(py)
    if not _python_ok(py, view, sw):
        return False
    if view.request.flavor and build.flavor != view.request.flavor:
        return False
    if sw.onnxruntime and not _onnxruntime_choices(matrix, sw, py):
        return False
    if view.available is not None and not _served(view, rel, build, py, sw):
        return False
    if ignore_torch_bounds:
        return True
    return not _torch_bound_violations(rel, build, sw)


def _served_version(available: IndexSnapshot, name: str, public: str, build: TorchBuild, py: str, target: Target) -> str | None:
    """The version string the index serves for this package, build and Python, or None."""
    for wheel in available.files(name):
        if wheel.public != public or (wheel.pythons and py not in wheel.pythons):
            continue
        if not platform_matches(wheel.platforms, target.os, target.arch):
            continue
        if wheel.local == build.flavor or (wheel.local is None and build.on_pypi):
            return wheel.version
    return None


def _served(view: _ProjectView, rel: TorchRelease, build: TorchBuild, py: str, sw: _Software) -> bool:
    available = view.available
    if _served_version(available, "torch", rel.version, build, py, view.target) is None:
        return False
    for name in ("torchvision", "torchaudio"):
        paired = getattr(rel, name)
        if getattr(sw, name) is not None and name in available.listed and (
                not paired or _served_version(available, name, paired, build, py, view.target) is None):
            return False
    return True


def _torch_bound_violations(rel: TorchRelease, build: TorchBuild, sw: _Software) -> list[str]:
    """The project's torch-family constraints this build breaks, in words."""
    return _pairing_violations(rel, sw) + _flavor_violations(build, sw)


def _pairing_violations(rel: TorchRelease, sw: _Software) -> list[str]:
    broken: list[str] = []
    if not sw.torch.contains(rel.version, prereleases=True):
        broken.append(f"torch{sw.torch}")
    if sw.torchvision is not None and (rel.torchvision is None or not sw.torchvision.contains(rel.torchvision, prereleases=True)):
        broken.append(f"torchvision{sw.torchvision} (torch {rel.version} pairs with torchvision {rel.torchvision or 'none'})")
    if sw.torchaudio is not None and (rel.torchaudio is None or not sw.torchaudio.contains(rel.torchaudio, prereleases=True)):
        broken.append(f"torchaudio{sw.torchaudio} (torch {rel.version} pairs with torchaudio {rel.torchaudio or 'none'})")
    return broken


def _flavor_violations(build: TorchBuild, sw: _Software) -> list[str]:
    broken: list[str] = []
    if sw.pinned_flavor and build.flavor != sw.pinned_flavor:
        broken.append(f"the pinned torch build +{sw.pinned_flavor}")
    if sw.index_flavor and build.flavor != sw.index_flavor:
        broken.append(f"the project's PyTorch index ({sw.index_origin})")
    return broken


def _pick(candidates: list[_Candidate]) -> _Candidate:
    """Highest torch, then the highest CUDA/ROCm of that release, then the highest Python."""
    def key(c: _Candidate):
        accel = flavor_cuda(c.build.flavor) or flavor_rocm(c.build.flavor) or "0"
        return (Version(c.release.version), c.fit.mode == "strict", Version(accel), Version(c.python))
    return max(candidates, key=key)


def _beyond_bounds(view, platform_builds, soft, target, matrix) -> tuple[list[_Candidate], PlanStatus, list[str]]:
    """Software can be met, but never with this hardware: prefer a build that runs, else the CPU."""
    notes: list[str] = []
    soft_versions = {Version(r.version) for r, _, _ in soft}
    runnable: list[_Candidate] = []
    for rel, build in platform_builds:
        for compat in ("strict", "minor"):
            fit = _hardware_fit(build, target, matrix, compat)
            if fit.ok:
                break
        if not fit.ok:
            continue
        for py in _pythons_newest_first(rel.python_for(build)):
            if _software_ok(rel, build, py, view, matrix, ignore_torch_bounds=True):
                runnable.append(_Candidate(rel, build, py, fit))
                break
    if runnable and target.gpu != "none":
        ordered = sorted({Version(r.version) for r, _ in platform_builds})
        index = {v: i for i, v in enumerate(ordered)}
        soft_idx = [index[v] for v in soft_versions]

        def distance(c: _Candidate) -> int:
            i = index[Version(c.release.version)]
            return min(abs(i - s) for s in soft_idx)

        nearest = min(distance(c) for c in runnable)
        runnable = [c for c in runnable if distance(c) == nearest]
        best = _pick(runnable)
        broken = _torch_bound_violations(best.release, best.build, view.software(best.python))
        notes.append(f"no build within the project's bounds runs on this {target.gpu.upper()} target; "
                     f"chose the nearest release that does, which violates {'; '.join(broken)}")
        return runnable, "potential-incompatibility", notes

    cpu = [(r, b, py) for r, b, py in soft if flavor_kind(b.flavor) == "cpu"]
    if not cpu:
        # The project pins a GPU flavour (an index or +cuXXX) that cannot run here: running on the CPU beats
        # not running, so the flavour restriction gives way, the version bounds stay.
        cpu = [(rel, b, py) for rel, b in platform_builds if flavor_kind(b.flavor) == "cpu"
               for py in _pythons_newest_first(rel.python_for(b))
               if _software_ok(rel, b, py, view, matrix, ignore_torch_bounds=True) and not _pairing_violations(rel, view.software(py))]
        if cpu:
            broken = _flavor_violations(cpu[0][1], view.software(cpu[0][2]))
            notes.append(f"the CPU build violates {'; '.join(broken)}")
    hint = _upgrade_hint(view, soft, platform_builds, target, matrix)
    if not cpu:
        raise ResolveConflict("no-runnable-build", f"no torch build within the project's bounds runs on {_describe_target(target)}, "
                              "and there is no CPU build to fall back to", hint or None, exit_code=EXIT_CONFLICT)
    notes.insert(0, f"no GPU build can run on {_describe_target(target)}; falling back to the CPU build")
    if hint:
        notes.append(hint)
    return [_Candidate(r, b, py, _Fit(True)) for r, b, py in cpu], "cpu-fallback", notes


def _upgrade_hint(view, soft, platform_builds, target: Target, matrix: Matrix) -> str:
    """The driver (or other change) that would let the project's newest allowed release use the GPU;
    when nothing within the project's bounds could, what outside them would."""
    if target.gpu == "nvidia":
        options: list[tuple[Version, str, str]] = []  # (torch version, driver floor, flavour)
        relaxed = target.model_copy(update={"cuda_driver": None})
        pool = [(rel, build) for rel, build, _ in soft]
        outside = ""
        if not any(_sass_fit(b, relaxed, jit_allowed=True, matrix=matrix)[0] for _, b in pool if flavor_kind(b.flavor) == "cuda"):
            pool = list(platform_builds)
            outside = " (outside the project's bounds)"
        for rel, build in pool:
            if flavor_kind(build.flavor) != "cuda" or not _sass_fit(build, relaxed, jit_allowed=True, matrix=matrix)[0]:
                continue
            floor = _driver_floor(build, target, matrix)
            if floor:
                options.append((Version(rel.version), floor, build.flavor))
        if not options:
            return "no torch build in the matrix carries kernels for this GPU's compute capability"
        lowest = min(options, key=lambda o: (_dotted(o[1]), [-p for p in o[0].release]))
        newest = min((o for o in options if o[0] == max(x[0] for x in options)), key=lambda o: _dotted(o[1]))
        hint = f"update the NVIDIA driver to >= {lowest[1]} to run torch {lowest[0]} ({lowest[2]}){outside} on the GPU"
        if newest[0] != lowest[0]:
            hint += f", or >= {newest[1]} for torch {newest[0]} ({newest[2]})"
        return hint
    if target.gpu == "amd":
        fits = sorted(((Version(rel.version), b.flavor) for rel, b in platform_builds
                       if flavor_kind(b.flavor) == "rocm" and set(target.gpu_archs) <= set(matrix.rocm_gfx(b))), reverse=True)
        if fits:
            return f"torch {fits[0][0]} ({fits[0][1]}) supports {', '.join(target.gpu_archs)}; relax the project's torch bounds to use the GPU"
        return f"no ROCm build of torch lists {', '.join(target.gpu_archs)}"
    return ""


def _driver_floor(build: TorchBuild, target: Target, matrix: Matrix) -> str | None:
    """The oldest driver that runs this build on every target GPU: the toolkit's floor or the GPU generation's."""
    toolkit = matrix.cuda_toolkit(flavor_cuda(build.flavor) or "")
    floor = _os_floor(toolkit, target)
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        gpu_floor = _os_floor(generation, target)
        if floor and gpu_floor and _dotted(gpu_floor) > _dotted(floor):
            floor = gpu_floor
    return floor or None


def _describe_target(target: Target) -> str:
    parts = [f"{target.os}/{target.arch}"]
    if target.gpu == "nvidia":
        parts.append("NVIDIA" + (f" driver {target.cuda_driver}" if target.cuda_driver else ""))
        if target.compute_capabilities:
            parts.append("sm_" + "/".join(c.replace(".", "") for c in target.compute_capabilities))
    elif target.gpu == "amd":
        parts.append("AMD " + ",".join(target.gpu_archs))
    elif target.gpu == "apple":
        parts.append("Apple Silicon")
    else:
        parts.append("CPU only")
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------
# Conflicts: explain which constraints collide
# --------------------------------------------------------------------------------------------------


def _served_summary(available: IndexSnapshot, target: Target) -> str:
    versions = sorted({w.version for w in available.files("torch") if platform_matches(w.platforms, target.os, target.arch)}, key=Version)
    return f"torch {', '.join(versions[-6:])}" if versions else f"no torch wheel for {target.os}/{target.arch}"


def _conflict(view: _ProjectView, platform_builds, matrix: Matrix) -> ResolveConflict:
    reasons: list[str] = []
    if view.available is not None:
        without = _ProjectView(view.project, view.target, view.request)
        if any(_software_ok(rel, b, py, without, matrix, ignore_torch_bounds=False)
               for rel, b in platform_builds for py in rel.python_for(b)):
            reasons.append(f"{view.available.url} serves {_served_summary(view.available, view.target)}, "
                           "and none of it fits the project's constraints and Python")
            return ResolveConflict("index-has-no-fit", "; ".join(reasons),
                                   "point --torch-index-url at an index with a fitting build, or relax the project's torch bounds",
                                   context={"reasons": reasons}, exit_code=EXIT_CONFLICT)
    pythons = sorted({py for rel, b in platform_builds for py in rel.python_for(b)}, key=Version)
    req_py = view.requires_python
    if view.request.python and req_py and not req_py.contains(f"{view.request.python}.99"):
        reasons.append(f"--python {view.request.python} is outside requires-python {req_py}")
    allowed_py = [py for py in pythons if (not req_py or req_py.contains(f"{py}.99")) and (not view.request.python or py == view.request.python)]
    if not allowed_py:
        if not reasons:
            reasons.append(f"requires-python {req_py or '(any)'} allows none of the Pythons torch ships for ({', '.join(pythons)})")
    else:
        sw = view.software(allowed_py[-1])
        versions = [rel for rel, _ in platform_builds]
        in_torch = {rel.version for rel in versions if sw.torch.contains(rel.version, prereleases=True)}
        if not in_torch:
            known = sorted({r.version for r in matrix.torch}, key=Version)
            reasons.append(f"torch{sw.torch} matches no release for {view.target.os}/{view.target.arch} (known: {known[0]}–{known[-1]})")
        else:
            pairs_ok = [rel for rel in versions if rel.version in in_torch and not _pairing_violations(rel, sw)]
            if not pairs_ok:
                for label, spec, attr in (("torchvision", sw.torchvision, "torchvision"), ("torchaudio", sw.torchaudio, "torchaudio")):
                    if spec is not None:
                        paired = sorted({getattr(r, attr) or "none" for r in versions if r.version in in_torch})
                        reasons.append(f"torch{sw.torch} pairs with {label} {', '.join(paired[:6])}, but the project asks {label}{spec}")
            py_for_torch = sorted({py for rel, b in platform_builds if rel.version in in_torch for py in rel.python_for(b)}, key=Version)
            if not set(py_for_torch) & set(allowed_py):
                span = f"{py_for_torch[0]}–{py_for_torch[-1]}" if py_for_torch else "none"
                reasons.append(f"requires-python {req_py or '(any)'}{f' with --python {view.request.python}' if view.request.python else ''} "
                               f"collides with torch{sw.torch}, whose wheels support Python {span}")
            flavors = {b.flavor for rel, b in platform_builds if rel.version in in_torch}
            for flavor, origin in ((sw.pinned_flavor, "the torch pin"), (sw.index_flavor, sw.index_origin), (view.request.flavor, "--flavor")):
                if flavor and flavor not in flavors:
                    reasons.append(f"{origin} asks for {flavor}, which torch{sw.torch} does not ship for {view.target.os}/{view.target.arch}")
            if sw.onnxruntime and not any(_onnxruntime_choices(matrix, sw, py) for py in allowed_py):
                reasons.append(f"{sw.onnxruntime[0]}{sw.onnxruntime[1]} has no release for Python {', '.join(allowed_py)}")
    if not reasons:
        reasons.append("the project's torch, companion and Python constraints have no common solution")
    return ResolveConflict("conflict", "; ".join(reasons), "relax one of the colliding constraints in the project (or the --python/--flavor you passed)",
                           context={"reasons": reasons}, exit_code=EXIT_CONFLICT)


# --------------------------------------------------------------------------------------------------
# Companions and the plan
# --------------------------------------------------------------------------------------------------


def _onnxruntime_choices(matrix: Matrix, sw: _Software, py: str) -> list:
    if not sw.onnxruntime:
        return []
    _, spec = sw.onnxruntime
    return [o for o in matrix.onnxruntime if py in o.python and spec.contains(o.version, prereleases=True)]


def _companion_version(version: str, flavor: str, target: Target) -> str:
    # PyTorch's own indexes publish companions with the flavour as a local version (0.22.1+cu118);
    # the default (PyPI) wheels have none.
    return version if flavor == "default" else f"{version}+{flavor}"


def _pinned_version(view: _ProjectView, name: str, public: str, build: TorchBuild, py: str, target: Target) -> str:
    if view.available is not None and name in view.available.listed:
        served = _served_version(view.available, name, public, build, py, target)
        if served:
            return served
    return _companion_version(public, build.flavor, target)


def _make_plan(best: _Candidate, status: PlanStatus, notes: list[str], view: _ProjectView, target: Target,
               matrix: Matrix, request: ResolveRequest, project: ProjectSpec) -> Plan:
    rel, build, py = best.release, best.build, best.python
    sw = view.software(py)
    index_url = matrix.index_url(build.flavor)
    torch = TorchChoice(
        version=rel.version,
        flavor=build.flavor,
        local=_pinned_version(view, "torch", rel.version, build, py, target),
        index_url=index_url,
        cuda=flavor_cuda(build.flavor),
        rocm=flavor_rocm(build.flavor),
    )
    reasons: list[str] = [f"target: {_describe_target(target)} ({target.source})"]
    warnings: list[str] = list(best.fit.warnings)
    reasons.append(_why_torch(rel, build, sw, target, matrix, best.fit))
    if view.available is not None:
        reasons.append(f"limited to what {view.available.url} serves: {_served_summary(view.available, target)}")
    reasons.append(_why_python(py, rel, build, view))
    companions: dict[str, PackageChoice] = {}
    for name in ("torchvision", "torchaudio"):
        wanted = getattr(sw, name)
        paired = getattr(rel, name)
        if wanted is not None and paired:
            companions[name] = PackageChoice(name=name, version=_pinned_version(view, name, paired, build, py, target), index_url=index_url)
            if view.available is not None and name not in view.available.listed:
                warnings.append(f"{view.available.url} has no {name} page; {name} {paired} will come from the default index, "
                                "which may hold a build for another flavour")
            reasons.append(f"{name} {paired}: the release paired with torch {rel.version}")
    if sw.onnxruntime:
        ort_name, ort_choice, why = _pick_onnxruntime(matrix, sw, py, build, target)
        if ort_choice:
            companions[ort_name] = PackageChoice(name=ort_name, version=ort_choice.version)
            (warnings if target.gpu == "nvidia" and ort_name == "onnxruntime" else reasons).append(why)
        else:
            warnings.append(f"no {sw.onnxruntime[0]} release in the matrix fits Python {py}; left to the installer")
    if best.fit.mode == "minor":
        warnings.append(f"CUDA {torch.cuda} runs on driver {target.cuda_driver} only through minor-version compatibility: "
                        "PTX JIT is unavailable, and Triton/torch.compile kernels may fail (ptxas newer than the driver). "
                        "Update the driver for full support")
    (warnings if status in ("potential-incompatibility", "cpu-fallback") else reasons).extend(notes)

    deps = tuple(_requirement_text(r) for r in sw.others)
    return Plan(
        status=status,
        python=py,
        torch=torch,
        companions=companions,
        dependencies=deps,
        indexes=sw.indexes,
        system_packages=tuple(sorted(set(project.system_packages))),
        project_name=project.name,
        project=project.source,
        import_roots=project.import_roots,
        target=target,
        request=request,
        reasons=tuple(reasons),
        warnings=tuple(warnings),
        matrix_updated=matrix.updated,
    )


def _pick_onnxruntime(matrix: Matrix, sw: _Software, py: str, build: TorchBuild, target: Target):
    asked, _ = sw.onnxruntime
    choices = sorted(_onnxruntime_choices(matrix, sw, py), key=lambda o: Version(o.version), reverse=True)
    cuda = flavor_cuda(build.flavor)
    platform = f"{target.os}/{target.arch}"
    if target.gpu == "nvidia" and cuda:
        major = int(cuda.split(".")[0])
        gpu = [o for o in choices if o.gpu_cuda_major == major and platform in o.gpu_platforms]
        if gpu:
            return "onnxruntime-gpu", gpu[0], (f"onnxruntime-gpu {gpu[0].version}: its CUDA {major} build matches torch's CUDA {cuda}"
                                               + (f" (the project asked for {asked})" if asked != "onnxruntime-gpu" else ""))
        if choices:
            # Said as a warning: the user expects ONNX on the GPU, and this plan cannot give it.
            return "onnxruntime", choices[0], (
                f"onnxruntime {choices[0].version}: no onnxruntime-gpu release for Python {py} pairs with torch's "
                f"CUDA {major} on {platform}, so ONNX models run on the CPU runtime")
    if choices:
        why = f"onnxruntime {choices[0].version}: the newest release for Python {py}"
        if asked == "onnxruntime-gpu":
            why += " (onnxruntime-gpu needs an NVIDIA target; using the CPU runtime)"
        return "onnxruntime", choices[0], why
    return "onnxruntime", None, ""


def _why_torch(rel: TorchRelease, build: TorchBuild, sw: _Software, target: Target, matrix: Matrix, fit: _Fit) -> str:
    bounds = f" within torch{sw.torch}" if str(sw.torch) else ""
    text = f"torch {rel.version}{'' if build.flavor == 'default' else '+' + build.flavor}: the newest release{bounds}"
    kind = flavor_kind(build.flavor)
    if kind == "cuda":
        cuda = flavor_cuda(build.flavor)
        toolkit = matrix.cuda_toolkit(cuda or "")
        floor = _os_floor(toolkit, target)
        text += f"; CUDA {cuda} is the highest its builds offer that"
        if not target.cuda_driver:
            text += " the target allows"
        elif fit.mode == "minor":
            minor = matrix.minor_compat(int((cuda or "0").split(".")[0]))
            minor_floor = _os_floor(minor, target)
            text += (f" driver {target.cuda_driver} runs through minor-version compatibility (needs >= {minor_floor}; "
                     f">= {floor} for full support)")
        else:
            text += f" driver {target.cuda_driver} runs (needs >= {floor})"
        if target.compute_capabilities:
            text += f", with kernels for sm_{'/'.join(c.replace('.', '') for c in target.compute_capabilities)}"
    elif kind == "rocm":
        text += f"; ROCm {flavor_rocm(build.flavor)} lists {', '.join(target.gpu_archs) or 'the GPU'}"
    elif kind == "cpu":
        text += "; CPU build (no GPU on the target)" if target.gpu in ("none",) else "; CPU build"
    else:
        text += "; the PyPI wheel (MPS on Apple Silicon)" if target.os == "macos" else "; the PyPI wheel"
    if sw.index_flavor == build.flavor:
        text += f"; restricted to {sw.index_flavor} by {sw.index_origin}"
    if sw.pinned_flavor == build.flavor:
        text += f"; the project pins +{sw.pinned_flavor}"
    return text


def _why_python(py: str, rel: TorchRelease, build: TorchBuild, view: _ProjectView) -> str:
    if view.request.python:
        return f"Python {py}: pinned with --python"
    parts = [f"torch {rel.version} ships {min(rel.python_for(build), key=Version)}–{max(rel.python_for(build), key=Version)}"]
    if view.requires_python:
        parts.append(f"requires-python {view.requires_python}")
    return f"Python {py}: the highest that every choice allows ({'; '.join(parts)})"


def _requirement_text(req: Requirement) -> str:
    text = req.name
    if req.extras:
        text += "[" + ",".join(sorted(req.extras)) + "]"
    if req.url:
        return f"{text} @ {req.url}"
    return text + str(req.specifier)

"""Resolve: intersect the project's constraints with the matrix and the target's hardware into a Plan.

Pure: no subprocess, network, Docker or files. Inputs are values (ProjectSpec, Target, Matrix,
ResolveRequest); the output is a Plan that records why each choice was made, or a ResolveConflict.

The rule, in order (docs/resolver.md has the long form):
1. candidates are (torch release, build flavour, Python) for the target OS and CPU architecture;
2. software filter: the project's torch/torchvision/torchaudio specifiers (through the pairing table),
   requires-python, the release's Pythons, a --python pin, project-declared PyTorch indexes, local pins;
3. hardware filter: CUDA driver floors and SASS for every GPU; ROCm gfx lists; macOS default; CPU;
4. highest torch, then highest CUDA/ROCm, then highest Python every choice allows;
5. the CUDA rule (--cuda-compat): auto (default) allows minor-version compatibility where the wheel carries
   SASS for every GPU, strict needs the toolkit's own driver, minor allows minor-version compatibility; at
   equal torch a build the driver runs under its toolkit's own floor wins;
6. hardware over software bounds when they can never meet (potential-incompatibility), else CPU;
7. contradictory software constraints are a conflict (exit code 3).
This module composes the rule; its parts are envbuilder.resolve.target (target_for), .software (the project
per target and Python), .candidates (the filters and the pick) and .explain (reasons, hints, conflicts).
Must not import docker, proc, host probes, urllib.request or the CLI.
"""

from __future__ import annotations

import re

from packaging.version import Version

from envbuilder.errors import ResolveConflict, UsageError
from envbuilder.notices import Notice
from envbuilder.project.spec import TORCH_COMPANIONS, ProjectSpec
from envbuilder.resolve.candidates import (Candidate, Fit, companion_choices, flavor_violations, hardware_fit,
                                           onnxruntime_choices, pairing_violations, pick, pythons_newest_first, served_version,
                                           software_ok, torch_bound_violations)
from envbuilder.resolve.explain import (conflict, dependents_conflict, describe_target, requirement_text, served_summary,
                                        upgrade_hint, why_overridden, why_python, why_torch)
from envbuilder.resolve.matrix import Matrix, TorchBuild, TorchRelease, flavor_cuda, flavor_kind, flavor_rocm
from envbuilder.resolve.plan import PackageChoice, Plan, PlanStatus, ResolveRequest, Target, TorchChoice
from envbuilder.resolve.served import IndexSnapshot
from envbuilder.resolve.direct import direct_wheel_plan
from envbuilder.resolve.python_fit import InstallRequest, PythonFit, target_platform
from envbuilder.resolve.software import ProjectView, Software, project_reasons

_PYTHON_RE = re.compile(r"^3\.\d{1,2}$")


def resolve(project: ProjectSpec, target: Target, matrix: Matrix, request: ResolveRequest = ResolveRequest(),
            available: IndexSnapshot | None = None, *, torch_index_url: str | None = None,
            python_fit: PythonFit | None = None) -> Plan:
    """Pick Python, the torch build and companions for the project on the target. Raises ResolveConflict.

    With `available` (a snapshot of the torch index or wheelhouse the build will use), only builds that index
    really serves are candidates, and the plan pins the exact version strings it serves. torch_index_url (or the
    snapshot's URL) is the mirror that replaces the flavour's PyTorch index (--torch-index-url): the plan names it.
    With `python_fit` (the installability check of a first plan's install_requests, folded by python_fit), the plan
    takes the highest Python on which the whole project installs, and torch-dependent packages that cannot
    install alongside the plan's torch are a conflict.
    """
    if request.python and not _PYTHON_RE.match(request.python):
        raise UsageError("request-invalid", f"--python {request.python!r} is not X.Y", "pass e.g. --python 3.11")
    if request.flavor:
        try:
            flavor_kind(request.flavor)
        except ValueError:
            raise UsageError("request-invalid", f"--flavor {request.flavor!r} is not a flavour",
                                  "use cpu, default, cuNNN (cu128) or rocmX.Y (rocm6.3)") from None
    view = ProjectView(project, target, request, available, python_fit)
    direct = direct_wheel_plan(view, matrix)  # a torch wheel URL outside the matrix: nothing left to choose
    if direct is not None:
        return direct
    platform_builds = [(rel, b) for rel in matrix.releases_newest_first for b in rel.builds
                       if b.os == target.os and b.arch == target.arch]
    if not platform_builds:
        raise ResolveConflict("no-builds-for-platform", f"the matrix has no torch builds for {target.os}/{target.arch}",
                              "check --target-os/--target-arch, or update the matrix (`envbuilder compat update`)")

    soft: list[tuple[TorchRelease, TorchBuild, str]] = []
    for rel, build in platform_builds:
        for py in pythons_newest_first(rel.python_for(build)):
            if software_ok(rel, build, py, view, matrix, ignore_torch_bounds=False):
                soft.append((rel, build, py))
    if not soft:
        raise conflict(view, platform_builds, matrix)

    notes: list[Notice] = []
    status: PlanStatus = "ok"
    chosen = [Candidate(r, b, py, fit) for r, b, py in soft if (fit := hardware_fit(b, target, matrix, request.cuda_compat)).ok]
    if chosen:
        best = pick(chosen)
        torch_reason = why_torch(best, view, platform_builds, matrix)
    else:
        chosen, status, notes = _beyond_bounds(view, platform_builds, soft, target, matrix)
        best = pick(chosen)
        overridden = why_overridden(best, view, soft, matrix) if status == "potential-incompatibility" else ""
        torch_reason = why_torch(best, view, platform_builds, matrix, overridden=overridden)
    if python_fit is not None and python_fit.conflict:
        raise dependents_conflict(python_fit.conflict, best, overridden=status == "potential-incompatibility")
    if status == "ok" and best.fit.mode == "minor":
        status = "minor-version-compat"
    mirror = available.url if available is not None and not available.find_links else None
    index_url = torch_index_url or mirror or matrix.index_url(best.build.flavor)
    return _make_plan(best, status, [torch_reason], notes, view, matrix, index_url)

def _beyond_bounds(view, platform_builds, soft, target, matrix) -> tuple[list[Candidate], PlanStatus, list[Notice]]:
    """Software can be met, but never with this hardware: prefer a build that runs, else the CPU."""
    notes: list[Notice] = []
    soft_versions = {Version(r.version) for r, _, _ in soft}
    runnable: list[Candidate] = []
    for rel, build in platform_builds:
        fit = hardware_fit(build, target, matrix, view.request.cuda_compat)
        if not fit.ok:
            continue
        for py in pythons_newest_first(rel.python_for(build)):
            if software_ok(rel, build, py, view, matrix, ignore_torch_bounds=True):
                runnable.append(Candidate(rel, build, py, fit))
                break
    if runnable and target.gpu != "none":
        ordered = sorted({Version(r.version) for r, _ in platform_builds})
        index = {v: i for i, v in enumerate(ordered)}
        soft_idx = [index[v] for v in soft_versions]

        def distance(c: Candidate) -> int:
            i = index[Version(c.release.version)]
            return min(abs(i - s) for s in soft_idx)

        nearest = min(distance(c) for c in runnable)
        runnable = [c for c in runnable if distance(c) == nearest]
        best = pick(runnable)
        broken = torch_bound_violations(best.release, best.build, view.software(best.python), matrix)
        notes.append(Notice("outside-project-bounds", f"no build within the project's bounds runs on this {target.gpu.upper()} target; "
                     f"chose the nearest release that does, which violates {'; '.join(broken)}"))
        return runnable, "potential-incompatibility", notes

    cpu = [(r, b, py) for r, b, py in soft if flavor_kind(b.flavor) == "cpu"]
    if not cpu:
        # The project pins a GPU flavour (an index or +cuXXX) that cannot run here: running on the CPU beats
        # not running, so the flavour restriction gives way, the version bounds stay.
        cpu = [(rel, b, py) for rel, b in platform_builds if flavor_kind(b.flavor) == "cpu"
               for py in pythons_newest_first(rel.python_for(b))
               if software_ok(rel, b, py, view, matrix, ignore_torch_bounds=True)
               and not pairing_violations(rel, view.software(py), matrix)]
        if cpu:
            broken = flavor_violations(cpu[0][1], view.software(cpu[0][2]))
            if target.gpu == "none" and "gpu" in target.declared:
                # --gpu none is the user's choice, not a fallback: the project's GPU flavour simply does not apply.
                return ([Candidate(r, b, py, Fit(True)) for r, b, py in cpu], "ok",
                        [Notice("cpu-fallback", f"--gpu none asks for the CPU build, so it replaces {'; '.join(broken)}")])
            notes.append(Notice("cpu-fallback", f"the CPU build violates {'; '.join(broken)}"))
    hint = upgrade_hint(view, soft, platform_builds, target, matrix)
    if not cpu:
        raise ResolveConflict("no-runnable-build", f"no torch build within the project's bounds runs on {describe_target(target)}, "
                              "and there is no CPU build to fall back to", hint or None)
    notes.insert(0, Notice("cpu-fallback", f"no GPU build can run on {describe_target(target)}; falling back to the CPU build"))
    if hint:
        notes.append(Notice("gpu-hint", hint))
    return [Candidate(r, b, py, Fit(True)) for r, b, py in cpu], "cpu-fallback", notes

def _companion_version(version: str, flavor: str, target: Target) -> str:
    # PyTorch's own indexes publish companions with the flavour as a local version (0.22.1+cu118);
    # the default (PyPI) wheels have none.
    return version if flavor == "default" else f"{version}+{flavor}"

def _pinned_version(view: ProjectView, name: str, public: str, build: TorchBuild, py: str, target: Target) -> str:
    if view.available is not None and name in view.available.listed:
        served = served_version(view.available, name, public, build, py, target)
        if served:
            return served
    return _companion_version(public, build.flavor, target)

def _pick_companion(view: ProjectView, name: str, best: Candidate, matrix: Matrix) -> tuple[str | None, str, list[Notice]]:
    """The newest `name` release built for the chosen torch that the project allows (and the index serves), as the
    version string to pin; with the reason and any warnings."""
    rel, build, py = best.release, best.build, best.python
    sw = view.software(py)
    spec = getattr(sw, name)
    allowed = companion_choices(rel, name, sw, matrix)
    # Empty only past the project's bounds (potential-incompatibility), whose warning already names the bound.
    allowed = allowed or [v for v in rel.companions(name) if not matrix.is_yanked(name, v)]
    if not allowed:
        return None, "", [Notice("companion-missing", f"no {name} release is built for torch {rel.version}; "
                                 f"{name} is left out of the plan")]
    warnings: list[Notice] = []
    listed = view.available is not None and name in view.available.listed
    if listed:
        allowed = [v for v in allowed if served_version(view.available, name, v, build, py, view.target)] or allowed
    elif view.available is not None:
        warnings.append(Notice("companion-from-default-index", f"{view.available.url} has no {name} page; {name} {allowed[-1]} will come from the default index, "
                        "which may hold a build for another flavour"))
    version = allowed[-1]
    built = rel.companions(name)
    why = f"{name} {version}: built for torch {rel.version}"
    if str(spec):
        why += f", within {name}{spec}"
    if len(built) > 1:
        why += f" (torch {rel.version} has {', '.join(built)})"
    if matrix.is_yanked(name, version):
        warnings.append(Notice("companion-yanked", f"{name} {version} is yanked on PyPI: installers take it only because the project pins it exactly"))
    return _pinned_version(view, name, version, build, py, view.target), why, warnings

def _make_plan(best: Candidate, status: PlanStatus, torch_reasons: list[str], notes: list[str], view: ProjectView,
               matrix: Matrix, index_url: str) -> Plan:
    rel, build, py = best.release, best.build, best.python
    project, request, target = view.project, view.request, view.target
    sw = view.software(py)
    torch = TorchChoice(
        version=rel.version,
        flavor=build.flavor,
        local=_pinned_version(view, "torch", rel.version, build, py, target),
        index_url=index_url,
        cuda=flavor_cuda(build.flavor),
        rocm=flavor_rocm(build.flavor),
    )
    reasons: list[str] = [f"target: {describe_target(target)} ({target.source})"]
    warnings: list[Notice] = list(best.fit.warnings)
    reasons += torch_reasons
    if view.available is not None:
        reasons.append(f"limited to what {view.available.url} serves: {served_summary(view.available, target)}")
    reasons.append(why_python(py, rel, build, view))
    if view.python_fit is not None:
        warnings += [Notice("dependencies-not-checked", why) for why in view.python_fit.warnings]
        if view.python_fit.python is None:  # nothing installs everything: the matrix's Python stands, and the build may fail
            warnings += [Notice("dependencies-do-not-install", f"{why}; kept Python {py}, where the image build will "
                                "likely fail") for why in view.python_fit.reasons]
    reasons += project_reasons(project, request)
    companions: dict[str, PackageChoice] = {}
    for name in TORCH_COMPANIONS:
        if getattr(sw, name) is None:
            continue
        version, why, notes_for = _pick_companion(view, name, best, matrix)
        warnings += notes_for
        if version:
            companions[name] = PackageChoice(name=name, version=version, index_url=index_url)
            reasons.append(why)
    if sw.onnxruntime:
        ort_name, ort_choice, why = _pick_onnxruntime(matrix, sw, py, build, target)
        if ort_choice:
            companions[ort_name] = PackageChoice(name=ort_name, version=ort_choice.version)
            if target.gpu == "nvidia" and ort_name == "onnxruntime":
                warnings.append(Notice("onnxruntime-cpu", why))
            else:
                reasons.append(why)
        else:
            warnings.append(Notice("onnxruntime-unavailable", f"no {sw.onnxruntime[0]} release in the matrix fits Python {py}; left to the installer"))
    if best.fit.mode == "minor":
        warnings.append(Notice("minor-version-compat", f"CUDA {torch.cuda} runs on driver {target.cuda_driver} only through minor-version compatibility: "
                        "PTX JIT is unavailable, and Triton/torch.compile kernels may fail (ptxas newer than the driver). "
                        "Update the driver for full support"))
    if status in ("potential-incompatibility", "cpu-fallback"):
        warnings += notes
    else:
        reasons += [note.message for note in notes]

    deps = tuple(requirement_text(r) for r in sw.others)
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
        build_requires_torch=project.build_requires_torch,
        install=project.install,
    )

def _pick_onnxruntime(matrix: Matrix, sw: Software, py: str, build: TorchBuild, target: Target):
    asked, _ = sw.onnxruntime
    choices = sorted(onnxruntime_choices(matrix, sw, py), key=lambda o: Version(o.version), reverse=True)
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


def plan_pins(plan: Plan) -> tuple[str, ...]:
    """The torch-family versions the plan imposes, public part only ("torch==2.7.1", "torchvision==0.22.1")."""
    pins = [f"torch=={plan.torch.version}"]
    pins += [f"{name}=={plan.companions[name].version.split('+')[0]}" for name in TORCH_COMPANIONS if name in plan.companions]
    return tuple(pins)


def install_requests(project: ProjectSpec, plan: Plan, matrix: Matrix, available: IndexSnapshot | None = None, *,
                     index_url: str | None = None, extra_index_urls: tuple[str, ...] = (),
                     find_links: tuple[str, ...] = ()) -> tuple[InstallRequest, ...]:
    """What the installability check asks about a plan: the project's whole dependency set on each Python the
    plan's torch build allows, highest first; Pythons whose set is the same (markers rarely differ) share one
    request. Empty when there is nothing to check: no dependencies besides the torch family, or a torch wheel
    named by URL (its filename fixes the Python).

    The torch family is pinned by version only (plan_pins), as constraints: uv then takes torch from PyPI, of the
    same version, when a dependent (torchtext, xformers, a package requiring torch==X) pulls it in. A release's
    builds on PyTorch's own index declare the same version and Requires-Python as its PyPI wheel, and that index
    may be unreachable from where envbuilder runs (a mirror, a proxy, an air gap) while PyPI is not, so the
    torch index is never asked here. The configured indexes are --index-url/--extra-index-url/--find-links and
    the project's own (plan.indexes).
    """
    target, request = plan.target, plan.request
    rel = matrix.release(plan.torch.version)
    build = next((b for b in rel.builds if b.flavor == plan.torch.flavor and b.os == target.os and b.arch == target.arch),
                 None) if rel is not None else None
    if plan.torch.url or build is None:
        return ()
    try:
        target_platform(target.os, target.arch)
    except ValueError:
        return ()
    view = ProjectView(project, target, request, available)
    pythons = [py for py in pythons_newest_first(rel.python_for(build))
               if software_ok(rel, build, py, view, matrix, ignore_torch_bounds=True)]
    primary, extras, links = index_url, list(extra_index_urls), list(find_links)
    for decl in plan.indexes:
        if decl.kind == "find-links":
            links.append(decl.url)
        elif decl.kind == "index-url" and primary is None:
            primary = decl.url
        elif decl.kind != "conda":
            extras.append(decl.url)
    groups: list[tuple[tuple[str, ...], tuple[str, ...], list[str]]] = []
    for py in pythons:
        requirements, constraints = view.install_set(py)
        if groups and groups[-1][:2] == (requirements, constraints):
            groups[-1][2].append(py)
        else:
            groups.append((requirements, constraints, [py]))
    if not any(requirements for requirements, _, _ in groups):
        return ()
    pins = plan_pins(plan)
    return tuple(InstallRequest(requirements, tuple(group), os=target.os, arch=target.arch, pins=pins + constraints,
                                index_url=primary, extra_index_urls=tuple(dict.fromkeys(extras)),
                                find_links=tuple(dict.fromkeys(links)))
                 for requirements, constraints, group in groups)

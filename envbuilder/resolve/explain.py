"""Explanations: why the plan chose what it chose, what would let the GPU be used, and why nothing fits.

Words only; the decisions are made in envbuilder.resolve.resolver and .candidates. Pure: must not import
subprocess, urllib.request, docker or the CLI.
"""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.version import Version

from envbuilder.errors import ResolveConflict
from envbuilder.project.spec import TORCH_COMPANIONS
from envbuilder.resolve.candidates import (Candidate, companion_choices, dotted, driver_floor, hardware_fit, has_sass, onnxruntime_choices, os_floor, pairing_violations,
                                           python_ok, sass_fit, software_ok, torch_bound_violations)
from envbuilder.resolve.matrix import Matrix, TorchBuild, TorchRelease, flavor_cuda, flavor_kind, flavor_rocm, split_local
from envbuilder.resolve.plan import Target
from envbuilder.resolve.served import IndexSnapshot, platform_matches
from envbuilder.resolve.software import ProjectView, Software


def upgrade_hint(view, soft, platform_builds, target: Target, matrix: Matrix) -> str:
    """What would let the GPU be used: a newer driver, or (when the driver already runs a build with kernels for
    this GPU) the constraint that excludes that build. Never a driver the target already has."""
    if target.gpu == "nvidia":
        return _nvidia_hint(view, soft, platform_builds, target, matrix)
    if target.gpu == "amd":
        fits = sorted(((Version(rel.version), b.flavor) for rel, b in platform_builds
                       if flavor_kind(b.flavor) == "rocm" and set(target.gpu_archs) <= set(matrix.rocm_gfx(b))), reverse=True)
        if fits:
            return f"torch {fits[0][0]} ({fits[0][1]}) supports {', '.join(target.gpu_archs)}; relax the project's torch bounds to use the GPU"
        return f"no ROCm build of torch lists {', '.join(target.gpu_archs)}"
    return ""

def _nvidia_hint(view, soft, platform_builds, target: Target, matrix: Matrix) -> str:
    relaxed = target.model_copy(update={"cuda_driver": None})
    pool = [(rel, build) for rel, build, _ in soft]
    outside = ""
    if not any(sass_fit(b, relaxed, jit_allowed=True, matrix=matrix)[0] for _, b in pool if flavor_kind(b.flavor) == "cuda"):
        pool = list(platform_builds)
        outside = " (outside the project's bounds)"
    options: list[tuple[Version, str, TorchBuild, TorchRelease]] = []  # (torch version, driver floor, build, release)
    for rel, build in pool:
        if flavor_kind(build.flavor) != "cuda" or not sass_fit(build, relaxed, jit_allowed=True, matrix=matrix)[0]:
            continue
        floor = driver_floor(build, target, matrix)
        if floor:
            options.append((Version(rel.version), floor, build, rel))
    if not options:
        return "no torch build in the matrix carries kernels for this GPU's compute capability"
    driver = target.cuda_driver
    runs_now = [o for o in options if driver and dotted(driver) >= dotted(o[1])]
    if runs_now:
        # The driver is not what stands in the way: name what excludes a build it already runs.
        version, _, build, rel = max(runs_now, key=lambda o: (o[0], Version(flavor_cuda(o[2].flavor) or "0")))
        blockers = [f"--flavor {view.request.flavor}"] if view.request.flavor and view.request.flavor != build.flavor else []
        blockers += torch_bound_violations(rel, build, view.software(soft[0][2]), matrix)
        what = " and ".join(blockers) or "the project's constraints"
        return f"driver {driver} already runs torch {version} ({build.flavor}) on this GPU; to use it, relax {what}"
    lowest = min(options, key=lambda o: (dotted(o[1]), [-p for p in o[0].release]))
    newest = min((o for o in options if o[0] == max(x[0] for x in options)), key=lambda o: dotted(o[1]))
    hint = f"update the NVIDIA driver to >= {lowest[1]} to run torch {lowest[0]} ({lowest[2].flavor}){outside} on the GPU"
    if newest[0] != lowest[0]:
        hint += f", or >= {newest[1]} for torch {newest[0]} ({newest[2].flavor})"
    if view.request.cuda_compat == "strict" and any(
            hardware_fit(b, target, matrix, "auto").ok for _, b in pool if flavor_kind(b.flavor) == "cuda"):
        hint += "; or pass --cuda-compat auto (minor-version compatibility: the wheel's SASS covers this GPU)"
    return hint

def describe_target(target: Target) -> str:
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

def served_summary(available: IndexSnapshot, target: Target) -> str:
    versions = sorted({w.version for w in available.files("torch") if platform_matches(w.platforms, target.os, target.arch)}, key=Version)
    return f"torch {', '.join(versions[-6:])}" if versions else f"no torch wheel for {target.os}/{target.arch}"

def mirror_lacks_python(view: ProjectView, platform_builds) -> ResolveConflict | None:
    """The conflict when the mirror's torch wheels are all for Pythons the project cannot use, naming them.

    Said before building: otherwise the installer fails mid-build on a wheel with another cpXY tag."""
    wheels = [w for w in view.available.files("torch") if platform_matches(w.platforms, view.target.os, view.target.arch)]
    if not wheels or any(not w.pythons for w in wheels):
        return None  # nothing served, or a wheel for any Python: not a question of Python
    served = sorted({py for w in wheels for py in w.pythons}, key=Version)
    req_py = view.requires_python
    wanted = [view.request.python] if view.request.python else sorted(
        {py for rel, b in platform_builds for py in rel.python_for(b) if not req_py or req_py.contains(f"{py}.99")}, key=Version)
    if not wanted or set(served) & set(wanted):
        return None
    asked = "--python, or the --base-image's Python" if view.request.python else f"requires-python {req_py}"
    reason = (f"{view.available.url} serves torch for Python {', '.join(served)} only; the plan needs Python "
              f"{', '.join(wanted[-4:])} ({asked})")
    return ResolveConflict("index-has-no-fit", reason,
                           f"add cp{wanted[-1].replace('.', '')} torch wheels to the mirror, or build for Python "
                           f"{served[-1]} (--python {served[-1]} with a --base-image of that Python)",
                           context={"reasons": [reason], "mirror_pythons": served})

def conflict(view: ProjectView, platform_builds, matrix: Matrix) -> ResolveConflict:
    reasons: list[str] = []
    if view.available is not None:
        without = ProjectView(view.project, view.target, view.request)
        if any(software_ok(rel, b, py, without, matrix, ignore_torch_bounds=False)
               for rel, b in platform_builds for py in rel.python_for(b)):
            lacking = mirror_lacks_python(view, platform_builds)
            if lacking is not None:
                return lacking
            reasons.append(f"{view.available.url} serves {served_summary(view.available, view.target)}, "
                           "and none of it fits the project's constraints and Python")
            return ResolveConflict("index-has-no-fit", "; ".join(reasons),
                                   "point --torch-index-url at an index with a fitting build, or relax the project's torch bounds",
                                   context={"reasons": reasons})
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
            pairs_ok = [rel for rel in versions if rel.version in in_torch and not pairing_violations(rel, sw, matrix)]
            if not pairs_ok:
                for name in TORCH_COMPANIONS:
                    spec = getattr(sw, name)
                    if spec is not None:
                        built = sorted({v for r in versions if r.version in in_torch for v in r.companions(name)}, key=Version)
                        reasons.append(f"torch{sw.torch} pairs with {name} {', '.join(built[-6:]) or 'none'}, "
                                       f"but the project asks {name}{spec}")
            py_for_torch = sorted({py for rel, b in platform_builds if rel.version in in_torch for py in rel.python_for(b)}, key=Version)
            if not set(py_for_torch) & set(allowed_py):
                span = f"{py_for_torch[0]}–{py_for_torch[-1]}" if py_for_torch else "none"
                reasons.append(f"requires-python {req_py or '(any)'}{f' with --python {view.request.python}' if view.request.python else ''} "
                               f"collides with torch{sw.torch}, whose wheels support Python {span}")
            flavors = {b.flavor for rel, b in platform_builds if rel.version in in_torch}
            pinned = [(split_local(spec)[1], f"the {name} pin") for name in TORCH_COMPANIONS if (spec := getattr(sw, name)) is not None]
            clashing = sorted({f"+{flavor} ({origin})" for flavor, origin in pinned if flavor and sw.pinned_flavor
                               and flavor != sw.pinned_flavor})
            if clashing:
                reasons.append(f"the torch pin asks for +{sw.pinned_flavor}, but {', '.join(clashing)} is another build; "
                               "torch and its companions must come from one flavour")
            for flavor, origin in [(sw.pinned_flavor, "the torch pin"), (sw.index_flavor, sw.index_origin), (view.request.flavor, "--flavor"), *pinned]:
                if flavor and flavor not in flavors:
                    reasons.append(f"{origin} asks for {flavor}, which torch{sw.torch} does not ship for {view.target.os}/{view.target.arch}")
            if sw.onnxruntime and not any(onnxruntime_choices(matrix, sw, py) for py in allowed_py):
                reasons.append(f"{sw.onnxruntime[0]}{sw.onnxruntime[1]} has no release for Python {', '.join(allowed_py)}")
    if not reasons:
        reasons.append("the project's torch, companion and Python constraints have no common solution")
    return ResolveConflict("conflict", "; ".join(reasons), "relax one of the colliding constraints in the project (or the --python/--flavor you passed)",
                           context={"reasons": reasons})

def why_torch(best: Candidate, view: ProjectView, platform_builds, matrix: Matrix, *, overridden: str = "") -> str:
    """The torch reason: what the choice is within the project's bounds (and what rules out newer releases), or,
    when hardware moved it outside them, which bound it overrides and why; then why this build runs here."""
    rel, build = best.release, best.build
    sw = view.software(best.python)
    text = f"torch {rel.version}{'' if build.flavor == 'default' else '+' + build.flavor}: "
    if overridden:
        text += overridden
    else:
        spec = str(sw.torch)
        pinned = spec and all(item.operator in ("==", "===") and "*" not in item.version for item in sw.torch)
        text += f"the release torch{spec} pins" if pinned else f"the newest release{f' within torch{spec}' if spec else ''}"
        ruled_out = newer_ruled_out(best, view, platform_builds, matrix)
        if ruled_out:
            text += f" that fits; newer ones are ruled out: {'; '.join(ruled_out)}"
    return text + build_detail(best, sw, view, matrix)

def why_overridden(best: Candidate, view: ProjectView, soft, matrix: Matrix) -> str:
    """For a potential incompatibility: the bounds the choice breaks, and the hardware reason no build inside runs."""
    broken = torch_bound_violations(best.release, best.build, view.software(best.python), matrix)
    newest = max((rel for rel, _, _ in soft), key=lambda r: Version(r.version))
    why = sorted({hardware_fit(b, view.target, matrix, view.request.cuda_compat).why_not
                  for rel, b, _ in soft if rel.version == newest.version} - {""})
    return (f"overrides the project's {'; '.join(broken)}, because no build of torch {newest.version} (the newest it allows) "
            f"runs on {describe_target(view.target)} ({'; '.join(why[:2])}); torch {best.release.version} is the nearest "
            "release that does")

def newer_ruled_out(best: Candidate, view: ProjectView, platform_builds, matrix: Matrix) -> list[str]:
    """Why releases newer than the choice, inside the project's torch bounds, were not chosen: a companion that
    caps torch, another software constraint, or the hardware."""
    sw = view.software(best.python)
    newer = sorted({rel.version: rel for rel, _ in platform_builds
                    if Version(rel.version) > Version(best.release.version) and sw.torch.contains(rel.version, prereleases=True)
                    }.values(), key=lambda r: Version(r.version))
    caps: dict[str, str] = {}
    for rel in newer:
        for name in TORCH_COMPANIONS:
            spec = getattr(sw, name)
            if spec is not None and name not in caps and not companion_choices(rel, name, sw, matrix):
                caps[name] = (f"{name}{spec} caps torch (torch {rel.version} pairs with "
                              f"{name} {', '.join(rel.companions(name)) or 'none'})")
    reasons = list(caps.values())
    uncapped = [rel for rel in newer if not pairing_violations(rel, sw, matrix)]
    if uncapped:
        # The next release up is the one a reader asks about first ("why not 2.8?"), so it is the example.
        span = f"{uncapped[0].version}" + (f"–{uncapped[-1].version}" if len(uncapped) > 1 else "")
        reasons.append(f"torch {span}: {_why_not_release(uncapped[0], view, platform_builds, matrix)}")
    return reasons

def _why_not_release(rel: TorchRelease, view: ProjectView, platform_builds, matrix: Matrix) -> str:
    target = view.target
    kind = {"nvidia": "cuda", "amd": "rocm"}.get(target.gpu, "default" if target.os == "macos" else "cpu")
    builds = [b for r, b in platform_builds if r.version == rel.version]
    fitting = [b for b in builds if any(software_ok(rel, b, py, view, matrix, ignore_torch_bounds=False) for py in rel.python_for(b))]
    if not fitting:
        sw = view.software(max(rel.python, key=Version))
        wanted = [(f, origin) for f, origin in ((view.request.flavor, "--flavor"), (sw.pinned_flavor, "the torch pin"),
                                                (sw.index_flavor, sw.index_origin)) if f]
        for flavor, origin in wanted:
            if flavor not in {b.flavor for b in builds}:
                return f"no {flavor} build (as {origin} asks)"
        if view.available is not None:
            return f"{view.available.url} serves no fitting build of torch {rel.version} for this target"
        return "no build for the project's Python (requires-python, --python) and other constraints"
    runs = [b for b in fitting if flavor_kind(b.flavor) == kind]
    if not runs:
        return f"no {kind.upper() if kind != 'default' else 'PyPI'} build that fits"
    why = sorted({hardware_fit(b, target, matrix, view.request.cuda_compat).why_not for b in runs} - {""})
    return f"the builds of {rel.version} do not run on {describe_target(target)} ({'; '.join(why[:2])})"

def build_detail(best: Candidate, sw: Software, view: ProjectView, matrix: Matrix) -> str:
    """Why this build of the release: which CUDA rule lets the driver run it, the kernels, the ROCm list."""
    build, fit, target = best.build, best.fit, view.target
    kind = flavor_kind(build.flavor)
    text = ""
    if kind == "cuda":
        cuda = flavor_cuda(build.flavor) or "0"
        floor = os_floor(matrix.cuda_toolkit(cuda), target)
        text += f"; CUDA {cuda} is the highest its builds offer that"
        if not target.cuda_driver:
            text += " the target allows"
        elif fit.mode == "minor":
            minor_floor = os_floor(matrix.minor_compat(int(cuda.split(".")[0])), target)
            rule = ("--cuda-compat auto: the wheel carries SASS for every GPU, so no PTX JIT is needed"
                    if view.request.cuda_compat == "auto" else "--cuda-compat minor")
            text += (f" driver {target.cuda_driver} runs through minor-version compatibility ({rule}; needs >= {minor_floor}; "
                     f">= {floor} for full support)")
        else:
            text += f" driver {target.cuda_driver} runs under the toolkit's own minimum driver (needs >= {floor})"
        if target.compute_capabilities:
            sass = [cc for cc in target.compute_capabilities if has_sass(build, cc)]
            text += f", with kernels for sm_{'/'.join(c.replace('.', '') for c in target.compute_capabilities)}"
            carried = sorted({s for cc in sass for s in build.sm if s.split('.')[0] == cc.split('.')[0] and Version(s) <= Version(cc)}, key=Version)
            compatible = [s for s in carried if s not in target.compute_capabilities]
            if compatible:
                text += f" (SASS for sm_{'/'.join(s.replace('.', '') for s in compatible)} runs on later GPUs of the same major)"
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

def why_python(py: str, rel: TorchRelease, build: TorchBuild, view: ProjectView) -> str:
    """Why this Python: a --python pin, or the highest the torch build and requires-python allow, stepped down
    to the highest on which the whole dependency set installs when the installability check found one."""
    fit = view.python_fit
    # python_fit words its reason "Python 3.11: <why>"; the part after the colon joins the matrix's part here.
    installs = fit.reasons[0].partition(": ")[2] if fit is not None and fit.python == py and fit.reasons else ""
    if view.request.python:
        return f"Python {py}: pinned with --python" + (f"; {installs}" if installs else "")
    parts = [f"torch {rel.version} ships {min(rel.python_for(build), key=Version)}–{max(rel.python_for(build), key=Version)}"]
    if view.requires_python:
        parts.append(f"requires-python {view.requires_python}")
    stepped_down = any(Version(p) > Version(py) and python_ok(p, view, view.software(p), with_fit=False)
                       for p in rel.python_for(build))
    if installs and stepped_down:
        return f"Python {py}: {installs} ({'; '.join(parts)})"
    return f"Python {py}: the highest that every choice allows ({'; '.join(parts)})" + (f", and {installs}" if installs else "")


def dependents_conflict(conflict_text: str, best: Candidate, overridden: bool) -> ResolveConflict:
    """The plan's torch cannot install alongside packages that depend on another torch (torchtext, xformers...)."""
    torch = best.release.version
    if overridden:
        message = (f"this hardware moves torch off the project's pin to {torch}, and packages that depend on torch "
                   f"cannot install alongside it: {conflict_text}")
        hint = (f"move those packages to releases built for torch {torch}, or resolve for a target that runs the "
                "torch they need (--gpu, --cuda-driver)")
    else:
        message = f"packages that depend on torch cannot install alongside torch {torch}: {conflict_text}"
        hint = "pin torch in the project to the release they need, or move them to releases built for torch " + torch
    return ResolveConflict("torch-dependents-conflict", message, hint, context={"reasons": [conflict_text]})

def requirement_text(req: Requirement) -> str:
    text = req.name
    if req.extras:
        text += "[" + ",".join(sorted(req.extras)) + "]"
    if req.url:
        return f"{text} @ {req.url}"
    return text + str(req.specifier)

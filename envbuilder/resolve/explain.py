"""Explanations: why the plan chose what it chose, what would let the GPU be used, and why nothing fits.

Words only; the decisions are made in envbuilder.resolve.resolver and .candidates. Pure: must not import
subprocess, urllib.request, docker or the CLI.
"""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.version import Version

from envbuilder.errors import ResolveConflict
from envbuilder.resolve.candidates import (Fit, dotted, driver_floor, onnxruntime_choices, os_floor, pairing_violations,
                                           sass_fit, software_ok)
from envbuilder.resolve.matrix import Matrix, TorchBuild, TorchRelease, flavor_cuda, flavor_kind, flavor_rocm
from envbuilder.resolve.plan import Target
from envbuilder.resolve.served import IndexSnapshot, platform_matches
from envbuilder.resolve.software import ProjectView, Software


def upgrade_hint(view, soft, platform_builds, target: Target, matrix: Matrix) -> str:
    """The driver (or other change) that would let the project's newest allowed release use the GPU;
    when nothing within the project's bounds could, what outside them would."""
    if target.gpu == "nvidia":
        options: list[tuple[Version, str, str]] = []  # (torch version, driver floor, flavour)
        relaxed = target.model_copy(update={"cuda_driver": None})
        pool = [(rel, build) for rel, build, _ in soft]
        outside = ""
        if not any(sass_fit(b, relaxed, jit_allowed=True, matrix=matrix)[0] for _, b in pool if flavor_kind(b.flavor) == "cuda"):
            pool = list(platform_builds)
            outside = " (outside the project's bounds)"
        for rel, build in pool:
            if flavor_kind(build.flavor) != "cuda" or not sass_fit(build, relaxed, jit_allowed=True, matrix=matrix)[0]:
                continue
            floor = driver_floor(build, target, matrix)
            if floor:
                options.append((Version(rel.version), floor, build.flavor))
        if not options:
            return "no torch build in the matrix carries kernels for this GPU's compute capability"
        lowest = min(options, key=lambda o: (dotted(o[1]), [-p for p in o[0].release]))
        newest = min((o for o in options if o[0] == max(x[0] for x in options)), key=lambda o: dotted(o[1]))
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

def conflict(view: ProjectView, platform_builds, matrix: Matrix) -> ResolveConflict:
    reasons: list[str] = []
    if view.available is not None:
        without = ProjectView(view.project, view.target, view.request)
        if any(software_ok(rel, b, py, without, matrix, ignore_torch_bounds=False)
               for rel, b in platform_builds for py in rel.python_for(b)):
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
            pairs_ok = [rel for rel in versions if rel.version in in_torch and not pairing_violations(rel, sw)]
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
            if sw.onnxruntime and not any(onnxruntime_choices(matrix, sw, py) for py in allowed_py):
                reasons.append(f"{sw.onnxruntime[0]}{sw.onnxruntime[1]} has no release for Python {', '.join(allowed_py)}")
    if not reasons:
        reasons.append("the project's torch, companion and Python constraints have no common solution")
    return ResolveConflict("conflict", "; ".join(reasons), "relax one of the colliding constraints in the project (or the --python/--flavor you passed)",
                           context={"reasons": reasons})

def why_torch(rel: TorchRelease, build: TorchBuild, sw: Software, target: Target, matrix: Matrix, fit: Fit) -> str:
    bounds = f" within torch{sw.torch}" if str(sw.torch) else ""
    text = f"torch {rel.version}{'' if build.flavor == 'default' else '+' + build.flavor}: the newest release{bounds}"
    kind = flavor_kind(build.flavor)
    if kind == "cuda":
        cuda = flavor_cuda(build.flavor)
        toolkit = matrix.cuda_toolkit(cuda or "")
        floor = os_floor(toolkit, target)
        text += f"; CUDA {cuda} is the highest its builds offer that"
        if not target.cuda_driver:
            text += " the target allows"
        elif fit.mode == "minor":
            minor = matrix.minor_compat(int((cuda or "0").split(".")[0]))
            minor_floor = os_floor(minor, target)
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

def why_python(py: str, rel: TorchRelease, build: TorchBuild, view: ProjectView) -> str:
    if view.request.python:
        return f"Python {py}: pinned with --python"
    parts = [f"torch {rel.version} ships {min(rel.python_for(build), key=Version)}–{max(rel.python_for(build), key=Version)}"]
    if view.requires_python:
        parts.append(f"requires-python {view.requires_python}")
    return f"Python {py}: the highest that every choice allows ({'; '.join(parts)})"

def requirement_text(req: Requirement) -> str:
    text = req.name
    if req.extras:
        text += "[" + ",".join(sorted(req.extras)) + "]"
    if req.url:
        return f"{text} @ {req.url}"
    return text + str(req.specifier)

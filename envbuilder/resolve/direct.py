"""The plan for a project that names its torch wheel by URL when the matrix does not know that build.

`torch @ https://download.pytorch.org/whl/cu113/torch-1.12.0%2Bcu113-cp39-cp39-linux_x86_64.whl` fixes the
version, flavour and Python (the file name says them all), so there is nothing to choose: the plan installs
that file. What the matrix still knows is checked (the CUDA toolkit's driver floor), and what it does not
(the wheel's kernels, an unknown toolkit) is said in a warning. A URL to a build the matrix does know goes
through the ordinary resolver, where a local pin and a Python pin say the same thing.
Pure: must not import subprocess, urllib.request, docker or the CLI.
"""

from __future__ import annotations

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envbuilder.errors import ResolveConflict
from envbuilder.notices import Notice
from envbuilder.project.spec import TORCH_COMPANIONS
from envbuilder.resolve.candidates import dotted, os_floor
from envbuilder.resolve.explain import describe_target, requirement_text
from envbuilder.resolve.matrix import FLAVOR_RE, Matrix, flavor_cuda, flavor_kind, flavor_rocm
from envbuilder.resolve.plan import PackageChoice, Plan, PlanStatus, Target, TorchChoice
from envbuilder.resolve.served import WheelFile, parse_wheel_filename, platform_matches, url_filename
from envbuilder.resolve.software import ProjectView, Software, project_reasons, pytorch_index_flavor


def direct_wheel_plan(view: ProjectView, matrix: Matrix) -> Plan | None:
    """The plan that installs the torch wheel the project names by URL, when the matrix lacks its build; else None."""
    found = _direct_wheel(view)
    if found is None:
        return None
    wheel, sw, py = found
    flavor = wheel.local or "default"
    target = view.target
    release = matrix.release(wheel.public)
    if release is not None and any(b.flavor == flavor and b.os == target.os and b.arch == target.arch
                                   for b in release.builds):
        return None
    if not platform_matches(wheel.platforms, target.os, target.arch):
        raise ResolveConflict("direct-wheel-platform",
                              f"torch @ {sw.torch_url} is built for {', '.join(wheel.platforms)}, not {target.os}/{target.arch}",
                              "name the wheel for the target, or limit the URL to its platform with a marker "
                              "(; sys_platform == \"linux\")", context={"url": sw.torch_url})
    if (view.requires_python and not view.requires_python.contains(f"{py}.99", prereleases=True)) or (
            view.request.python and view.request.python != py):
        asked = f"--python {view.request.python}" if view.request.python else f"requires-python {view.requires_python}"
        raise ResolveConflict("conflict", f"torch @ {sw.torch_url} is built for Python {py}, but {asked}",
                              "name the wheel built for the Python you need (its cpXY tag), or change the Python")
    status, warnings = _hardware(flavor, target, matrix, view.request.cuda_compat)
    index_url = _index_of(sw.torch_url, flavor, matrix)
    companions, loose = _companions(sw, flavor, index_url)
    cuda = flavor_cuda(flavor) if FLAVOR_RE.match(flavor) else None
    reasons = [
        f"target: {describe_target(target)} ({target.source})",
        f"torch {wheel.version}: the wheel the project names by URL; the matrix does not list this build, so its "
        "version, flavour and Python come from the file name",
        f"Python {py}: the wheel is built for CPython {py} (cp{py.replace('.', '')})",
        *project_reasons(view.project, view.request),
    ]
    warnings += [f"{name} {spec or '(any version)'}: the matrix does not know the release paired with torch "
                 f"{wheel.public}; left to the installer (pin it, or name its wheel by URL too)" for name, spec in loose]
    if sw.onnxruntime:
        loose.append(sw.onnxruntime)
    return Plan(
        status=status,
        python=py,
        torch=TorchChoice(version=wheel.public, flavor=flavor, local=wheel.version, index_url=index_url,
                          cuda=cuda, rocm=flavor_rocm(flavor) if FLAVOR_RE.match(flavor) else None, url=sw.torch_url),
        companions=companions,
        dependencies=tuple(requirement_text(r) for r in sw.others) + tuple(f"{n}{s}" for n, s in loose),
        indexes=sw.indexes,
        system_packages=tuple(sorted(set(view.project.system_packages))),
        project_name=view.project.name,
        project=view.project.source,
        import_roots=view.project.import_roots,
        target=target,
        request=view.request,
        reasons=tuple(reasons),
        # Everything said here is what the matrix cannot tell about a build it does not list.
        warnings=tuple(Notice("unlisted-wheel", w) for w in warnings),
        matrix_updated=matrix.updated,
        build_requires_torch=view.project.build_requires_torch,
        install=view.project.install,
    )


def _direct_wheel(view: ProjectView) -> tuple[WheelFile, Software, str] | None:
    """The torch wheel URL that applies on the target (its markers evaluated for the wheel's own Python)."""
    texts = [*view.project.requirements, *view.request.with_packages]
    for text in texts:
        req = Requirement(text)
        if canonicalize_name(req.name) != "torch" or not req.url:
            continue
        wheel = parse_wheel_filename(url_filename(req.url))
        if wheel is None or len(wheel.pythons) != 1:
            continue  # the ordinary path reports a URL it cannot read
        sw = view.software(wheel.pythons[0])
        if sw.torch_url == req.url:
            return wheel, sw, wheel.pythons[0]
    return None


def _hardware(flavor: str, target: Target, matrix: Matrix, compat: str) -> tuple[PlanStatus, list[str]]:
    """What the matrix can still check for a build it does not list: the toolkit's driver floor; the rest is a warning."""
    kind = flavor_kind(flavor) if FLAVOR_RE.match(flavor) else None
    if kind is None:
        return "ok", [f"the wheel's flavour {flavor!r} is not one the matrix knows; hardware not checked"]
    if target.gpu == "none" and kind in ("cuda", "rocm"):
        return "ok", [f"a {flavor} build on a target without a GPU: torch runs on the CPU"]
    if target.gpu == "nvidia" and kind != "cuda" or target.gpu == "amd" and kind != "rocm":
        return "potential-incompatibility", [f"the project's {flavor} wheel cannot use the target's {target.gpu.upper()} GPU; "
                                             "torch will run on the CPU"]
    if kind == "rocm":
        return "ok", [f"the matrix does not list this {flavor} build; whether it supports {', '.join(target.gpu_archs) or 'the GPU'} "
                      "is not checked"]
    if kind != "cuda":
        return "ok", []
    cuda = flavor_cuda(flavor) or ""
    warnings = [f"the matrix does not list this {flavor} build; its kernels for "
                f"{'sm_' + '/'.join(c.replace('.', '') for c in target.compute_capabilities) if target.compute_capabilities else 'the GPU'}"
                " are not checked"]
    for cc in target.compute_capabilities:
        generation = matrix.compute_capability(cc)
        if generation and dotted(cuda) < dotted(generation.min_cuda):
            return "potential-incompatibility", [
                f"{generation.architecture} GPUs (sm_{cc.replace('.', '')}) need CUDA >= {generation.min_cuda}; the project's "
                f"{flavor} wheel has no kernels for them, so torch will not use the GPU"]
    floor = os_floor(matrix.cuda_toolkit(cuda), target)
    if floor is None:
        return "ok", warnings + [f"the matrix has no driver floor for CUDA {cuda}; the driver is not checked"]
    if not target.cuda_driver or dotted(target.cuda_driver) >= dotted(floor):
        return "ok", warnings
    minor = os_floor(matrix.minor_compat(int(cuda.split(".")[0])), target)
    if compat == "minor" and minor and dotted(target.cuda_driver) >= dotted(minor):
        return "minor-version-compat", warnings + [f"CUDA {cuda} runs on driver {target.cuda_driver} only through "
                                                   f"minor-version compatibility (>= {floor} for full support)"]
    return "potential-incompatibility", warnings + [
        f"driver {target.cuda_driver} is older than CUDA {cuda} needs (>= {floor}): the project's wheel will not use "
        f"the GPU. Update the driver to >= {floor}"]


def _companions(sw: Software, flavor: str, index_url: str) -> tuple[dict[str, PackageChoice], list[tuple[str, str]]]:
    """Companions the project fixes (a wheel URL or an exact pin) are planned; the rest are left to the installer."""
    chosen: dict[str, PackageChoice] = {}
    loose: list[tuple[str, str]] = []
    for name in TORCH_COMPANIONS:
        reqs = [r for r in sw.companion_reqs if canonicalize_name(r.name) == name]
        if not reqs:
            continue
        version = None
        for req in reqs:
            wheel = parse_wheel_filename(url_filename(req.url)) if req.url else None
            exact = [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
            version = wheel.version if wheel else exact[0] if exact else version
        if version is None:
            loose.append((name, str(getattr(sw, name) or "")))
            continue
        if "+" not in version and flavor != "default":
            version = f"{version}+{flavor}"
        chosen[name] = PackageChoice(name=name, version=version, index_url=index_url)
    return chosen, loose


def _index_of(url: str | None, flavor: str, matrix: Matrix) -> str:
    """The flavour's PyTorch index: the wheel's own folder when it lives on download.pytorch.org."""
    if url and pytorch_index_flavor(url):
        return url.rsplit("/", 1)[0]
    return matrix.indexes.get(flavor) or matrix.index_url("default")

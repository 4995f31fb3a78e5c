"""The project's software constraints as the resolver sees them: per target, per Python (markers depend on it).

Owns ProjectView (the project evaluated for one target, cached per Python) and Software (the torch-family,
onnxruntime and index constraints that apply for one Python). Pure: must not import subprocess,
urllib.request, docker or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from envbuilder.errors import ProjectError
from envbuilder.project.markers import target_environment
from envbuilder.project.spec import ONNXRUNTIME_PACKAGES, TORCH_FAMILY, TORCH_PACKAGES, IndexDecl, ProjectSpec, applicable
from envbuilder.resolve.matrix import split_local
from envbuilder.resolve.plan import ResolveRequest, Target
from envbuilder.resolve.python_fit import PythonFit
from envbuilder.resolve.served import IndexSnapshot, parse_wheel_filename, url_filename

_PYTORCH_INDEX_RE = re.compile(r"download\.pytorch\.org/whl/(?:nightly/|test/)?(?P<flavor>cpu|cu\d{3}|rocm\d+\.\d+(?:\.\d+)?)/?")


@dataclass(frozen=True)
class Software:
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
    torch_url: str | None = None  # the wheel torch is named by (torch @ https://...whl)
    companion_reqs: tuple[Requirement, ...] = ()  # torchvision/torchaudio as declared (URL or specifier)

class ProjectView:
    """The project's requirements evaluated for one target platform, cached per Python version.

    python_fit: what the installability check found (envbuilder.index.installability, folded by python_fit): its Python
    is the only one the plan may take, since the project's other dependencies install on no higher one.
    """

    def __init__(self, project: ProjectSpec, target: Target, request: ResolveRequest, available: IndexSnapshot | None = None,
                 fit: PythonFit | None = None) -> None:
        self.available = available
        self.python_fit = fit
        self.project = project
        self.target = target
        self.request = request
        if project.bare and not request.with_packages:
            raise ProjectError(
                "project-no-metadata",
                f"{project.source.git_url or project.source.path} declares no dependencies: no pyproject.toml, setup.py, "
                "setup.cfg, requirements*.txt or environment.yml",
                "add a requirements.txt (or pyproject.toml) that lists what the code imports, or name the packages "
                "with --with PKG / --with-requirements FILE",
                context={"path": project.source.path})
        self.requires_python = _specifier(project.requires_python or "", "requires-python")
        self._cache: dict[str, Software] = {}

    def software(self, python: str) -> Software:
        if python not in self._cache:
            self._cache[python] = self._evaluate(python)
        return self._cache[python]

    def _evaluate(self, python: str) -> Software:
        env = target_environment(self.target.os, self.target.arch, python)
        reqs = self.project.requirements_for(env, self.request.extras) + applicable(self.request.with_packages, env)
        by_name: dict[str, list[Requirement]] = {}
        others: list[Requirement] = []
        for req in reqs:
            name = canonicalize_name(req.name)
            if name in TORCH_PACKAGES or name in ONNXRUNTIME_PACKAGES:
                by_name.setdefault(name, []).append(req)
            else:
                others.append(req)
        # `-c` constraint files bound a package only when something requires it (pip's semantics).
        for req in self.project.constraints_for(env):
            name = canonicalize_name(req.name)
            if name == "torch" or name in by_name:
                by_name.setdefault(name, []).append(req)
        torch_spec = SpecifierSet()
        pinned_flavor = pinned_python = torch_url = None
        for req in by_name.get("torch", []):
            spec, flavor, py = _torch_requirement(req)
            torch_spec &= spec
            pinned_flavor = flavor or pinned_flavor
            pinned_python = py or pinned_python
            torch_url = req.url or torch_url
        vision = _joined(by_name.get("torchvision"))
        audio = _joined(by_name.get("torchaudio"))
        ort = None
        for name in ONNXRUNTIME_PACKAGES:
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
        companions = tuple(r for name in ("torchvision", "torchaudio") for r in by_name.get(name, []))
        return Software(torch_spec, vision, audio, ort, pinned_flavor, pinned_python, index_flavor, index_origin,
                         tuple(others), tuple(kept_indexes), torch_url, companions)

    def install_set(self, python: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(requirements, constraints) for the installability check on `python`: the project's requirements with
        its extras and --with packages, markers evaluated as the plan evaluates them, and its `-c` constraints;
        the torch family left out (the matrix decides it, and the plan pins it)."""
        env = target_environment(self.target.os, self.target.arch, python)
        constraints = tuple(str(r) for r in self.project.constraints_for(env) if canonicalize_name(r.name) not in TORCH_FAMILY)
        return tuple(str(r) for r in self.software(python).others), constraints

def project_reasons(project: ProjectSpec, request: ResolveRequest) -> list[str]:
    """What the plan takes from outside the declared ranges: --with packages, the project's lock, a torch build step."""
    out = []
    if request.with_packages:
        out.append(f"added with --with: {', '.join(request.with_packages)} (the project does not declare them)")
    if project.locked_by:
        out.append(f"versions pinned by the project's {project.locked_by}")
    if project.build_requires_torch:
        out.append(f"building the project needs torch ({project.build_requires_torch}): torch must be installed "
                   "before the project is built, without build isolation")
    return out

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
        raise ProjectError("project-invalid-requirement", f"{what} {text!r} is not a valid version specifier",
                              "fix it in the project (PEP 440, e.g. >=3.10,<3.13)") from None

def _torch_requirement(req: Requirement) -> tuple[SpecifierSet, str | None, str | None]:
    """A torch requirement as (specifier on the public version, pinned flavour, pinned Python)."""
    if req.url:
        wheel = parse_wheel_filename(url_filename(req.url))
        if wheel is None or len(wheel.pythons) != 1:
            raise ProjectError("project-invalid-requirement", f"torch @ {req.url} is not a wheel URL envbuilder can read",
                                  "point torch at a .whl file, or use a version specifier and an index")
        return SpecifierSet(f"=={wheel.public}"), wheel.local or "default", wheel.pythons[0]
    spec, flavor = split_local(req.specifier)
    return spec, flavor, None

def pytorch_index_flavor(url: str) -> str | None:
    """'https://download.pytorch.org/whl/cu121' -> 'cu121'; None for other indexes."""
    m = _PYTORCH_INDEX_RE.search(url)
    return m["flavor"] if m else None

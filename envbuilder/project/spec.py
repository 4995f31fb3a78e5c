"""What a project asks for, as values: ProjectSpec, ProjectSource, IndexDecl, and the torch family.

Owns the torch-family package lists: the resolver, the renderers and the index snapshot derive theirs from
TORCH_PACKAGES / TORCH_COMPANIONS / ONNXRUNTIME_PACKAGES here. Pure: must not import subprocess, urllib,
docker, the readers, the resolver or the CLI.
"""

from __future__ import annotations

from typing import Any, Literal

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.values import Value

# The packages the PyTorch index serves per flavour (cpu, cu128, rocm6.3), released in lockstep with torch.
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
TORCH_COMPANIONS = TORCH_PACKAGES[1:]
# ONNX Runtime is not on the PyTorch index, but its CPU/GPU wheel choice follows torch's flavour.
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu")
TORCH_FAMILY = TORCH_PACKAGES + ONNXRUNTIME_PACKAGES


class IndexDecl(Value):
    """A package index or wheel location the project declares."""

    url: str
    kind: Literal["index-url", "extra-index-url", "find-links", "uv-index", "poetry-source", "conda"]
    name: str | None = None
    packages: tuple[str, ...] = ()  # packages pinned to this index (uv sources, poetry source=); empty: any
    marker: str | None = None  # PEP 508 marker under which the index applies (uv sources), None: always
    explicit: bool = False  # uv `explicit = true` / poetry priority explicit: only for the packages named
    origin: str = ""  # file it came from, for explanations


class ProjectInstall(Value):
    """How the project installs into its environment: as a package built by `backend` (project.install decides)."""

    backend: str  # "setuptools.build_meta", or "setuptools.build_meta:__legacy__" for a setup.py-only project
    requires: tuple[str, ...]  # [build-system] requires (PEP 508), the legacy default without one
    why: str  # what makes it a package, for the plan's explanation ("pyproject.toml [build-system]")
    compiles: str | None = None  # why the build compiles C/C++ ("setup.py declares ext_modules"); None: it doesn't


class ProjectSource(Value):
    """Where the project came from: a local folder, or a git URL at a resolved commit."""

    path: str  # local folder the project was read from (a checkout for git sources)
    git_url: str | None = None
    ref: str | None = None
    commit: str | None = None


class ProjectSpec(Value):
    """What the project itself asks for. Requirements keep their markers; evaluate them per target."""

    source: ProjectSource
    name: str | None = None
    formats: tuple[str, ...] = ()  # "pep621", "poetry", "uv", "requirements", "setup.cfg", "setup.py", "conda"
    files: tuple[str, ...] = ()  # files read, relative to the project root
    requires_python: str | None = None  # a PEP 440 specifier set, "" or None when not declared
    requirements: tuple[str, ...] = ()  # PEP 508 strings (name, extras, specifier or URL, marker)
    optional: dict[str, tuple[str, ...]] = {}  # extra -> PEP 508 strings
    constraints: tuple[str, ...] = ()  # PEP 508 strings from `-c` files: bound versions, install nothing
    indexes: tuple[IndexDecl, ...] = ()
    dynamic: tuple[str, ...] = ()  # PEP 621 fields declared dynamic
    system_packages: tuple[str, ...] = ()  # from [tool.envbuilder] system-packages
    import_roots: tuple[str, ...] = (".",)  # folders to put on PYTHONPATH ("src" for src layouts)
    notes: tuple[Notice, ...] = ()  # what the readers noticed (dynamic metadata fallbacks, skipped lines), with codes
    # Why building the project needs torch first (setup.py imports torch; torch in [build-system] requires); None: it doesn't.
    build_requires_torch: str | None = None
    # How the project itself installs (a package: [build-system] or setup.py); None: its files are only importable.
    install: ProjectInstall | None = None
    locked_by: str | None = None  # the project's own lock file whose pins replaced the declared ranges (uv.lock...)
    # Read from a folder with no metadata file at all: nothing says what the code needs (an empty
    # requirements.txt does say it: nothing). The resolver refuses it unless --with names the packages.
    bare: bool = False

    def requirements_for(self, env: dict[str, str], extras: tuple[str, ...] = ()) -> tuple[Requirement, ...]:
        """The requirements that apply on the target `env` with `extras` selected, markers evaluated and removed.

        A requirement on the project itself (`all = ["myproj[onnx,vision]"]`) expands to those extras.
        Raises ProjectError("unknown-extra") for an extra the project does not declare.
        """
        known = {canonicalize_name(e): e for e in self.optional}
        wanted: list[str] = []
        for extra in extras:
            key = canonicalize_name(extra)
            if key not in known:
                listed = ", ".join(sorted(self.optional)) or "none"
                raise ProjectError(
                    "unknown-extra",
                    f"the project has no extra {extra!r} (known: {listed})",
                    "pick one of the known extras, or drop --extra",
                    context={"extra": extra, "known": sorted(self.optional)},
                )
            wanted.append(key)
        own = canonicalize_name(self.name) if self.name else None
        selected: list[str] = []
        out: list[Requirement] = []
        seen: set[str] = set()

        def add(text: str, extra: str) -> None:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": extra}):
                return
            if own and canonicalize_name(req.name) == own and not req.url:
                for sub in sorted(req.extras):
                    select(canonicalize_name(sub))
                return
            req.marker = None
            key = str(req)
            if key not in seen:
                seen.add(key)
                out.append(req)

        def select(key: str) -> None:
            if key in selected or key not in known:
                return
            selected.append(key)
            for text in self.optional[known[key]]:
                add(text, key)

        for text in self.requirements:
            # A base requirement may itself carry `extra == "x"` (requirements.txt written from metadata).
            for extra in ("", *wanted):
                add(text, extra)
        for key in wanted:
            select(key)
        return tuple(out)

    def constraints_for(self, env: dict[str, str]) -> tuple[Requirement, ...]:
        """The `-c` constraints that apply on the target, markers evaluated and removed."""
        return applicable(self.constraints, env)

    def indexes_for(self, env: dict[str, str]) -> tuple[IndexDecl, ...]:
        """The declared indexes whose marker holds on the target."""
        return tuple(i for i in self.indexes if i.marker is None or Marker(i.marker).evaluate({**env, "extra": ""}))


def applicable(texts: tuple[str, ...], env: dict[str, str]) -> tuple[Requirement, ...]:
    """The requirements whose marker holds on the target `env` (no extra selected), markers removed."""
    out = []
    for text in texts:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
            req.marker = None
            out.append(req)
    return tuple(out)


def torch_family(spec: ProjectSpec) -> dict[str, dict[str, Any]]:
    """For each torch-family package the project names: its requirements, per-extra additions, constraints, indexes."""
    summary: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return summary.setdefault(name, {"requirements": [], "extras": {}, "constraints": [], "indexes": []})

    for text in spec.requirements:
        name = canonicalize_name(Requirement(text).name)
        if name in TORCH_FAMILY:
            entry(name)["requirements"].append(text)
    for extra, texts in spec.optional.items():
        for text in texts:
            name = canonicalize_name(Requirement(text).name)
            if name in TORCH_FAMILY:
                entry(name)["extras"].setdefault(extra, []).append(text)
    for text in spec.constraints:
        name = canonicalize_name(Requirement(text).name)
        if name in TORCH_FAMILY:
            entry(name)["constraints"].append(text)
    for index in spec.indexes:
        for pkg in index.packages:
            name = canonicalize_name(pkg)
            if name in TORCH_FAMILY:
                entry(name)["indexes"].append(index.name or index.url)
    return {name: summary[name] for name in TORCH_FAMILY if name in summary}

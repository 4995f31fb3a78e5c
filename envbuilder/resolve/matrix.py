"""The compatibility matrix: load compatibility.json into frozen, validated values.

compatibility.json is the single source of version facts (torch releases and their builds, CUDA driver
floors, ROCm gfx lists, companion pairing, onnxruntime, index URLs), each table with provenance.
Owns the schema (pydantic models), loading (packaged file, or an installed override), validation and
`compat update`. Must not import docker, the resolver or the CLI.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from pydantic import Field, ValidationError, field_validator, model_validator

from envbuilder.errors import EnvbuilderError
from envbuilder.values import Value

SCHEMA_VERSION = 2
# Version 1 paired one torchvision/torchaudio string with each release; version 2 lists every companion
# release built for it. A version-1 file (an older `compat update`) still loads: each string becomes a list.
READABLE_SCHEMA_VERSIONS = (1, 2)
COMPANION_TABLES = ("torchvision", "torchaudio")
PACKAGED_MATRIX = Path(__file__).resolve().parents[1] / "data" / "compatibility.json"

FLAVOR_RE = re.compile(r"^(cpu|default|cu(?P<cu>\d{3})|rocm(?P<rocm>\d+\.\d+(\.\d+)?))$")
OsName = Literal["linux", "windows", "macos"]
ArchName = Literal["x86_64", "aarch64", "arm64"]


def flavor_kind(flavor: str) -> Literal["cpu", "default", "cuda", "rocm"]:
    m = FLAVOR_RE.match(flavor)
    if not m:
        raise ValueError(f"unknown flavour {flavor!r}")
    if m["cu"]:
        return "cuda"
    if m["rocm"]:
        return "rocm"
    return "cpu" if flavor == "cpu" else "default"


def flavor_cuda(flavor: str) -> str | None:
    """'cu128' -> '12.8', 'cu130' -> '13.0'; None for non-CUDA flavours (the last digit is the minor)."""
    m = FLAVOR_RE.match(flavor)
    if not m or not m["cu"]:
        return None
    digits = m["cu"]
    return f"{int(digits[:-1])}.{digits[-1]}"


def flavor_rocm(flavor: str) -> str | None:
    m = FLAVOR_RE.match(flavor)
    return m["rocm"] if m and m["rocm"] else None


def split_local(spec: SpecifierSet) -> tuple[SpecifierSet, str | None]:
    """A specifier on public versions, and the flavour its local-version pin names: `==0.18.1+cu121` is
    (`==0.18.1`, "cu121"), the standard PyTorch requirements pattern, which a public version never matches."""
    public = SpecifierSet()
    flavor = None
    for item in spec:
        version, _, local = item.version.partition("+")
        if local and item.operator in ("==", "==="):
            flavor = local
            public &= SpecifierSet(f"=={version}")
        else:
            public &= SpecifierSet(str(item))
    return public, flavor


class Provenance(Value):
    source: str  # what was read: file, page, table
    url: str | None = None
    retrieved: str  # ISO date the fact was read
    notes: str | None = None


class TorchBuild(Value):
    """One published wheel family: a flavour for one OS and CPU architecture."""

    os: OsName
    arch: ArchName
    flavor: str
    python: tuple[str, ...] | None = None  # overrides the release's Python list for this build
    sm: tuple[str, ...] = ()  # compute capabilities the wheels carry SASS for ("8.0"), CUDA flavours only
    ptx: str | None = None  # highest capability also shipped as PTX (JIT-compilable on newer GPUs)
    gfx: tuple[str, ...] = ()  # ROCm wheels' gfx targets; empty: take the ROCm release's list
    on_pypi: bool = False  # PyPI serves this build under the plain version (no +local tag)

    @model_validator(mode="after")
    def _check(self) -> "TorchBuild":
        kind = flavor_kind(self.flavor)
        if kind == "cuda" and not self.sm:
            raise ValueError(f"{self.flavor} build for {self.os}/{self.arch} lists no compute capabilities (sm)")
        if kind != "cuda" and (self.sm or self.ptx):
            raise ValueError(f"{self.flavor} is not a CUDA flavour but lists sm/ptx")
        return self


class TorchRelease(Value):
    version: str
    released: str  # ISO date
    python: tuple[str, ...]  # CPython versions with wheels ("3.9", ... ); free-threaded builds not listed
    # Every companion release built for this torch (its METADATA requires torch==version), oldest first, so the
    # last is the newest; empty: none was published. torch 2.0.0 has torchvision 0.15.0 (yanked) and 0.15.1.
    torchvision: tuple[str, ...] = ()
    torchaudio: tuple[str, ...] = ()
    builds: tuple[TorchBuild, ...]

    @field_validator("torchvision", "torchaudio", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        # Schema 1 held one string (or null) per companion.
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else value

    @field_validator("torchvision", "torchaudio")
    @classmethod
    def _oldest_first(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        versions = [Version(v) for v in value]
        if versions != sorted(set(versions)):
            raise ValueError(f"companion releases must be listed oldest first, once each: {list(value)}")
        return value

    def python_for(self, build: TorchBuild) -> tuple[str, ...]:
        return build.python if build.python is not None else self.python

    def companions(self, name: str) -> tuple[str, ...]:
        """The torchvision or torchaudio releases built for this torch, oldest first."""
        return getattr(self, name) if name in COMPANION_TABLES else ()


class CudaToolkit(Value):
    """Minimum driver for a CUDA toolkit release under strict (full) compatibility."""

    version: str  # "12.8"
    min_driver_linux: str
    min_driver_windows: str | None = None


class CudaMinorCompat(Value):
    """Minor-version compatibility: a driver at or above the floor runs any toolkit of this major (PTX JIT excepted)."""

    major: int
    min_driver_linux: str
    min_driver_windows: str | None = None


class RocmRelease(Value):
    version: str  # "6.3"
    gfx: tuple[str, ...]


class OnnxruntimeRelease(Value):
    version: str
    python: tuple[str, ...]
    gpu_cuda_major: int | None = None  # CUDA major of the onnxruntime-gpu wheel on PyPI for this release
    cudnn_major: int | None = None
    gpu_platforms: tuple[str, ...] = ("linux/x86_64", "windows/x86_64")  # where onnxruntime-gpu wheels exist


class GpuModel(Value):
    """A GPU name pattern and its compute capability (NVIDIA's CUDA GPUs page)."""

    pattern: str  # case-insensitive regex matched against the name nvidia-smi reports
    compute_capability: str
    architecture: str  # "Hopper"


class ComputeCapability(Value):
    """What a GPU generation needs from the software: the first CUDA toolkit that targets it and the first driver branch that runs it."""

    version: str  # "12.0"
    architecture: str  # "Blackwell"
    min_cuda: str  # the first toolkit whose compiler and libraries (cuBLAS, cuDNN) support it
    min_driver_linux: str | None = None
    min_driver_windows: str | None = None


class Matrix(Value):
    schema_version: int = SCHEMA_VERSION
    updated: str
    sources: dict[str, Provenance]  # table name -> where its facts come from
    torch: tuple[TorchRelease, ...]
    cuda: tuple[CudaToolkit, ...]
    cuda_minor_compat: tuple[CudaMinorCompat, ...]
    rocm: tuple[RocmRelease, ...]
    onnxruntime: tuple[OnnxruntimeRelease, ...]
    indexes: dict[str, str] = Field(description="flavour -> index URL; 'default' is PyPI")
    gpus: tuple[GpuModel, ...] = ()
    compute_capabilities: tuple[ComputeCapability, ...] = ()
    # package -> releases yanked on PyPI (PEP 592): an installer takes one only when pinned exactly (== / ===).
    yanked: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="after")
    def _cross_check(self) -> "Matrix":
        if self.schema_version not in READABLE_SCHEMA_VERSIONS:
            raise ValueError(f"schema_version {self.schema_version} is not one of {list(READABLE_SCHEMA_VERSIONS)} "
                             "(a newer envbuilder wrote it; upgrade envbuilder)")
        for table in ("torch", "cuda", "cuda_minor_compat", "rocm", "onnxruntime", "indexes") + (("yanked",) if self.yanked else ()):
            if table not in self.sources:
                raise ValueError(f"table {table!r} has no provenance in 'sources'")
        for versions in self.yanked.values():
            for v in versions:
                Version(v)
        cuda_versions = {c.version for c in self.cuda}
        rocm_versions = {r.version for r in self.rocm}
        seen: set[str] = set()
        for rel in self.torch:
            Version(rel.version)
            if rel.version in seen:
                raise ValueError(f"torch {rel.version} is listed twice")
            seen.add(rel.version)
            for b in rel.builds:
                cuda = flavor_cuda(b.flavor)
                if cuda and cuda not in cuda_versions:
                    raise ValueError(f"torch {rel.version} {b.flavor}: CUDA {cuda} has no row in 'cuda'")
                rocm = flavor_rocm(b.flavor)
                if rocm and not b.gfx and rocm not in rocm_versions:
                    raise ValueError(f"torch {rel.version} {b.flavor}: ROCm {rocm} has no gfx list")
                if b.flavor not in self.indexes and flavor_kind(b.flavor) != "default":
                    raise ValueError(f"flavour {b.flavor} has no index URL in 'indexes'")
        return self

    # Lookups used by the resolver; cached because the matrix is immutable.
    @cached_property
    def releases_newest_first(self) -> tuple[TorchRelease, ...]:
        return tuple(sorted(self.torch, key=lambda r: Version(r.version), reverse=True))

    def release(self, version: str) -> TorchRelease | None:
        return next((r for r in self.torch if Version(r.version) == Version(version)), None)

    def cuda_toolkit(self, version: str) -> CudaToolkit | None:
        return next((c for c in self.cuda if c.version == version), None)

    def minor_compat(self, major: int) -> CudaMinorCompat | None:
        return next((c for c in self.cuda_minor_compat if c.major == major), None)

    def rocm_gfx(self, build: TorchBuild) -> tuple[str, ...]:
        if build.gfx:
            return build.gfx
        version = flavor_rocm(build.flavor)
        row = next((r for r in self.rocm if r.version == version), None)
        return row.gfx if row else ()

    def is_yanked(self, package: str, version: str) -> bool:
        public = Version(Version(version).public)
        return any(Version(v) == public for v in self.yanked.get(package, ()))

    def index_url(self, flavor: str) -> str:
        return self.indexes.get(flavor) or self.indexes["default"]

    def compute_capability(self, version: str) -> ComputeCapability | None:
        return next((c for c in self.compute_capabilities if c.version == version), None)

    def gpu_compute_capability(self, name: str) -> str | None:
        for gpu in self.gpus:
            if re.search(gpu.pattern, name, flags=re.IGNORECASE):
                return gpu.compute_capability
        return None


def load_matrix(path: str | Path | None = None, *, override: Path | None = None) -> Matrix:
    """Load and validate the matrix: an explicit path, else an installed override, else the packaged file."""
    if path is None:
        path = override if override is not None and override.is_file() else PACKAGED_MATRIX
    return parse_matrix(Path(path).read_bytes(), origin=str(path))


def _too_deep(origin: str) -> EnvbuilderError:
    return EnvbuilderError("matrix-invalid", f"{origin} is nested too deeply to be a compatibility matrix",
                           "fix the file or fetch it again (`envbuilder compat update`)")


def parse_matrix(data: bytes | str, *, origin: str = "<matrix>") -> Matrix:
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EnvbuilderError("matrix-invalid", f"{origin} is not valid JSON ({exc})", "fix the file or fetch it again") from None
    except RecursionError:
        raise _too_deep(origin) from None
    try:
        return Matrix.model_validate(raw)
    except RecursionError:  # validating a deep value recurses too (the schema never allows one)
        raise _too_deep(origin) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise EnvbuilderError(
            "matrix-invalid",
            f"{origin} does not match the compatibility schema at {where}: {first['msg']} ({exc.error_count()} error(s))",
            "the installed matrix was kept; fix the file and run `envbuilder compat update` again",
        ) from None

"""The conda environment.yml reader: python and pytorch/torchvision pins, the `pip:` section, a declared CUDA flavour.

conda's match specs become PEP 508 requirements: `pytorch=2.1` means 2.1.* (conda's `=` is a prefix match),
`pytorch==2.1.0` is exact, `numpy>=1.24,<2` stays. `pytorch-cuda=11.8` or a pytorch build string such as
`py3.10_cuda11.8_cudnn8.7.0_0` declares the CUDA flavour, which restricts torch as a PyTorch index would;
`cpuonly` declares the CPU build. Conda packages that are not Python packages (compilers, CUDA runtime
libraries, ffmpeg) are skipped with a note: the torch wheel brings its own CUDA.
Pure: text in, a Found out (yaml.safe_load builds plain values only). Must not import subprocess, urllib,
docker, the resolver or the CLI.
"""

from __future__ import annotations

import re
from typing import Any


from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.project.found import Found, checked_requirement, too_deep, wrong_type
from envbuilder.project.requirements import read_requirements
from envbuilder.project.spec import IndexDecl

# conda name -> PyPI name, where they differ (the pytorch channel names torch "pytorch").
_PYPI_NAME = {"pytorch": "torch", "pytorch-gpu": "torch", "pytorch-cpu": "torch", "py-opencv": "opencv-python"}
# conda packages with no PyPI counterpart that the image needs: conda tooling, compilers, native libraries.
_NOT_PYTHON = {"python", "pip", "cpuonly", "pytorch-cuda", "pytorch-mutex", "cudatoolkit", "cudatoolkit-dev", "cudnn",
               "nccl", "cuda", "mkl", "mkl-include", "blas", "openblas", "ffmpeg", "git", "gcc", "gxx", "make",
               "compilers", "cxx-compiler", "c-compiler", "ca-certificates", "openssl", "nodejs", "pkg-config"}
_NOT_PYTHON_PREFIXES = ("lib", "cuda-", "_", "mkl-", "gcc_", "gxx_")
_SPEC_RE = re.compile(r"^(?:[^:\s]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?:\[(?P<bracket>[^\]]*)\])?\s*(?P<rest>.*)$")
_CUDA_BUILD_RE = re.compile(r"cuda(\d+)\.?(\d)")
PYTORCH_INDEX = "https://download.pytorch.org/whl/"


def read_environment_yml(text: str, origin: str = "environment.yml") -> Found:
    """Read a conda environment file: dependencies (conda match specs) and their `pip:` list."""
    import yaml  # ~0.1 s to import: only projects that have an environment.yml pay for it

    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise too_deep(origin, "YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        raise ProjectError("project-invalid-yaml", f"{where}: {getattr(exc, 'problem', None) or 'invalid YAML'}",
                           f"fix the YAML syntax in {origin} (`conda env create -f {origin}` reports the same place)",
                           context={"file": origin, "line": mark.line + 1 if mark is not None else None}) from None
    found = Found(formats=["conda"])
    if not isinstance(data, dict):
        found.notes.append(Notice("file-not-read", f"{origin} is not a conda environment (no mapping at the top); ignored"))
        return found
    found.name = data.get("name") if isinstance(data.get("name"), str) else None
    deps = data.get("dependencies")
    if deps is not None and not isinstance(deps, list):  # conda refuses it too; dropping it would lose every package
        raise wrong_type(origin, "dependencies", "a list", deps, "dependencies: [python=3.11, pytorch]", origin)
    for item in deps if isinstance(deps, list) else []:
        if isinstance(item, dict) and isinstance(item.get("pip"), list):
            _read_pip_section(found, item["pip"], text, origin)
        elif isinstance(item, str) and item.strip():
            _read_conda_spec(found, item.strip(), text, origin)
        else:
            found.notes.append(Notice("entry-skipped", f"{origin}: dependency {item!r} is neither a conda spec nor a pip list; skipped"))
    return found


def _read_conda_spec(found: Found, spec: str, text: str, origin: str) -> None:
    match = _SPEC_RE.match(spec)
    if not match:
        found.notes.append(Notice("entry-skipped", f"{origin}: {spec!r} is not a conda match spec; skipped"))
        return
    name = match["name"].lower()
    version, build = _conda_version(match["rest"], match["bracket"])
    cuda = re.match(r"^==(\d+)\.(\d)(\.\*)?$", version)
    if name == "pytorch-cuda" and cuda:
        _declare_flavor(found, f"cu{cuda[1]}{cuda[2]}", f"{origin} ({spec})", origin)
        return
    if name == "cpuonly":
        _declare_flavor(found, "cpu", f"{origin} ({spec})", origin)
        return
    if name == "python":
        if version:
            found.requires_python = _python_specifier(version, found, origin)
        return
    if name == "pip":
        return
    if name in _NOT_PYTHON or name.startswith(_NOT_PYTHON_PREFIXES):
        found.notes.append(Notice("entry-skipped", f"{origin}: conda package {name} is not a Python package; skipped (the torch wheel brings "
                           "its own CUDA libraries; native tools go in [tool.envbuilder] system-packages)"))
        return
    pypi = _PYPI_NAME.get(name, name)
    if version == "|":
        found.notes.append(Notice("range-widened", f"{origin}: {spec!r} uses `|`, which PEP 440 cannot express; read as any version"))
        version = ""
    if pypi == "torch" and build:
        cuda = _CUDA_BUILD_RE.search(build)
        if cuda:
            _declare_flavor(found, f"cu{cuda[1]}{cuda[2]}", f"{origin} ({spec})", origin)
        elif "cpu" in build:
            _declare_flavor(found, "cpu", f"{origin} ({spec})", origin)
    found.requirements.append(checked_requirement(pypi + version, text, origin, needle=spec))


def _conda_version(rest: str, bracket: str | None) -> tuple[str, str | None]:
    """A conda version (and build string) as a PEP 440 specifier: ('==2.1.*', build), ('', None) for any,
    ('|', None) for an alternative PEP 440 cannot say."""
    if bracket:
        fields = dict(re.findall(r"(\w+)\s*=\s*['\"]?([^,'\"]+)['\"]?", bracket))
        rest = fields.get("version", "")
        build = fields.get("build")
    else:
        build = None
    rest = rest.strip()
    if not rest:
        return "", build
    if "|" in rest:
        return "|", build
    if rest.startswith("=") and not rest.startswith("=="):
        version, _, build_part = rest[1:].partition("=")
        return _prefix(version.strip()), build_part or build
    if rest[0].isdigit():  # the space form: `pytorch 2.1.0 py3.10_cuda11.8_0`
        version, _, build_part = rest.partition(" ")
        return _prefix(version), build_part.strip() or build
    return re.sub(r"\s+", "", rest), build


def _prefix(version: str) -> str:
    """conda's `=2.1` is a prefix match: 2.1, 2.1.0, 2.1.2 all match, as PEP 440's `==2.1.*` does."""
    if not version or version == "*":
        return ""
    return f"=={version}" if version.endswith("*") else f"=={version}.*"


def _python_specifier(version: str, found: Found, origin: str) -> str:
    # An image carries the newest patch of X.Y, so `python=3.10.12` is read as 3.10.
    exact = re.match(r"^==(\d+\.\d+)\.\d+(\.\*)?$", version)
    if exact:
        found.notes.append(Notice("range-widened", f"{origin}: python {version.lstrip('=').rstrip('.*')} read as {exact[1]} (the image "
                           "installs the newest patch release)"))
        return f"=={exact[1]}.*"
    return version


def _declare_flavor(found: Found, flavor: str, why: str, origin: str) -> None:
    # A conda CUDA pin says which build of torch the project runs: the same restriction as a PyTorch index.
    found.indexes.append(IndexDecl(url=PYTORCH_INDEX + flavor, kind="conda", packages=("torch",), origin=why))


def _read_pip_section(found: Found, lines: list[Any], text: str, origin: str) -> None:
    body = "\n".join(str(line) for line in lines if isinstance(line, (str, int, float)))
    reqs = read_requirements(body, f"{origin} (pip)")
    found.requirements += reqs.requirements
    found.indexes += reqs.indexes
    found.notes += reqs.notes
    # conda runs `pip install -r` from the environment file's folder, so its -r/-c paths are project files.
    found.wants += [(path, None, kind) for path, kind in reqs.includes]

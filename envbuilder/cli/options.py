"""Shared CLI options: target flags (replace detection), resolver request flags, and the image inputs
(--dockerfile, --netrc, --lock) that `build` and `bundle` share.

envbuilder.resolve.plan (pydantic models) is imported when the values are built, not when a command module loads:
`run --image` never builds them (`deferred_target_options`), and importing pydantic is ~0.1 s of its start-up.
"""

from __future__ import annotations

import functools
from pathlib import Path

import click


def _target_option_decorators(f):
    @click.option("--target-os", type=click.Choice(["linux", "windows", "macos"]), help="Resolve for this OS instead of the host's.")
    @click.option("--target-arch", type=click.Choice(["x86_64", "aarch64", "arm64"]), help="Resolve for this CPU architecture.")
    @click.option("--gpu", type=click.Choice(["none", "nvidia", "amd", "apple"]), help="Resolve for this accelerator (none: CPU).")
    @click.option("--cuda-driver", metavar="VERSION", help="NVIDIA driver version of the target, e.g. 570.86.")
    @click.option("--compute-capability", "compute_capability", multiple=True, metavar="X.Y", help="Target GPU compute capability (repeatable).")
    @click.option("--gpu-arch", multiple=True, metavar="gfxNNN", help="Target AMD GPU architecture (repeatable).")
    @click.option("--python", "python_pin", metavar="X.Y", help="Pin the Python version.")
    @click.option("--extra", "extras", multiple=True, metavar="NAME", help="Project extra to include (repeatable).")
    @click.option("--cuda-compat", type=click.Choice(["auto", "strict", "minor"]), default="auto", show_default=True,
                  help="auto: CUDA minor-version compatibility where the wheel has SASS for the GPU, else the toolkit's "
                       "minimum driver; strict: always the toolkit's minimum driver; minor: minor-version compatibility.")
    @click.option("--flavor", metavar="FLAVOUR", help="Force a torch flavour (cpu, cu128, rocm6.3, default).")
    @click.option("--with", "with_packages", multiple=True, metavar="PKG",
                  help="Add a package the project imports but does not declare (repeatable), like `uv run --with`.")
    @click.option("--with-requirements", "with_files", multiple=True, metavar="FILE",
                  help="Add the packages a requirements file lists (repeatable).")
    @click.option("--offline", is_flag=True, envvar="ENVBUILDER_OFFLINE",
                  help="Ask no package index whether the project's other dependencies install on the chosen Python: "
                       "the matrix alone decides (default: $ENVBUILDER_OFFLINE).")
    @functools.wraps(f)
    def wrapper(*args, target_os, target_arch, gpu, cuda_driver, compute_capability, gpu_arch,
                python_pin, extras, cuda_compat, flavor, with_packages, with_files, offline, **kwargs):
        def build():
            from envbuilder.project.inspect import read_with
            from envbuilder.resolve.plan import ResolveRequest, TargetFlags

            flags = TargetFlags(os=target_os, arch=target_arch, gpu=gpu, cuda_driver=cuda_driver,
                                compute_capability=tuple(compute_capability), gpu_arch=tuple(gpu_arch))
            request = ResolveRequest(python=python_pin, extras=tuple(extras), cuda_compat=cuda_compat, flavor=flavor,
                                     with_packages=read_with(tuple(with_packages), tuple(with_files)), offline=offline)
            return flags, request

        return f(*args, build_target=build, **kwargs)

    return wrapper


def target_options(f):
    """Adds the target and request flags; passes `flags` (TargetFlags) and `request` (ResolveRequest)."""

    @functools.wraps(f)
    def built(*args, build_target, **kwargs):
        kwargs["flags"], kwargs["request"] = build_target()
        return f(*args, **kwargs)

    return _target_option_decorators(built)


def deferred_target_options(f):
    """As target_options, but passes `target`: a function returning (flags, request), for a command that may
    not need them (`run --image`)."""

    @functools.wraps(f)
    def deferred(*args, build_target, **kwargs):
        return f(*args, target=build_target, **kwargs)

    return _target_option_decorators(deferred)


def image_input_options(f):
    """--dockerfile, --netrc and --lock: what `build` and `bundle` take besides the plan to make the same image."""
    f = click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
                     help="Install exactly this lock (`envbuilder lock --format requirements`), by hash.")(f)
    f = click.option("--netrc", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
                     help="Index credentials (.netrc) for the build, passed as a BuildKit secret.")(f)
    return click.option("--dockerfile", "dockerfile", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        metavar="FILE", help="Build FILE (a rendered Dockerfile you edited) instead of rendering one.")(f)

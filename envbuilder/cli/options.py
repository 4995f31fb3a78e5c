"""Shared CLI options: target flags (replace detection) and resolver request flags."""

from __future__ import annotations

import functools

import click

from envbuilder.plan import ResolveRequest, TargetFlags


def target_options(f):
    @click.option("--target-os", type=click.Choice(["linux", "windows", "macos"]), help="Resolve for this OS instead of the host's.")
    @click.option("--target-arch", type=click.Choice(["x86_64", "aarch64", "arm64"]), help="Resolve for this CPU architecture.")
    @click.option("--gpu", type=click.Choice(["none", "nvidia", "amd", "apple"]), help="Resolve for this accelerator (none: CPU).")
    @click.option("--cuda-driver", metavar="VERSION", help="NVIDIA driver version of the target, e.g. 570.86.")
    @click.option("--compute-capability", "compute_capability", multiple=True, metavar="X.Y", help="Target GPU compute capability (repeatable).")
    @click.option("--gpu-arch", multiple=True, metavar="gfxNNN", help="Target AMD GPU architecture (repeatable).")
    @click.option("--python", "python_pin", metavar="X.Y", help="Pin the Python version.")
    @click.option("--extra", "extras", multiple=True, metavar="NAME", help="Project extra to include (repeatable).")
    @click.option("--cuda-compat", type=click.Choice(["strict", "minor"]), default="strict", show_default=True,
                  help="strict: the toolkit's minimum driver; minor: CUDA minor-version compatibility.")
    @click.option("--flavor", metavar="FLAVOUR", help="Force a torch flavour (cpu, cu128, rocm6.3, default).")
    @functools.wraps(f)
    def wrapper(*args, target_os, target_arch, gpu, cuda_driver, compute_capability, gpu_arch,
                python_pin, extras, cuda_compat, flavor, **kwargs):
        kwargs["flags"] = TargetFlags(os=target_os, arch=target_arch, gpu=gpu, cuda_driver=cuda_driver,
                                      compute_capability=tuple(compute_capability), gpu_arch=tuple(gpu_arch))
        kwargs["request"] = ResolveRequest(python=python_pin, extras=tuple(extras), cuda_compat=cuda_compat, flavor=flavor)
        return f(*args, **kwargs)

    return wrapper

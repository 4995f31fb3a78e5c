"""`envbuilder detect`: show what this machine has (OS, CPU, GPUs, driver, CUDA, ROCm) and any probe findings.

Thin: one call to envbuilder.host.probes.detect_host, then JSON or a short table. Probe problems are findings,
so the command exits 0 even when nvidia-smi or rocminfo fails.
"""

from __future__ import annotations

import click

from envbuilder.cli.output import console, emit_json


@click.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the HostInfo as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="How long each probe program (nvidia-smi, rocminfo) may take.")
def detect(as_json: bool, timeout: float) -> None:
    """Detect this machine's OS, CPU and accelerator."""
    from envbuilder.host.probes import detect_host

    host = detect_host(timeout=timeout)
    if as_json:
        emit_json(host)
        return
    _present(host)


def _present(host) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()

    def row(label: str, value: str | None) -> None:
        if value:
            table.add_row(label, Text(value))  # Text: GPU names may contain "[...]", which is not markup

    row("OS", f"{host.os} ({host.os_release})" if host.os_release else host.os)
    row("Arch", host.arch)
    if host.os == "linux":
        row("WSL", "yes" if host.wsl else "no")
    row("Accelerator", {"none": "none (CPU only)", "nvidia": "NVIDIA", "amd": "AMD (ROCm)", "apple": "Apple Silicon (MPS)"}[host.gpu_vendor])
    for label, text in _gpu_lines(host.gpus):
        row(label, text)
    row("NVIDIA driver", host.nvidia_driver)
    row("CUDA (max)", host.cuda_driver_version)
    row("ROCm", host.rocm_version)

    out = console()
    out.print(table)
    if host.findings:
        out.print()
        out.print(Text("Findings:", style="bold"))
        for finding in host.findings:
            out.print(Text(f"- {finding}"))


def _gpu_lines(gpus) -> list[tuple[str, str]]:
    """Consecutive identical GPUs are shown once ("GPU 0-7: 8 x NVIDIA H100 ...") so big hosts stay short."""
    groups: list[list] = []
    for gpu in gpus:
        key = (gpu.name, gpu.compute_capability, gpu.gfx_arch, gpu.memory_mib)
        if groups and groups[-1][0] == key:
            groups[-1][1].append(gpu)
        else:
            groups.append([key, [gpu]])
    lines = []
    for _, members in groups:
        first, last = members[0], members[-1]
        details = [f"CC {first.compute_capability}" if first.compute_capability else None,
                   first.gfx_arch,
                   f"{first.memory_mib} MiB" if first.memory_mib else None]
        detail = ", ".join(d for d in details if d)
        text = (f"{len(members)} x " if len(members) > 1 else "") + first.name + (f" ({detail})" if detail else "")
        label = f"GPU {first.index}" if len(members) == 1 else f"GPU {first.index}-{last.index}"
        lines.append((label, text))
    return lines

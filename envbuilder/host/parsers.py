"""Pure parsers and normalisers for host detection: text in, values out, no I/O.

Each one is tested on outputs captured from real machines (tests/data/host/). Must not import
subprocess (nor envbuilder.proc), the probes, docker or the CLI.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence

from envbuilder.errors import ProbeError
from envbuilder.host.types import ArchName, GpuInfo, OsName
from envbuilder.values import Value

NVIDIA_QUERY_FIELDS: tuple[str, ...] = ("index", "name", "compute_cap", "memory.total", "driver_version", "uuid")
# compute_cap is missing from the nvidia-smi of older drivers (R470 answers 'Field "compute_cap" is not a
# valid field to query.'); this is the query that still works there.
NVIDIA_QUERY_FIELDS_NO_CC: tuple[str, ...] = ("index", "name", "memory.total", "driver_version", "uuid")

# nvidia-smi writes these for values a GPU, a vGPU or a MIG-enabled GPU cannot report.
_NVIDIA_UNAVAILABLE = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]", "[insufficient permissions]"}
_COMPUTE_CAP = re.compile(r"^\d{1,2}\.\d{1,2}$")
VERSION_RE = re.compile(r"^\d+(?:\.\d+)+$")
_GFX = re.compile(r"\bgfx[0-9a-f]{3,4}\b")


def normalise_os(system: str) -> OsName:
    """platform.system() -> "linux" | "windows" | "macos"; raises ProbeError for anything else."""
    name = system.strip().lower()
    if name == "linux":
        return "linux"
    if name == "darwin":
        return "macos"
    if name in ("windows", "win32") or name.startswith(("cygwin", "msys", "mingw")):
        return "windows"
    raise ProbeError(
        "unsupported-os",
        f"envbuilder does not support the operating system {system!r}",
        "run on Linux, Windows or macOS, or pass --target-os to resolve for another machine",
        context={"system": system},
    )


def normalise_arch(machine: str, os_name: OsName) -> ArchName:
    """platform.machine() -> "x86_64" | "aarch64" | "arm64" (macOS calls 64-bit ARM arm64, Linux aarch64)."""
    name = machine.strip().lower()
    if name in ("x86_64", "amd64", "x64", "x86-64"):
        return "x86_64"
    if name in ("aarch64", "arm64", "armv8", "armv8l", "aarch64_be"):
        return "arm64" if os_name == "macos" else "aarch64"
    raise ProbeError(
        "unsupported-arch",
        f"envbuilder does not support the CPU architecture {machine!r} (PyTorch publishes wheels for x86_64 and 64-bit ARM)",
        "pass --target-arch to resolve for another machine",
        context={"machine": machine},
    )


def parse_os_release(text: str) -> str | None:
    """PRETTY_NAME from /etc/os-release (shell-style KEY="value" lines), else NAME VERSION."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value.replace('\\"', '"').strip()
    if values.get("PRETTY_NAME"):
        return values["PRETTY_NAME"]
    name = " ".join(v for v in (values.get("NAME"), values.get("VERSION")) if v)
    return name or None


def is_wsl(proc_version: str | None, env: Mapping[str, str]) -> bool:
    """WSL kernels say "microsoft" in /proc/version (WSL1: "Microsoft", WSL2: "microsoft-standard-WSL2")."""
    if env.get("WSL_DISTRO_NAME") or env.get("WSL_INTEROP"):
        return True
    return bool(proc_version) and "microsoft" in proc_version.lower()


class NvidiaQuery(Value):
    """What `nvidia-smi --query-gpu=... --format=csv,noheader,nounits` said."""

    gpus: tuple[GpuInfo, ...] = ()
    driver: str | None = None
    ignored_lines: tuple[str, ...] = ()  # lines that were not a GPU row (MIG listings, warnings)


def _nvidia_value(raw: str) -> str | None:
    value = raw.strip()
    return None if value.lower() in _NVIDIA_UNAVAILABLE else value


def _mib(raw: str | None) -> int | None:
    if raw is None:
        return None
    match = re.fullmatch(r"(\d+)(?:\.\d+)?\s*(MiB)?", raw.strip(), flags=re.IGNORECASE)
    return int(match.group(1)) if match else None


def parse_nvidia_query(text: str, fields: Sequence[str] = NVIDIA_QUERY_FIELDS) -> NvidiaQuery:
    """Parse the CSV rows of an nvidia-smi --query-gpu call made with these fields (in this order).

    A row that does not start with an integer index, or has the wrong number of columns, is kept in
    ignored_lines rather than guessed at. Unavailable values ("[N/A]", "[Not Supported]") become None.
    """
    gpus: list[GpuInfo] = []
    ignored: list[str] = []
    driver: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        row = next(csv.reader([line], skipinitialspace=True), [])
        values = dict(zip(fields, (cell.strip() for cell in row)))
        index = values.get("index", "")
        name = _nvidia_value(values.get("name", ""))
        if len(row) != len(fields) or not index.isdigit() or not name:
            ignored.append(line.strip())
            continue
        cc = _nvidia_value(values.get("compute_cap", ""))
        row_driver = _nvidia_value(values.get("driver_version", ""))
        if row_driver and VERSION_RE.match(row_driver):
            driver = driver or row_driver
        gpus.append(
            GpuInfo(
                index=int(index),
                vendor="nvidia",
                name=name,
                compute_capability=cc if cc and _COMPUTE_CAP.match(cc) else None,
                memory_mib=_mib(_nvidia_value(values.get("memory.total", ""))),
                uuid=_nvidia_value(values.get("uuid", "")),
            )
        )
    return NvidiaQuery(gpus=tuple(gpus), driver=driver, ignored_lines=tuple(ignored))


def parse_nvidia_smi_header(text: str) -> tuple[str | None, str | None]:
    """(driver version, CUDA version) from the banner of plain `nvidia-smi`.

    "| NVIDIA-SMI 570.124.06   Driver Version: 570.124.06   CUDA Version: 12.8 |". Newer drivers label
    them "KMD Version" and "CUDA UMD Version"; both spellings are read. "CUDA Version: N/A" gives None.
    """
    driver = re.search(r"(?:Driver|KMD) Version:\s*(\d+(?:\.\d+)+)", text)
    cuda = re.search(r"CUDA (?:UMD )?Version\s*:\s*(\d+\.\d+)", text)
    return (driver.group(1) if driver else None, cuda.group(1) if cuda else None)


def parse_nvidia_proc_version(text: str) -> str | None:
    """The driver version from /proc/driver/nvidia/version.

    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.124.06  ..." or, for the open kernel modules,
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.124.06  Release Build ...".
    """
    match = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


class RocmAgents(Value):
    """The GPU agents rocminfo listed (CPU agents skipped)."""

    gpus: tuple[GpuInfo, ...] = ()
    agents_seen: int = 0  # all agents, CPUs included: 0 means the text was not rocminfo output


def parse_rocminfo(text: str) -> RocmAgents:
    """GPU agents from `rocminfo`: gfx arch (the agent Name), Marketing Name, Uuid, VRAM.

    Agents are the blocks after "Agent N" lines. Only the first value of each key counts, which skips the
    nested "ISA Info" names. VRAM is the first GLOBAL pool's Size, in KB.
    """
    agents: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    in_global_pool = False
    for line in text.splitlines():
        stripped = line.strip()
        if re.fullmatch(r"Agent\s+\d+", stripped):
            current = {}
            agents.append(current)
            in_global_pool = False
            continue
        if current is None:
            continue
        key, sep, value = stripped.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Segment":
            in_global_pool = value.startswith("GLOBAL")
        elif key == "Size" and in_global_pool and "vram_kb" not in current:
            current["vram_kb"] = value
        elif key == "Name" and "gfx" not in current and (gfx := _GFX.search(value)):
            current["gfx"] = gfx.group(0)  # the agent Name, or failing that its ISA name
        current.setdefault(key, value)

    gpus: list[GpuInfo] = []
    for agent in agents:
        if agent.get("Device Type", "").upper() != "GPU":
            continue
        gfx = agent.get("gfx")
        name = agent.get("Marketing Name") or agent.get("Name") or gfx or "AMD GPU"
        uuid = agent.get("Uuid")
        kb = re.match(r"\d+", agent.get("vram_kb", ""))
        gpus.append(
            GpuInfo(
                index=len(gpus),
                vendor="amd",
                name=name,
                gfx_arch=gfx,
                memory_mib=int(kb.group(0)) // 1024 if kb and int(kb.group(0)) else None,
                # rocminfo prints "GPU-XX" when the device has no unique id
                uuid=uuid if uuid and uuid.upper() != "GPU-XX" else None,
            )
        )
    return RocmAgents(gpus=tuple(gpus), agents_seen=len(agents))


def parse_rocm_agent_enumerator(text: str) -> tuple[str, ...]:
    """gfx names, one per GPU, from `rocm_agent_enumerator`; gfx000 is the CPU agent and is skipped."""
    names = []
    for line in text.splitlines():
        name = line.strip()
        if re.fullmatch(r"gfx[0-9a-f]{3,4}", name) and name != "gfx000":
            names.append(name)
    return tuple(names)


def parse_rocm_smi_product_names(text: str) -> dict[int, str]:
    """GPU index -> product name from `rocm-smi --showproductname` ("GPU[0] : Card Series: ...")."""
    names: dict[int, str] = {}
    for match in re.finditer(r"^GPU\[(\d+)\]\s*:\s*Card (?:Series|series)\s*:\s*(.+?)\s*$", text, flags=re.MULTILINE):
        names.setdefault(int(match.group(1)), match.group(2))
    return names


def parse_rocm_version(text: str) -> str | None:
    """The ROCm release from /opt/rocm/.info/version ("6.3.1-48" -> "6.3.1")."""
    match = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None

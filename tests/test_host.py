"""Host detection: the pure parsers on captured outputs (tests/data/host/), then detect_host() against fake
programs on PATH and a fake root directory. Nothing in envbuilder.host is patched."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from envbuilder.errors import ProbeError
from envbuilder.host.parsers import (
    NVIDIA_QUERY_FIELDS,
    NVIDIA_QUERY_FIELDS_NO_CC,
    is_wsl,
    normalise_arch,
    normalise_os,
    parse_nvidia_proc_version,
    parse_nvidia_query,
    parse_nvidia_smi_header,
    parse_os_release,
    parse_rocm_agent_enumerator,
    parse_rocm_smi_product_names,
    parse_rocm_version,
    parse_rocminfo,
)
from envbuilder.host.probes import detect_host
from envbuilder.host.types import HostInfo
from envbuilder.notices import Notice

HOST_DATA = Path(__file__).parent / "data" / "host"
CAT = shutil.which("cat")
SLEEP = shutil.which("sleep")


def sample(name: str) -> str:
    return (HOST_DATA / name).read_text()


# --- fakes at the boundary: executables on PATH and files under a root -------------------------------


def fake_program(bin_dir: Path, name: str, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / name
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(0o755)
    return exe


def prints(name: str, rc: int = 0) -> str:
    """Shell lines that print a captured sample and exit with rc."""
    return f'{CAT} "{HOST_DATA / name}"\nexit {rc}'


def fake_nvidia_smi(bin_dir: Path, *, query: str, header: str | None = None, query_rc: int = 0,
                    header_rc: int = 0, old_query: str | None = None) -> Path:
    """nvidia-smi that answers the compute_cap query, the query without it, and the plain banner."""
    no_cc = prints(old_query) if old_query else 'echo "unexpected query"; exit 2'
    banner = prints(header, header_rc) if header else prints(query, query_rc)
    return fake_program(bin_dir, "nvidia-smi", f"""case "$*" in
  *compute_cap*) {prints(query, query_rc).replace(chr(10), '; ')} ;;
  *--query-gpu*) {no_cc.replace(chr(10), '; ')} ;;
  *) {banner.replace(chr(10), '; ')} ;;
esac""")


def make_root(tmp_path: Path, *, os_release: str = "os-release-debian12.txt", proc_version: str = "proc-version-debian.txt",
              nvidia_proc: str | None = None, kfd: bool = False, rocm_version: str | None = None) -> Path:
    root = tmp_path / "root"
    files = {"etc/os-release": os_release, "proc/version": proc_version, "proc/driver/nvidia/version": nvidia_proc,
             "opt/rocm/.info/version": rocm_version}
    for rel, name in files.items():
        if name:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(sample(name))
    if kfd:
        (root / "dev").mkdir(parents=True, exist_ok=True)
        (root / "dev/kfd").write_text("")
    root.mkdir(exist_ok=True)
    return root


def linux(tmp_path: Path, bin_dir: Path, root: Path | None = None, **kwargs) -> HostInfo:
    bin_dir.mkdir(parents=True, exist_ok=True)
    return detect_host(path=str(bin_dir), root=root or make_root(tmp_path), env={}, system="Linux",
                       machine="x86_64", **kwargs)


# --- NVIDIA parsers -------------------------------------------------------------------------------------

NVIDIA_SAMPLES = [
    # (sample, count, name, compute capability, MiB, driver, CUDA from the banner)
    ("h100x8", 8, "NVIDIA H100 80GB HBM3", "9.0", 81559, "570.124.06", "12.8"),
    ("rtx4090", 1, "NVIDIA GeForce RTX 4090", "8.9", 24564, "560.35.03", "12.6"),
    ("rtx5090", 1, "NVIDIA GeForce RTX 5090", "12.0", 32607, "575.57.08", "12.9"),
    ("gtx1080", 1, "NVIDIA GeForce GTX 1080", "6.1", 8192, "535.183.01", "12.2"),
    ("v100", 1, "Tesla V100-SXM2-32GB", "7.0", 32768, "550.127.05", "12.4"),
    ("t4", 1, "Tesla T4", "7.5", 15360, "535.104.05", "12.2"),
]


@pytest.mark.parametrize("name,count,gpu,cc,mib,driver,cuda", NVIDIA_SAMPLES, ids=[s[0] for s in NVIDIA_SAMPLES])
def test_parse_nvidia_query_and_banner(name, count, gpu, cc, mib, driver, cuda):
    query = parse_nvidia_query(sample(f"nvidia-smi-query-{name}.csv"))
    assert len(query.gpus) == count
    assert [g.index for g in query.gpus] == list(range(count))
    first = query.gpus[0]
    assert (first.vendor, first.name, first.compute_capability, first.memory_mib) == ("nvidia", gpu, cc, mib)
    assert first.uuid.startswith("GPU-")
    assert query.driver == driver and query.ignored_lines == ()
    assert parse_nvidia_smi_header(sample(f"nvidia-smi-{name}.txt")) == (driver, cuda)


def test_parse_nvidia_query_h100_uuids_are_distinct():
    gpus = parse_nvidia_query(sample("nvidia-smi-query-h100x8.csv")).gpus
    assert len({g.uuid for g in gpus}) == 8


def test_parse_nvidia_query_mixed_gpus_keep_their_own_capability():
    gpus = parse_nvidia_query(sample("nvidia-smi-query-mixed.csv")).gpus
    assert [(g.name, g.compute_capability) for g in gpus] == [
        ("NVIDIA GeForce RTX 4090", "8.9"), ("NVIDIA GeForce GTX 1080 Ti", "6.1")]


def test_parse_nvidia_query_without_compute_cap_column():
    query = parse_nvidia_query(sample("nvidia-smi-query-old-driver.csv"), NVIDIA_QUERY_FIELDS_NO_CC)
    assert [(g.name, g.compute_capability, g.memory_mib) for g in query.gpus] == [("Tesla K80", None, 11441)] * 2
    assert query.driver == "470.182.03"
    assert parse_nvidia_smi_header(sample("nvidia-smi-old-driver.txt")) == ("470.182.03", "11.4")


def test_parse_nvidia_query_unavailable_fields_become_none():
    (gpu,) = parse_nvidia_query(sample("nvidia-smi-query-na.csv")).gpus
    assert gpu.name == "GRID A100D-4C"
    assert gpu.compute_capability is None and gpu.memory_mib is None
    assert parse_nvidia_query("0, Tesla T4, [Not Supported], 15360 MiB, 535.104.05, [N/A]").gpus[0].uuid is None


def test_parse_nvidia_query_keeps_mig_lines_out_of_the_gpu_list():
    query = parse_nvidia_query(sample("nvidia-smi-query-a100-mig.csv"))
    assert [g.name for g in query.gpus] == ["NVIDIA A100-SXM4-80GB"]
    assert len(query.ignored_lines) == 2 and all(ln.startswith("MIG") for ln in query.ignored_lines)


@pytest.mark.parametrize("text", ["", "No devices were found", sample("nvidia-smi-no-driver.txt"),
                                  "\x00\x01 garbage ::: 42", "0, 1, 2", "x, Tesla T4, 7.5, 15360, 535.104.05, GPU-1"])
def test_parse_nvidia_query_rejects_non_rows(text):
    assert parse_nvidia_query(text, NVIDIA_QUERY_FIELDS).gpus == ()


def test_parse_nvidia_smi_header_variants():
    assert parse_nvidia_smi_header(sample("nvidia-smi-kmd-header.txt")) == ("610.43.02", "13.3")
    assert parse_nvidia_smi_header("| NVIDIA-SMI 550.54   Driver Version: 550.54   CUDA Version: N/A |") == ("550.54", None)
    assert parse_nvidia_smi_header("garbage") == (None, None)


def test_parse_nvidia_proc_version():
    assert parse_nvidia_proc_version(sample("proc-driver-nvidia-version.txt")) == "570.124.06"
    assert parse_nvidia_proc_version(sample("proc-driver-nvidia-version-open.txt")) == "565.57.01"
    assert parse_nvidia_proc_version("nothing here") is None


# --- AMD parsers -------------------------------------------------------------------------------------


def test_parse_rocminfo_mi300x_skips_cpu_agents():
    parsed = parse_rocminfo(sample("rocminfo-mi300x.txt"))
    assert parsed.agents_seen == 10
    assert len(parsed.gpus) == 8
    assert {(g.vendor, g.name, g.gfx_arch, g.memory_mib) for g in parsed.gpus} == {
        ("amd", "AMD Instinct MI300X", "gfx942", 196592)}
    assert [g.index for g in parsed.gpus] == list(range(8))
    assert len({g.uuid for g in parsed.gpus}) == 8


def test_parse_rocminfo_rx7900xtx():
    (gpu,) = parse_rocminfo(sample("rocminfo-rx7900xtx.txt")).gpus
    assert (gpu.name, gpu.gfx_arch, gpu.memory_mib, gpu.uuid) == ("Radeon RX 7900 XTX", "gfx1100", 24560, "GPU-5f2a8c41e9d07b36")


def test_parse_rocminfo_without_agents():
    assert parse_rocminfo(sample("rocminfo-no-driver.txt")).agents_seen == 0
    assert parse_rocminfo("random words\nName: gfx942\n").gpus == ()


def test_parse_rocminfo_gfx_from_isa_name_and_placeholder_uuid():
    text = ("*******\nAgent 1\n*******\n  Name:  Some GPU\n  Uuid:  GPU-XX\n  Device Type:  GPU\n"
            "  ISA Info:\n    ISA 1\n      Name:  amdgcn-amd-amdhsa--gfx90a:sramecc+:xnack-\n")
    (gpu,) = parse_rocminfo(text).gpus
    assert (gpu.name, gpu.gfx_arch, gpu.uuid, gpu.memory_mib) == ("Some GPU", "gfx90a", None, None)


def test_parse_rocm_agent_enumerator_skips_cpu():
    assert parse_rocm_agent_enumerator(sample("rocm_agent_enumerator-mi300x.txt")) == ("gfx942",) * 8
    assert parse_rocm_agent_enumerator("gfx000\ngfx1100\nwarning: something\n") == ("gfx1100",)


def test_parse_rocm_smi_product_names():
    assert parse_rocm_smi_product_names(sample("rocm-smi-productname-mi300x.txt")) == {
        0: "AMD Instinct MI300X OAM", 1: "AMD Instinct MI300X OAM"}


@pytest.mark.parametrize("text,version", [("6.3.1-48\n", "6.3.1"), ("6.2.0-66", "6.2.0"), ("7.0", "7.0"), ("junk", None)])
def test_parse_rocm_version(text, version):
    assert parse_rocm_version(text) == version


# --- OS, arch, WSL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("system,expected", [("Linux", "linux"), ("Darwin", "macos"), ("Windows", "windows"),
                                             ("CYGWIN_NT-10.0", "windows")])
def test_normalise_os(system, expected):
    assert normalise_os(system) == expected


@pytest.mark.parametrize("machine,os_name,expected", [
    ("x86_64", "linux", "x86_64"), ("AMD64", "windows", "x86_64"), ("amd64", "linux", "x86_64"), ("x64", "windows", "x86_64"),
    ("aarch64", "linux", "aarch64"), ("arm64", "linux", "aarch64"), ("arm64", "macos", "arm64"), ("ARM64", "windows", "aarch64"),
])
def test_normalise_arch(machine, os_name, expected):
    assert normalise_arch(machine, os_name) == expected


def test_unsupported_os_and_arch_are_typed_errors():
    with pytest.raises(ProbeError) as err:
        normalise_os("SunOS")
    assert err.value.code == "unsupported-os"
    with pytest.raises(ProbeError) as err:
        normalise_arch("i686", "linux")
    assert err.value.code == "unsupported-arch"


def test_parse_os_release():
    assert parse_os_release(sample("os-release-debian12.txt")) == "Debian GNU/Linux 12 (bookworm)"
    assert parse_os_release(sample("os-release-ubuntu2404.txt")) == "Ubuntu 24.04.1 LTS"
    assert parse_os_release('NAME="Arch Linux"\n') == "Arch Linux"
    assert parse_os_release("") is None


def test_is_wsl():
    assert is_wsl(sample("proc-version-wsl2.txt"), {})
    assert is_wsl(None, {"WSL_DISTRO_NAME": "Ubuntu"})
    assert not is_wsl(sample("proc-version-debian.txt"), {})


# --- detect_host with fake programs -------------------------------------------------------------------


def test_detect_h100x8(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-h100x8.csv", header="nvidia-smi-h100x8.txt")
    host = linux(tmp_path, bin_dir)
    assert (host.os, host.arch, host.wsl, host.os_release) == ("linux", "x86_64", False, "Debian GNU/Linux 12 (bookworm)")
    assert host.gpu_vendor == "nvidia"
    assert len(host.gpus) == 8 and {g.compute_capability for g in host.gpus} == {"9.0"}
    assert (host.nvidia_driver, host.cuda_driver_version, host.rocm_version) == ("570.124.06", "12.8", None)
    assert host.findings == ()


def test_detect_mixed_gpus_notes_the_spread(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-mixed.csv", header="nvidia-smi-mixed.txt")
    host = linux(tmp_path, bin_dir)
    assert [g.compute_capability for g in host.gpus] == ["8.9", "6.1"]
    assert any("different compute capabilities (6.1, 8.9)" in f for f in map(str, host.findings))


def test_detect_old_driver_falls_back_to_query_without_compute_cap(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-old-driver-error.txt", query_rc=2,
                    old_query="nvidia-smi-query-old-driver.csv", header="nvidia-smi-old-driver.txt")
    host = linux(tmp_path, bin_dir)
    assert host.gpu_vendor == "nvidia"
    assert [g.name for g in host.gpus] == ["Tesla K80", "Tesla K80"]
    assert all(g.compute_capability is None for g in host.gpus)
    assert (host.nvidia_driver, host.cuda_driver_version) == ("470.182.03", "11.4")
    assert any("compute_cap" in f and "unknown" in f for f in map(str, host.findings))


def test_detect_unavailable_capability_is_a_finding(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-na.csv", header="nvidia-smi-v100.txt")
    host = linux(tmp_path, bin_dir)
    assert host.gpus[0].compute_capability is None
    assert any("no compute capability for GPU 0" in f for f in map(str, host.findings))


def test_detect_mig_lines_are_noted(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-a100-mig.csv", header="nvidia-smi-t4.txt")
    host = linux(tmp_path, bin_dir)
    assert len(host.gpus) == 1
    assert any("2 MIG device(s)" in f for f in map(str, host.findings))


def test_detect_hung_nvidia_smi_times_out(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "nvidia-smi", f"exec {SLEEP} 30")
    started = time.monotonic()
    host = linux(tmp_path, bin_dir, timeout=1)
    assert time.monotonic() - started < 10
    assert host.gpu_vendor == "none" and host.gpus == ()
    assert any(f.startswith("nvidia-smi timed out after 1 s; the driver may be hung") for f in map(str, host.findings))


def test_detect_hung_nvidia_smi_with_loaded_driver_keeps_the_driver_version(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "nvidia-smi", f"exec {SLEEP} 30")
    root = make_root(tmp_path, nvidia_proc="proc-driver-nvidia-version.txt")
    host = linux(tmp_path, bin_dir, root=root, timeout=1)
    assert (host.gpu_vendor, host.gpus, host.nvidia_driver) == ("nvidia", (), "570.124.06")
    assert any("timed out" in f and "570.124.06" in f for f in map(str, host.findings))


def test_detect_garbage_output(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "nvidia-smi", "echo 'Segmentation fault? %%% 0xdeadbeef'")
    host = linux(tmp_path, bin_dir)
    assert host.gpu_vendor == "none"
    assert any("could not read" in f and "0xdeadbeef" in f for f in map(str, host.findings))


def test_detect_nonzero_exit(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "nvidia-smi", "echo 'Unable to determine the device handle for GPU0000:01:00.0: Unknown Error' >&2\nexit 9")
    host = linux(tmp_path, bin_dir)
    assert host.gpu_vendor == "none"
    assert any(f.startswith("nvidia-smi exited with status 9 (Unable to determine the device handle") for f in map(str, host.findings))


@pytest.mark.parametrize("sample_name,rc,words", [
    ("nvidia-smi-no-driver.txt", 9, "could not communicate with the NVIDIA driver"),
    ("nvidia-smi-no-devices.txt", 6, "found no NVIDIA GPUs"),
    ("nvidia-smi-mismatch.txt", 18, "version mismatch"),
])
def test_detect_known_nvidia_smi_failures(tmp_path, sample_name, rc, words):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query=sample_name, query_rc=rc)
    host = linux(tmp_path, bin_dir)
    assert host.gpu_vendor == "none" and host.gpus == ()
    assert any(words in f for f in map(str, host.findings))


def test_detect_banner_failure_only_loses_the_cuda_version(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-t4.csv", header="nvidia-smi-no-driver.txt", header_rc=9)
    host = linux(tmp_path, bin_dir)
    assert host.gpu_vendor == "nvidia" and host.nvidia_driver == "535.104.05"
    assert host.cuda_driver_version is None
    assert any("CUDA version is unknown" in f for f in map(str, host.findings))


def test_detect_missing_nvidia_smi_uses_proc_driver_version(tmp_path):
    root = make_root(tmp_path, nvidia_proc="proc-driver-nvidia-version-open.txt")
    host = linux(tmp_path, tmp_path / "empty-bin", root=root)
    assert (host.gpu_vendor, host.nvidia_driver, host.gpus) == ("nvidia", "565.57.01", ())
    assert any("nvidia-smi was not found" in f for f in map(str, host.findings))


def test_detect_cpu_only(tmp_path):
    host = linux(tmp_path, tmp_path / "empty-bin")
    assert (host.gpu_vendor, host.gpus, host.nvidia_driver, host.rocm_version) == ("none", (), None, None)
    assert host.findings == (Notice("cpu-only-host", "no NVIDIA or AMD GPU was found; this host runs on CPU only"),)


def test_detect_wsl_finds_nvidia_smi_in_the_wsl_lib_dir(tmp_path):
    root = make_root(tmp_path, proc_version="proc-version-wsl2.txt", os_release="os-release-ubuntu2404.txt")
    fake_nvidia_smi(root / "usr/lib/wsl/lib", query="nvidia-smi-query-rtx4090.csv", header="nvidia-smi-rtx4090.txt")
    host = linux(tmp_path, tmp_path / "empty-bin", root=root)
    assert host.wsl and host.os_release == "Ubuntu 24.04.1 LTS"
    assert host.gpu_vendor == "nvidia" and host.gpus[0].compute_capability == "8.9"


def test_detect_wsl_from_environment(tmp_path):
    host = detect_host(path=str(tmp_path), root=make_root(tmp_path), env={"WSL_DISTRO_NAME": "Ubuntu"},
                       system="Linux", machine="x86_64")
    assert host.wsl


def test_detect_linux_arm64_is_aarch64(tmp_path):
    host = detect_host(path=str(tmp_path), root=make_root(tmp_path), env={}, system="Linux", machine="arm64")
    assert host.arch == "aarch64"


def test_detect_mi300x(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "rocminfo", prints("rocminfo-mi300x.txt"))
    root = make_root(tmp_path, kfd=True, rocm_version="opt-rocm-info-version.txt")
    host = linux(tmp_path, bin_dir, root=root)
    assert host.gpu_vendor == "amd" and host.rocm_version == "6.3.1"
    assert len(host.gpus) == 8 and {g.gfx_arch for g in host.gpus} == {"gfx942"}
    assert host.nvidia_driver is None and host.findings == ()


def test_detect_rocminfo_found_under_opt_rocm_bin(tmp_path):
    root = make_root(tmp_path, kfd=True)
    fake_program(root / "opt/rocm/bin", "rocminfo", prints("rocminfo-rx7900xtx.txt"))
    host = linux(tmp_path, tmp_path / "empty-bin", root=root)
    assert host.gpu_vendor == "amd" and host.gpus[0].gfx_arch == "gfx1100"
    assert any("ROCm version is unknown" in f for f in map(str, host.findings))


def test_detect_rocminfo_failure_falls_back_to_agent_enumerator(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "rocminfo", prints("rocminfo-no-driver.txt", rc=1))
    fake_program(bin_dir, "rocm_agent_enumerator", prints("rocm_agent_enumerator-mi300x.txt"))
    fake_program(bin_dir, "rocm-smi", prints("rocm-smi-productname-mi300x.txt"))
    host = linux(tmp_path, bin_dir, root=make_root(tmp_path, rocm_version="opt-rocm-info-version.txt"))
    assert host.gpu_vendor == "amd" and len(host.gpus) == 8
    assert host.gpus[0].name == "AMD Instinct MI300X OAM" and host.gpus[7].name == "AMD GPU (gfx942)"
    assert any("not loaded" in f and "rocm_agent_enumerator" in f for f in map(str, host.findings))


def test_detect_hung_rocminfo_times_out(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "rocminfo", f"exec {SLEEP} 30")
    started = time.monotonic()
    host = linux(tmp_path, bin_dir, timeout=1)
    assert time.monotonic() - started < 10
    assert host.gpu_vendor == "none"
    assert any(f.startswith("rocminfo timed out after 1 s") for f in map(str, host.findings))


def test_detect_kfd_without_rocm_tools_is_a_finding(tmp_path):
    host = linux(tmp_path, tmp_path / "empty-bin", root=make_root(tmp_path, kfd=True))
    assert host.gpu_vendor == "none"
    assert any("/dev/kfd exists" in f for f in map(str, host.findings))


def test_detect_apple_silicon(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "sysctl", f'case "$*" in *brand_string*) {CAT} "{HOST_DATA / "sysctl-brand-m2pro.txt"}";; *) exit 1;; esac')
    fake_program(bin_dir, "sw_vers", "echo 15.1")
    host = detect_host(path=str(bin_dir), root=tmp_path, env={}, system="Darwin", machine="arm64")
    assert (host.os, host.arch, host.os_release, host.gpu_vendor) == ("macos", "arm64", "macOS 15.1", "apple")
    assert [(g.vendor, g.name) for g in host.gpus] == [("apple", "Apple M2 Pro")]
    assert host.findings == ()


def test_detect_apple_silicon_without_sysctl(tmp_path):
    host = detect_host(path=str(tmp_path), root=tmp_path, env={}, system="Darwin", machine="arm64")
    assert host.gpus[0].name == "Apple M-series" and host.os_release is None


def test_detect_rosetta_reports_arm64(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_program(bin_dir, "sysctl", 'case "$*" in *proc_translated*) echo 1;; *brand_string*) echo "Apple M1";; esac')
    host = detect_host(path=str(bin_dir), root=tmp_path, env={}, system="Darwin", machine="x86_64")
    assert (host.arch, host.gpu_vendor, host.gpus[0].name) == ("arm64", "apple", "Apple M1")
    assert any("Rosetta" in f for f in map(str, host.findings))


def test_detect_intel_mac_is_cpu_only(tmp_path):
    host = detect_host(path=str(tmp_path), root=tmp_path, env={}, system="Darwin", machine="x86_64")
    assert (host.arch, host.gpu_vendor, host.gpus) == ("x86_64", "none", ())


def test_detect_windows_normalises_amd64_and_probes_nvidia(tmp_path):
    bin_dir = tmp_path / "bin"
    fake_nvidia_smi(bin_dir, query="nvidia-smi-query-rtx5090.csv", header="nvidia-smi-rtx5090.txt")
    host = detect_host(path=str(bin_dir), root=tmp_path, env={}, system="Windows", machine="AMD64")
    assert (host.os, host.arch, host.wsl) == ("windows", "x86_64", False)
    assert host.gpus[0].compute_capability == "12.0" and host.cuda_driver_version == "12.9"


def test_detect_real_host_runs_and_returns_quickly():
    started = time.monotonic()
    host = detect_host()
    assert time.monotonic() - started < 60
    assert host.os in ("linux", "macos", "windows")
    if host.gpu_vendor == "none":
        assert host.gpus == ()
    HostInfo.model_validate_json(host.model_dump_json())

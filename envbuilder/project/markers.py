"""PEP 508 marker environments for a *target* platform (not the host the code runs on).

Pure: must not import subprocess, urllib, docker, the readers, the resolver or the CLI.
"""

from __future__ import annotations

from envbuilder.errors import ProjectError

_SYS_PLATFORM = {"linux": "linux", "windows": "win32", "win32": "win32", "macos": "darwin", "darwin": "darwin"}
_PLATFORM_SYSTEM = {"linux": "Linux", "win32": "Windows", "darwin": "Darwin"}
# platform.machine() spelling per OS: Windows reports AMD64/ARM64, macOS arm64, Linux aarch64.
_MACHINE = {
    ("linux", "x86_64"): "x86_64", ("linux", "aarch64"): "aarch64", ("linux", "arm64"): "aarch64",
    ("win32", "x86_64"): "AMD64", ("win32", "aarch64"): "ARM64", ("win32", "arm64"): "ARM64",
    ("darwin", "x86_64"): "x86_64", ("darwin", "aarch64"): "arm64", ("darwin", "arm64"): "arm64",
}


def target_environment(os: str, arch: str, python: str) -> dict[str, str]:
    """PEP 508 marker variables for a target platform (not the host): os linux|windows|macos, arch, python "3.11"."""
    platform = _SYS_PLATFORM.get(os.lower())
    if platform is None:
        raise ProjectError("unknown-target-os", f"unknown target OS {os!r}", "use linux, windows or macos")
    machine = _MACHINE.get((platform, arch.lower() if arch.lower() != "amd64" else "x86_64"))
    if machine is None:
        raise ProjectError("unknown-target-arch", f"unknown target architecture {arch!r}", "use x86_64, aarch64 or arm64")
    parts = python.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3]):
        raise ProjectError("invalid-python-version", f"invalid Python version {python!r}", "pass X.Y, e.g. 3.11")
    full = ".".join((parts + ["0"])[:3])
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "nt" if platform == "win32" else "posix",
        "platform_machine": machine,
        "platform_release": "",
        "platform_system": _PLATFORM_SYSTEM[platform],
        "platform_version": "",
        "platform_python_implementation": "CPython",
        "python_full_version": full,
        "python_version": ".".join(parts[:2]),
        "sys_platform": platform,
    }

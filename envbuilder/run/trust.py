"""The trust boundary between a project's config and the host: what a job may reach outside its container.

A project fetched from a git URL is untrusted input: its jobs may not mount host paths outside its own checkout,
mount a container engine's socket (root on the host), or set variables that point tools at host services,
unless the user grants it on the command line (`--trust mounts,docker-socket,env`, `--allow-mounts`). A local
folder is the user's own and keeps its powers, but a job that mounts an engine socket or `/` is warned about.
What the config cannot ask for at all (privileged, devices, capabilities, the host's network, PID or IPC
namespace) has no key in its schema: unknown keys are refused when the config is loaded (envbuilder.project.config),
and only the user (flags, the user config, the environment: envbuilder.defaults) can set the network. docs/security.md is the user's account of this model.

Pure but for reading the file system (resolving symlinks, telling a socket from a file). Must not import docker,
the run store, pydantic or the CLI.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from envbuilder.errors import UsageError

# What --trust can grant, and what each lets a remote project's jobs do.
GRANTS: dict[str, str] = {
    "mounts": "mount host paths outside the project's checkout",
    "docker-socket": "mount a container engine's socket (or a folder holding one): full control of the host",
    "env": "set variables that point tools in the container at host services (DOCKER_HOST, SSH_AUTH_SOCK, ...)",
}
# What users may expect to grant, but no project config can ask for: only the command line sets these.
_NOT_GRANTABLE: dict[str, str] = {
    "network": "a project's config cannot choose the network; pass --network host yourself",
    "privileged": "a project's config cannot ask for privileged containers, and envbuilder never starts one",
    "devices": "a project's config cannot ask for devices; GPUs come from --gpus",
    "cap-add": "a project's config cannot add capabilities",
    "pid": "a project's config cannot share the host's PID namespace",
    "ipc": "a project's config cannot share the host's IPC namespace",
}
# Variables that make a client connect to a daemon or agent: a container that can reach the host (a mounted
# socket, the bridge's gateway) would then talk to the host's engine, ssh agent or session bus.
HOST_SERVICE_VARIABLES = frozenset({
    "DOCKER_HOST", "DOCKER_CONTEXT", "CONTAINER_HOST", "CONTAINERD_ADDRESS", "BUILDKIT_HOST", "PODMAN_HOST",
    "SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS", "DBUS_SYSTEM_BUS_ADDRESS", "KUBECONFIG", "XDG_RUNTIME_DIR",
})
# Where container engines listen on Linux (Docker, containerd, Podman, BuildKit, CRI-O).
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                  "/run/podman/podman.sock", "/run/buildkit/buildkitd.sock", "/var/run/crio/crio.sock")


@dataclass(frozen=True)
class Trust:
    """Where the project came from and what the user granted it (names from GRANTS)."""

    remote: bool = False
    grants: frozenset[str] = field(default_factory=frozenset)

    def allows(self, grant: str) -> bool:
        return not self.remote or grant in self.grants


def parse_trust(values: Iterable[str], *, allow_mounts: bool = False) -> frozenset[str]:
    """`--trust mounts,env --trust docker-socket` (and `--allow-mounts`) -> the grant names; `all` grants each."""
    names: set[str] = {"mounts"} if allow_mounts else set()
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if not name:
                continue
            if name == "all":
                names.update(GRANTS)
            elif name in GRANTS:
                names.add(name)
            elif name in _NOT_GRANTABLE:
                raise UsageError("usage", f"--trust {name}: {_NOT_GRANTABLE[name]}",
                                 f"--trust takes {', '.join(GRANTS)} or all")
            else:
                raise UsageError("usage", f"--trust {name!r} is not something a project can be granted",
                                 f"--trust takes {', '.join(GRANTS)} or all (comma-separated)")
    return frozenset(names)


@dataclass(frozen=True)
class Refusal:
    """One thing a job asked for that needs a grant it does not have."""

    job: str
    grant: str
    what: str


def check_job(name: str, job: object, project_dir: Path, trust: Trust,
              environ: Mapping[str, str] = os.environ) -> tuple[list[Refusal], list[str]]:
    """(what the job needs a grant for and does not have, warnings) for one config Job.

    A remote project is checked against its grants; a local one is only warned about for an engine socket
    or `/` among its mounts. environ gives DOCKER_HOST and XDG_RUNTIME_DIR (where rootless engines listen).
    """
    checkout = Path(project_dir).resolve()
    sockets = engine_sockets(environ)
    refusals: list[Refusal] = []
    warnings: list[str] = []
    for mount in getattr(job, "mounts", ()):
        source = mount.host_path(checkout)
        shown = f"{mount.source}:{mount.target}"
        exposed = _exposed_sockets(source, sockets)
        if exposed:
            if not trust.remote:
                warnings.append(f"job {name!r} mounts {shown}, which gives it the container engine at {exposed[0]}: "
                                "full control of this machine")
            elif not trust.allows("docker-socket"):
                refusals.append(Refusal(name, "docker-socket", f"mounts {shown}, which exposes the engine socket {exposed[0]}"))
        if source == Path("/"):
            if not trust.remote:
                warnings.append(f"job {name!r} mounts the host's root folder ({shown}"
                                f"{'' if mount.read_only else ', writable'})")
        if trust.remote and not _inside(source, checkout) and not trust.allows("mounts"):
            refusals.append(Refusal(name, "mounts", f"mounts {shown}, a host path outside the project's checkout"))
    for key, value in dict(getattr(job, "env", {}) or {}).items():
        if trust.remote and not trust.allows("env") and (key in HOST_SERVICE_VARIABLES or _names_socket(str(value), sockets)):
            refusals.append(Refusal(name, "env", f"sets {key}={value}, which points tools at a host service"))
    return refusals, warnings


def check_jobs(jobs: Mapping[str, object], project_dir: Path, trust: Trust, *, source: str,
               environ: Mapping[str, str] = os.environ) -> list[str]:
    """Check every job about to run; raise `untrusted-config` naming each refusal and the grant it needs.
    Returns the warnings (for a local project)."""
    refusals: list[Refusal] = []
    warnings: list[str] = []
    for name, job in jobs.items():
        refused, warned = check_job(name, job, project_dir, trust, environ)
        refusals += refused
        warnings += warned
    if refusals:
        needed = sorted({r.grant for r in refusals})
        details = "; ".join(f"job {r.job!r} {r.what}" for r in refusals)
        flag = "--allow-mounts" if needed == ["mounts"] else f"--trust {','.join(needed)}"
        raise UsageError("untrusted-config", f"{source} is a remote project, and {details}",
                              f"read its config first; if you trust it, pass {flag}",
                              {"grants_needed": needed, "refusals": [r.what for r in refusals]})
    return warnings


def engine_sockets(environ: Mapping[str, str] = os.environ) -> tuple[Path, ...]:
    """Every place a container engine may listen on this host (resolved: /var/run is usually /run)."""
    paths = [Path(p) for p in ENGINE_SOCKETS]
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.append(Path(host[len("unix://"):]))
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:  # rootless Docker and Podman
        paths += [Path(runtime) / "docker.sock", Path(runtime) / "podman" / "podman.sock"]
    resolved: list[Path] = []
    for path in paths:
        for candidate in (path, _resolved(path)):
            if candidate not in resolved:
                resolved.append(candidate)
    return tuple(resolved)


def _exposed_sockets(source: Path, sockets: tuple[Path, ...]) -> list[Path]:
    """The engine sockets a mount of source makes reachable: the socket itself, or a folder above it."""
    exposed = [s for s in sockets if s == source or source in s.parents]
    if not exposed and _is_socket(source):
        exposed.append(source)  # a socket we do not know by name is still a way out of the container
    return exposed


def _names_socket(value: str, sockets: tuple[Path, ...]) -> bool:
    return any(str(s) in value for s in sockets)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False

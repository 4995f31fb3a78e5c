"""Typed errors: every failure a user can cause or meet is an EnvbuilderError with a code and a hint.

Nothing inside the library prints or exits; the CLI maps these to one line and an exit code
(see envbuilder.cli). Docker's error strings are classified here, in one place.
Must not import docker, subprocess wrappers or the CLI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Exit codes the CLI returns. 3 is reserved for resolver conflicts, as the resolve contract says.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_DOCKER = 4
EXIT_INTERRUPTED = 130


# Not frozen: Python assigns __traceback__ and __context__ on exceptions as they propagate.
@dataclass(eq=False)
class EnvbuilderError(Exception):
    """A failure with a stable code (kebab-case), a one-line message and a hint saying what to do."""

    code: str
    message: str
    hint: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    exit_code: int = EXIT_ERROR

    def __post_init__(self) -> None:
        super().__init__(self.code, self.message)

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f". Hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint, "context": self.context}


class ProbeError(EnvbuilderError):
    """A host probe failed in a way the caller may want to report as a finding."""


class ProjectError(EnvbuilderError):
    """The project could not be read (bad TOML, hostile git URL, missing path)."""


class ResolveConflict(EnvbuilderError):
    """The project's own constraints contradict each other."""


class DockerError(EnvbuilderError):
    """The Docker engine or CLI failed; classified by diagnose_docker()."""


# (pattern, code, hint). Order matters: the first match wins.
_DOCKER_DIAGNOSES: tuple[tuple[str, str, str], ...] = (
    (r"Cannot connect to the Docker daemon|docker\.sock.*(no such file|connection refused)|Error while fetching server API version",
     "docker-not-running", "start the engine with `scripts/engine.sh` (or `sudo systemctl start docker`)"),
    (r"permission denied.*docker\.sock",
     "docker-permission", "add your user to the docker group or run with sudo"),
    (r"could not select device driver .*gpu|nvidia-container-cli|unknown or invalid runtime name: nvidia",
     "nvidia-runtime-missing", "install the NVIDIA Container Toolkit and restart Docker, or run with --gpus none"),
    (r"pull access denied|manifest unknown|not found: manifest|failed to resolve source metadata|repository does not exist",
     "image-not-found", "check the image name; with no registry reachable use `envbuilder base bootstrap` and --base-image"),
    (r"ProxyError|Cannot connect to proxy|Unable to connect to proxy|proxy (?:error|connect)|tunnel error",
     "proxy-unreachable", "the build could not use its proxy: check --http-proxy/--https-proxy (HTTP(S)_PROXY), "
     "and list local mirrors in --no-proxy"),
    (r"dial tcp|no such host|i/o timeout|TLS handshake timeout|connection reset by peer",
     "registry-unreachable", "no registry is reachable; use a local base (`envbuilder base bootstrap`) or a mirror"),
    (r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|x509: certificate signed by unknown authority|invalid peer certificate|UnknownIssuer",
     "tls-untrusted", "pass --ca-cert FILE (or --host-ca) so the build trusts your proxy's certificate authority"),
    (r"unknown flag: --mount|the --mount option requires BuildKit|buildx.*(not installed|component is missing)|BuildKit is enabled but the buildx",
     "buildkit-missing", "install docker buildx, or pass --docker /usr/bin/docker for a client with built-in BuildKit"),
    (r"No solution found when resolving|Because .* depends on|ResolutionImpossible|No matching distribution found",
     "dependency-unresolvable", "the package index has no release that satisfies the plan; check --index-url/--torch-index-url"),
    (r"no space left on device",
     "disk-full", "free space with `docker system prune` or move Docker's data root"),
)


def diagnose_docker(output: str, *, what: str = "docker") -> DockerError:
    """Classify Docker/BuildKit output into a DockerError with a hint."""
    for pattern, code, hint in _DOCKER_DIAGNOSES:
        match = re.search(pattern, output, flags=re.IGNORECASE)
        if match:
            line = _line_containing(output, match.start())
            return DockerError(code, f"{what} failed: {line}", hint, exit_code=EXIT_DOCKER)
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
    return DockerError("docker-failed", f"{what} failed: {last[:300]}", "rerun with -v and read the log", exit_code=EXIT_DOCKER)


def _line_containing(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start : end if end != -1 else None].strip()[:300]

"""Docker's error strings classified into typed errors, in one place: diagnose_docker turns the output of the
engine, the SDK or a BuildKit build into a DockerError with a code and a hint. Both engines and the build call it.
Pure (the `re` module only): must not import the docker SDK, subprocess wrappers or the CLI.
"""

from __future__ import annotations

import re

from envbuilder.errors import DockerError

# (pattern, code, hint). Order matters: the first match wins.
_DOCKER_DIAGNOSES: tuple[tuple[str, str, str], ...] = (
    (r"Cannot connect to the Docker daemon|docker\.sock.*(no such file|connection refused)|Error while fetching server API version",
     "docker-not-running", "start the engine with `scripts/engine.sh` (or `sudo systemctl start docker`)"),
    # The engine died mid-build: the docker CLI's session ends with a bare "unexpected EOF" line (BuildKit
    # steps print their own errors behind a "#N" prefix), buildx's with gRPC's Unavailable.
    (r"(?m)^\s*unexpected EOF\s*$|rpc error: code = Unavailable|error reading from server: EOF",
     "docker-not-running", "the Docker engine stopped during the build: start it again, then rerun the build"),
    (r"permission denied.*docker\.sock",
     "docker-permission", "add your user to the docker group or run with sudo"),
    (r"could not select device driver .*gpu|nvidia-container-cli|unknown or invalid runtime name: nvidia",
     "nvidia-runtime-missing", "install the NVIDIA Container Toolkit and restart Docker, or run with --gpus none"),
    # `--publish` onto a host port something else holds: "Bind for 0.0.0.0:8080 failed: port is already allocated"
    (r"port is already allocated|address already in use",
     "port-in-use", "the host port of a --publish is taken: pick another HOST port, or stop what listens there"),
    (r"pull access denied|manifest unknown|not found: manifest|failed to resolve source metadata|repository does not exist",
     "image-not-found", "check the image name; with no registry reachable use `envbuilder base bootstrap` and --base-image"),
    # A registry's 401 as the engine words it (distribution inspect, push, pull from a private registry).
    (r"no basic auth credentials|unauthorized: authentication required|authentication required|unauthorized: |"
     r"denied: requested access",
     "registry-auth", "log in to the registry: `envbuilder login HOST -u USER --password-stdin`"),
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
            return DockerError(code, f"{what} failed: {line}", hint)
    last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
    return DockerError("docker-failed", f"{what} failed: {last[:300]}", "rerun with -v and read the log")


def _line_containing(text: str, offset: int) -> str:
    start = text.rfind("\n", 0, offset) + 1
    end = text.find("\n", offset)
    return text[start : end if end != -1 else None].strip()[:300]

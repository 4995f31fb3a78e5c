"""The catalog of error codes: every code envbuilder can raise, the error class that carries it, and what it means.

One owner: docs/errors.md is generated from this table (`python -m envbuilder.error_codes`), and
tests/test_error_catalog.py checks that every code raised anywhere in the package appears here, with the class
that raises it. The class decides the exit code (see envbuilder.errors). Imports nothing but errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from envbuilder.errors import (
    DockerError,
    EnvbuilderError,
    JobEnded,
    ProbeError,
    ProjectError,
    ResolveConflict,
    UsageError,
)


@dataclass(frozen=True)
class ErrorCode:
    code: str
    error: type[EnvbuilderError]
    meaning: str

    @property
    def exit_code(self) -> int:
        return self.error.exit_code


def _table(error: type[EnvbuilderError], rows: dict[str, str]) -> tuple[ErrorCode, ...]:
    return tuple(ErrorCode(code, error, meaning) for code, meaning in rows.items())


_ENTRIES = (
    *_table(UsageError, {
        "usage": "the command line is malformed (unknown option, missing argument, options that exclude each other)",
        "request-invalid": "a resolve request (--python, --flavor, pins) is not a valid value",
        "target-invalid": "the declared target (OS, arch, GPU, driver) is incomplete or contradictory",
        "unknown-compute-capability": "--compute-capability names no GPU generation the matrix knows",
        "credentials-in-url": "an index URL that a Dockerfile or lock would keep (a project's declared index) carries "
                              "user:password@; pass credentials with --netrc instead",
        "credentials-unusable": "the credentials in the URL options cannot become the build's .netrc (two logins "
                                "for one host, characters a .netrc cannot hold, a host also in --netrc FILE)",
        "url-invalid": "an index, find-links or proxy option is not a URL pip and uv can use (no scheme, ftp://, spaces)",
        "ca-cert-invalid": "the --ca-cert file is not a regular file of PEM certificates",
        "image-tag-invalid": "--tag is not a valid Docker image name (NAME[:TAG], lowercase)",
        "data-dir-invalid": "--data-dir is empty or names something that is not a folder",
        "lock-not-for-scripts": "--lock applies to Dockerfiles; for scripts the lock file is the recipe",
        "index-empty": "the folders given to `index serve` hold no wheels",
        "defaults-invalid": "the user config's [defaults] table or an ENVBUILDER_* variable holds a bad value "
                            "(unknown key, not a URL or REGISTRY/REPO, a missing file, a top-level `registry`)",
        "cluster-config-invalid": "the user config's [clusters] profiles are not valid TOML or fail validation",
        "cluster-profile-not-found": "`submit --profile` names no [clusters.NAME] profile in the user config",
        "cluster-engine-mismatch": "--to names another engine than the profile's",
        "cluster-engine-missing": "`submit` was given neither --to nor a profile (nor a job [cluster] table)",
        "gpu-type-unknown": "the GPU type is not in compatibility.json's gpus table",
        "gpu-type-unsupported": "the image has no kernels for the GPU type asked for (or is a CPU build)",
        "cluster-needs-registry": "the cluster's nodes cannot use a local image: it must be pushed to a registry",
        "untrusted-config": "a project from a git URL asks for host access (mounts outside its checkout, the Docker "
                            "socket, host-service variables) that --trust/--allow-mounts did not grant",
    }),
    *_table(ResolveConflict, {
        "conflict": "the project's own constraints contradict each other, or no build satisfies them on the target",
        "index-has-no-fit": "the torch mirror serves no build that fits the project and the target",
        "no-builds-for-platform": "no torch release has builds for the target OS and architecture",
        "no-runnable-build": "no torch build runs on the target's GPU and driver",
        "direct-wheel-platform": "the torch wheel the project names by URL is built for another OS or CPU than the target",
        "torch-dependents-conflict": "packages that depend on torch (torchtext, xformers, a package requiring torch==X) "
                                     "cannot install alongside the torch the plan chose",
    }),
    *_table(ProjectError, {
        "project-not-found": "the project folder does not exist or is not a folder",
        "project-invalid-toml": "pyproject.toml or envbuilder.toml is not valid TOML",
        "project-invalid-yaml": "environment.yml or pixi.lock is not valid YAML",
        "project-no-metadata": "the folder declares no dependencies at all (no pyproject, setup.py, setup.cfg, "
                               "requirements*.txt or environment.yml) and no --with was given",
        "project-invalid-config": "a project metadata field has the wrong type or value",
        "project-invalid-url": "an index or find-links URL the project declares (pyproject.toml, requirements.txt) "
                               "is not an http(s) or file URL",
        "project-not-utf8": "a TOML file or setup.cfg is not UTF-8 (TOML must be)",
        "project-too-deep": "a project file nests deeper than its parser allows (a TOML array, YAML, a setup.py "
                            "expression); no real project file comes near",
        "project-file-unreadable": "a project file is there but cannot be read (a symlink loop or to nothing, a FIFO, "
                                   "a folder, no permission)",
        "project-file-missing": "a requirements file names a -r/-c file that does not exist in the project",
        "project-invalid-requirement": "a requirement string is not a valid PEP 508 requirement",
        "invalid-python-version": "requires-python or a Python pin is not a valid specifier",
        "config-invalid": "[tool.envbuilder] (or envbuilder.toml) fails validation; every problem is listed with its field path",
        "job-not-found": "the named job is not in the project's config",
        "unsafe-git-url": "the git URL uses a transport or form that could run code or reach local files",
        "unsafe-git-ref": "the git ref could be read as an option or is not a valid ref name",
        "unknown-git-ref": "the git ref does not exist in the repository",
        "git-missing": "git is not installed",
        "git-clone-failed": "cloning the repository failed",
        "git-fetch-failed": "fetching the repository failed",
        "git-checkout-failed": "checking out the ref failed",
        "git-timeout": "a git command took longer than its timeout",
        "unknown-target-os": "--target-os is not linux, windows or macos",
        "unknown-target-arch": "--target-arch is not x86_64 or aarch64/arm64",
        "unknown-extra": "--extra names an extra the project does not declare",
    }),
    *_table(ProbeError, {
        "unsupported-os": "the host's operating system is not one envbuilder can detect",
        "unsupported-arch": "the host's CPU architecture is not one envbuilder can detect",
    }),
    *_table(DockerError, {
        "docker-failed": "a Docker command failed in a way not classified below; the log has the details",
        "docker-not-running": "no Docker engine answers on the socket",
        "docker-permission": "the user may not use the Docker socket",
        "nvidia-runtime-missing": "the engine has no NVIDIA runtime, so GPUs cannot be passed to containers",
        "image-not-found": "the image does not exist locally and cannot be pulled",
        "port-in-use": "a --publish names a host port that something else already uses",
        "docker-cli-missing": "an interactive session (`shell`, `run -it`) needs the docker CLI, and none was found",
        "proxy-unreachable": "a build could not use its HTTP(S) proxy",
        "registry-unreachable": "no registry is reachable from the engine",
        "tls-untrusted": "a download failed TLS verification (an intercepting proxy's CA is not trusted)",
        "buildkit-missing": "no docker client that can run BuildKit builds was found",
        "dependency-unresolvable": "the package index has no release that satisfies the plan",
        # A failed build's log, read by build/failure.py: the cause, with the host and the package.
        "download-failed": "a build could not download a package: the host does not resolve, refuses, times out "
                           "or answers with an HTTP error (the message names the host and the package)",
        "package-not-found": "an index the build uses answered, but lists no such package (a 404 page)",
        "index-insecure": "pip ignored a plain-http index that is not on localhost",
        "no-wheel-for-python": "the mirror has the package, but no wheel for the plan's Python (the message lists "
                               "the Pythons it has)",
        "base-python-mismatch": "the base image's Python is not the plan's (--python and --base-image disagree)",
        "disk-full": "no space left on the device",
        "build-timeout": "a build took longer than its timeout",
        "import-failed": "docker import of a base file system failed",
        "engine-missing": "no Docker engine is installed",
        "engine-needs-root": "installing or starting the engine needs root",
        "engine-install-failed": "installing the Docker engine failed",
        "engine-start-failed": "the Docker engine did not start",
    }),
    *_table(EnvbuilderError, {
        "bad-env": "an environment variable for a job is not NAME=VALUE with a valid name",
        "bad-gpus": "--gpus is not all, none, a count or device=IDS",
        "bad-mount": "a mount is not HOST:CONTAINER[:ro|rw]",
        "bad-publish": "a --publish is not [IP:]HOST:CONTAINER[/tcp|udp] with ports 1-65535, or two use one host port",
        "bad-cpus": "--cpus is not a number of CPUs of at least 0.01",
        "bad-memory": "--memory is not a size of at least 6m in Docker's syntax",
        "bad-env-file": "an --env-file has lines that are not NAME=VALUE (the message lists them with line numbers)",
        "env-file-unreadable": "an --env-file does not exist or is not readable text",
        "bad-size": "a size (shm, memory) is not a number with an optional k/m/g/t unit",
        "bad-proxy-arg": "a proxy value cannot be passed to a build",
        "render-unknown-format": "render --format names no renderer",
        "render-unsafe-value": "a value cannot be written into a Dockerfile or script without changing its meaning",
        "render-unsupported-target": "the plan's target cannot be rendered in this format (e.g. a Windows plan as a Dockerfile)",
        "nothing-to-run": "neither a job nor a command was given to run",
        "index-port": "the port for `index serve` is not free or not valid",
        "ca-cert-missing": "the --ca-cert file does not exist",
        "build-no-image": "a build finished without producing its image",
        "base-needs-root": "bootstrapping a base image needs root (debootstrap)",
        "base-name-taken": "the base image name is already used by an image envbuilder did not make",
        "base-no-python": "the base image has no usable python3",
        "base-pack-failed": "packing the bootstrapped file system failed",
        "debootstrap-missing": "debootstrap is not installed",
        "debootstrap-failed": "debootstrap failed",
        "onnx-verify-crashed": "the ONNX verification program crashed inside the image",
        "artifacts-dir-unusable": "the artifacts folder cannot be created or written",
        "mount-conflict": "two mounts target the same container path",
        "mount-source-missing": "a mount's host path does not exist",
        "resume-unsupported": "--resume was given for a job with no resume-arg",
        "no-checkpoint": "--resume last found no completed or stopped run of the job with a checkpoint",
        "index-unreachable": "the torch mirror (--torch-index-url) could not be read",
        "lock-invalid": "the lock file is not a hashed requirements lock",
        "lock-parse-failed": "the lock file could not be parsed",
        "lock-stale": "the lock does not match the plan (a pinned version or package differs)",
        "lock-timeout": "resolving the lock took longer than its timeout",
        "lock-unhashed": "a locked requirement has no hash",
        "lock-unreadable": "the lock file cannot be read",
        "lock-unresolvable": "uv could not resolve the project's dependencies for the lock",
        "uv-missing": "uv is not installed (it comes with envbuilder's dependencies)",
        "matrix-invalid": "compatibility.json fails validation",
        "matrix-fetch-failed": "downloading a newer compatibility matrix failed",
        "matrix-older": "the offered matrix is older than the installed one",
        "matrix-source-missing": "the matrix file to install does not exist",
        "matrix-source-refused": "the matrix source is not an https URL or a local file",
        "matrix-source-unreadable": "the matrix file cannot be read",
        "matrix-too-large": "the offered matrix is larger than any real one",
        "unknown-torch-release": "the named torch release is not in the matrix",
        "matplotlib-missing": "plotting needs matplotlib (pip install 'envbuilder[plot]')",
        "no-metrics": "the run has no finite metric values to plot (it recorded none, or only NaN/inf)",
        "log-missing": "the run's log file is gone",
        "run-not-found": "no recorded run has this id",
        "run-ambiguous": "the id prefix matches several runs",
        "run-id-exhausted": "no free run id could be made",
        "run-active": "the run is queued or running: it cannot be removed until it ends (runs stop)",
        "runs-db-newer": "the run store was written by a newer envbuilder",
        "cluster-submit-failed": "the cluster engine accepted the job but gave no job id",
        "cluster-tool-missing": "the engine's command or client (sbatch, sky, the kubernetes package) is not installed",
        "cluster-command-failed": "a cluster engine command or API call failed",
        "cluster-no-kubeconfig": "no kubeconfig to reach the Kubernetes cluster",
        "cluster-unreachable": "the Kubernetes API server could not be reached",
        "cluster-forbidden": "the Kubernetes API server refused the call: credentials rejected (401) or no RBAC "
                             "permission (403)",
        "cluster-job-exists": "the Kubernetes API server already has a Job of that name in the namespace (409)",
    }),
    # Air-gap bundles (build/bundle.py, build/wheelhouse.py) and CI workflows (render/ci.py).
    *_table(UsageError, {
        "bundle-output-invalid": "bundle -o (or load --into) names a folder where a file is needed, or the reverse",
        "bundle-not-found": "the bundle file to load does not exist",
        "ci-target-undeclared": "`envbuilder ci` needs the target declared (--gpu ...): CI runners have no GPU to detect",
        "ci-unsafe-value": "a value cannot be written into a CI workflow without changing its meaning",
    }),
    *_table(EnvbuilderError, {
        "bundle-image-missing": "the image to bundle is not on the engine",
        "bundle-image-unreadable": "the image's installed packages could not be listed (no python on PATH)",
        "bundle-platform-unsupported": "the image's C library is not glibc, so no manylinux wheelhouse can be made",
        "bundle-download-failed": "pip download could not fetch a wheel the image installed",
        "bundle-lock-mismatch": "bundle --lock pins versions other than those in the image",
        "bundle-write-failed": "the bundle file could not be written",
        "pip-missing": "pip is needed to download a bundle's wheels and is not installed",
        "bundle-incomplete": "the bundle is cut short or misses a part its manifest lists",
        "bundle-invalid": "the file is not an envbuilder bundle, or its manifest is not valid",
        "bundle-unsupported": "the bundle was written in a format version this envbuilder does not read",
        "bundle-tampered": "a part of the bundle does not match its manifest's sha256 (or is not in it): nothing is loaded",
        "bundle-digest-mismatch": "the manifest is not the one load --expect names",
        "bundle-load-failed": "after docker load, an image of the bundle is missing or has another id",
    }),
    # Registries (#11): push by content hash, reuse, login (envbuilder/build/registry.py).
    *_table(UsageError, {
        "bad-registry": "--push (or a --tag to push, or `login`) names no valid REGISTRY/REPO, tag or host",
    }),
    *_table(DockerError, {
        "push-failed": "the registry took the push but answered no manifest digest",
        "registry-auth": "the registry refused the engine's credentials, or got none (log in first)",
        "registry-untrusted": "the engine does not trust the registry's TLS certificate (a private CA)",
        "platform-unsupported": "the local builder cannot build for --platform (no buildx, or no emulator for it)",
    }),
    *_table(EnvbuilderError, {
        "registry-ca-not-written": "`login --ca-cert` could not install the CA where the engine reads it (needs root)",
    }),
    *_table(JobEnded, {
        "run-failed": "the job exited non-zero; envbuilder exits with the job's code",
        "run-stopped": "the job was stopped; envbuilder exits with the job's code",
    }),
)

CATALOG: dict[str, ErrorCode] = {entry.code: entry for entry in _ENTRIES}
assert len(CATALOG) == len(_ENTRIES), "an error code is listed twice"


def render_markdown() -> str:
    """docs/errors.md: the codes grouped by exit code, generated so that the doc and the code cannot disagree."""
    lines = [
        "# Error codes",
        "",
        "Generated from `envbuilder/error_codes.py` by `python -m envbuilder.error_codes > docs/errors.md`.",
        "Every error prints as one line `envbuilder: CODE: message. Hint: what to do` (with `--json`, one JSON",
        "object on stdout); the exit code comes from the error's class.",
        "",
        "| code | exit | class | meaning |",
        "|---|---|---|---|",
    ]
    for entry in sorted(CATALOG.values(), key=lambda e: (e.exit_code, e.error.__name__, e.code)):
        exit_text = "the job's" if entry.error is JobEnded else str(entry.exit_code)
        lines.append(f"| `{entry.code}` | {exit_text} | `{entry.error.__name__}` | {entry.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(render_markdown(), end="")

"""RunSpec: everything `docker run` gets for one job (argv, mounts, env, GPUs, shm, user, workdir, labels),
decided by one pure function from the job's config, the caller's options and the project folder.

Owns the run's container layout (/workspace/project read-only, /artifacts writable, a checkpoint from elsewhere
mounted read-only under /opt/envbuilder-inputs), the parsing of the run options users type (--mount, --env,
--gpus; --publish, --cpus, --memory and --env-file are envbuilder.run.flags') and the defaults (shm, user). No
Docker, no store, no I/O but path resolution: the one host fact it needs (is there an NVIDIA GPU, for
`--gpus auto`) is a callable the caller passes, asked only for `auto`.
Must not import docker, the run store, pydantic (the project's Mount is imported only to parse --mount)
or the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, NamedTuple

from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import (
    IMAGE_PROJECT_DIR,
    LABEL_JOB,
    LABEL_PROJECT,
    LABEL_RUN_ID,
)
from envbuilder.quantities import is_env_name, parse_gpu_request
from envbuilder.run.flags import PublishedPort, check_publish

CONTAINER_ARTIFACTS = "/artifacts"
# The metrics channel's file, under the artifacts folder (its contract: envbuilder.run.metric_channels).
METRICS_ENV = "ENVBUILDER_METRICS"
METRICS_RELPATH = ".envbuilder/metrics.jsonl"
CONTAINER_EXTRA_DIR = "/opt/envbuilder-inputs"  # where a checkpoint from outside the mounts is mounted
DEFAULT_GRACE_S = 10.0
DEFAULT_SHM_CAP = 2 * 1024**3  # Docker's 64m default starves DataLoader workers; half the RAM, at most 2 GiB
# attached: envbuilder follows the job here; detached: a watcher process does (`run --detach`);
# interactive: the job gets this terminal (`run -it`, `shell`).
RUN_MODES = ("attached", "detached", "interactive")


class ResolvedMount(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    source: Path
    target: str
    read_only: bool

    def as_tuple(self) -> tuple[str, str, bool]:
        return (str(self.source), self.target, self.read_only)


class RunOptions(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """What the command line (or a host application) sets over a job's config; None keeps the job's value.
    `options._replace(resume_from=...)` gives a changed copy."""

    args: tuple[str, ...] = ()  # appended to the job's command
    mounts: tuple[ResolvedMount | str, ...] = ()  # `SRC:DST[:ro|rw]` text is relative to the current folder
    artifacts_dir: Path | None = None
    env: Mapping[str, str] = MappingProxyType({})  # merged over the job's env
    gpus: str | int | None = None
    network: str | None = None  # a Docker network mode; None is Docker's default
    read_only_project: bool = True
    resume_from: str | None = None  # a checkpoint, given to the job through its resume-arg
    stop_on_nan: bool = False  # stop the job (SIGTERM, grace, SIGKILL) at its first NaN or infinite loss
    trust: frozenset[str] = frozenset()  # what a remote project's jobs are granted (envbuilder.run.trust.GRANTS)
    publish: tuple[PublishedPort, ...] = ()  # parse_publish_arg()
    cpus: float | None = None  # parse_cpus(): `docker run --cpus`
    memory: str | None = None  # parse_memory(): `docker run --memory`, Docker's size syntax
    mode: str = "attached"  # RUN_MODES: followed here; detached (a watcher process follows it); interactive (a TTY)
    docker_cli: str | None = None  # the docker CLI an interactive run uses (None: `docker` on PATH)


class RunSpec(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """One container run, decided: the executor (envbuilder.run.container) carries it out as it is.
    `spec._replace(run_id=...)` gives a changed copy."""

    image: str
    argv: tuple[str, ...]
    args: tuple[str, ...]  # what was added to the job's command (options.args, then the resume args): recorded
    project_dir: Path
    project_name: str
    job: str | None
    mounts: tuple[ResolvedMount, ...]  # the project first; the artifacts folder is not among them
    artifacts_dir: Path | None
    env: Mapping[str, str]
    gpus: str | int | None  # what Docker gets: "all", a count, or None
    shm_size: str
    user: str
    workdir: str
    network: str | None = None
    resume_from: str | None = None
    timeout_s: float | None = None
    grace_s: float = DEFAULT_GRACE_S  # between SIGTERM and SIGKILL when the run is stopped
    metric_patterns: tuple[Any, ...] = ()  # the job's extra metric patterns, for run.metrics
    exports: tuple[Any, ...] = ()  # the job's declared ONNX exports, verified after a successful run
    plan: Mapping[str, Any] | None = None  # what the store keeps of the plan (torch, flavour, Python, plan hash)
    stop_on_nan: bool = False  # stop the job gracefully at its first NaN or infinite loss (run.metric_channels)
    publish: tuple[PublishedPort, ...] = ()
    cpus: float | None = None
    memory: str | None = None
    mode: str = "attached"  # RUN_MODES
    docker_cli: str | None = None
    run_id: str | None = None  # drawn before the run is recorded when its artifacts folder is named after it
    origin: Any = None  # run.record.RunOrigin: the project's git commit, the run it resumed from (run.artifacts)

    def container_options(self, run_id: str) -> dict[str, Any]:
        """Every container setting, as Engine.run_detached takes them (the command and image aside)."""
        return {"mounts": self.container_mounts(), "env": dict(self.env), "user": self.user, "workdir": self.workdir,
                "gpus": self.gpus, "shm_size": self.shm_size, "labels": self.labels(run_id), "network": self.network,
                "ports": [p.as_tuple() for p in self.publish], "cpus": self.cpus, "memory": self.memory}

    def container_mounts(self) -> list[tuple[str, str, bool]]:
        mounts = [m.as_tuple() for m in self.mounts]
        if self.artifacts_dir is not None:
            mounts.append((str(self.artifacts_dir), CONTAINER_ARTIFACTS, False))
        return mounts

    def labels(self, run_id: str) -> dict[str, str]:
        labels = {LABEL_RUN_ID: run_id, LABEL_PROJECT: self.project_name}
        if self.job:
            labels[LABEL_JOB] = self.job
        return labels

    def record_args(self) -> dict[str, Any]:
        """What the run store keeps of how the run was started (`runs show` prints it)."""
        limits = {"publish": [str(p) for p in self.publish], "cpus": self.cpus, "memory": self.memory}
        return {"args": list(self.args), "resume_from": self.resume_from, "project_dir": str(self.project_dir),
                "mounts": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in self.mounts],
                "gpus": self.gpus, "shm_size": self.shm_size, "user": self.user,
                **{key: value for key, value in limits.items() if value}}  # only those given


def run_spec(
    image: str,
    project_dir: Path,
    *,
    job: Any = None,
    job_name: str | None = None,
    command: Sequence[str] = (),
    options: RunOptions | None = None,
    plan: Mapping[str, Any] | None = None,
    project_name: str | None = None,
    has_nvidia: Callable[[], bool],
) -> RunSpec:
    """The run of `job` (a config Job) or of a bare `command` in `image`, with `options` over the job's values.

    job's command + options.args (+ the rendered resume-arg) is what runs; with `command`, that runs instead.
    Raises EnvbuilderError for a run that cannot be set up (nothing to run, a missing mount source, two mounts
    on one target, --resume without a resume-arg, a bad --gpus).
    """
    project_dir = Path(project_dir).resolve()
    options = options or RunOptions()
    if job is None and not command:
        raise EnvbuilderError("nothing-to-run", "neither a job nor a command was given", "name a job, or pass -- CMD ...")
    mounts = [ResolvedMount(project_dir, IMAGE_PROJECT_DIR, options.read_only_project)]
    if job is not None:
        mounts += [resolve_mount(m, project_dir) for m in job.mounts]
    mounts += [resolve_mount(m, Path.cwd()) for m in options.mounts]
    artifacts_dir = options.artifacts_dir
    if artifacts_dir is None and job is not None:
        artifacts_dir = job.artifacts_path(project_dir)
    artifacts_dir = None if artifacts_dir is None else Path(artifacts_dir).resolve()
    args = list(options.args)
    if options.resume_from:
        resume_args, extra = _resume(job, options.resume_from, project_dir, artifacts_dir)
        args += resume_args
        mounts += [extra] if extra is not None else []
    _check_mount_targets(mounts, artifacts_dir)
    requested_gpus = options.gpus if options.gpus is not None else (job.gpus if job is not None else "auto")
    return RunSpec(
        image=image, argv=(*(command or job.command), *args), args=tuple(args), project_dir=project_dir,
        project_name=project_name or project_dir.name, job=job_name or (None if job is None else "job"),
        mounts=tuple(mounts), artifacts_dir=artifacts_dir, env=_run_env(job, options.env, artifacts_dir),
        gpus=gpu_request(requested_gpus, has_nvidia=has_nvidia),
        shm_size=(job.shm_size if job is not None else None) or default_shm_size(),
        user=f"{os.getuid()}:{os.getgid()}",  # so that what the job writes belongs to the caller
        workdir=(job.workdir if job is not None else None) or IMAGE_PROJECT_DIR, network=options.network,
        resume_from=options.resume_from, timeout_s=job.timeout if job is not None else None,
        metric_patterns=tuple(job.metric_specs()) if job is not None else (),
        exports=tuple(job.exports) if job is not None else (), plan=plan, stop_on_nan=options.stop_on_nan,
        publish=check_publish(options.publish), cpus=options.cpus, memory=options.memory,
        mode=_check_mode(options.mode), docker_cli=options.docker_cli,
    )


def _resume(job: Any, checkpoint: str, project_dir: Path, artifacts_dir: Path | None) -> tuple[list[str], ResolvedMount | None]:
    if job is None or job.resume_arg is None:
        raise EnvbuilderError("resume-unsupported", "--resume needs a job with a resume-arg template",
                              "add e.g. resume-arg = \"--resume {checkpoint}\" to the job's config")
    inside, extra = container_path_for(checkpoint, project_dir=project_dir, artifacts_dir=artifacts_dir)
    return list(job.resume_args(inside)), extra


def _run_env(job: Any, overrides: Mapping[str, str], artifacts_dir: Path | None) -> dict[str, str]:
    env = dict(job.env) if job is not None else {}
    env.update(overrides)
    env.setdefault("HOME", "/tmp")  # the caller's uid has no home in the image
    env["PYTHONUNBUFFERED"] = "1"  # logs arrive line by line, as they happen
    if artifacts_dir is not None:
        env["ENVBUILDER_ARTIFACTS"] = CONTAINER_ARTIFACTS
        env[METRICS_ENV] = f"{CONTAINER_ARTIFACTS}/{METRICS_RELPATH}"  # the metrics channel's file (run.metric_channels)
    return env


# --- the options users type, and the defaults -----------------------------------------------------


def parse_mount_arg(text: str, *, base: Path | None = None) -> ResolvedMount:
    """`SRC:DST[:ro|rw]` from the command line; SRC relative to `base` (default: the current folder)."""
    from envbuilder.project.jobs import Mount

    try:
        mount = Mount.model_validate(text)
    except Exception as exc:
        raise EnvbuilderError("bad-mount", f"--mount {text!r}: {_first_error(exc)}",
                              "write SRC:DST[:ro|rw], with DST an absolute container path, e.g. ./data:/data:ro") from None
    return resolve_mount(mount, base or Path.cwd())


def resolve_mount(mount: Any, base: Path) -> ResolvedMount:
    """A config Mount, `SRC:DST[:ro|rw]` text or a ResolvedMount, with its source made absolute and checked to exist."""
    if isinstance(mount, str):
        return parse_mount_arg(mount, base=base)
    if isinstance(mount, ResolvedMount):
        source, target, read_only = mount.source, mount.target, mount.read_only
    else:
        source, target, read_only = mount.host_path(base), mount.target, mount.read_only
    if not Path(source).exists():
        raise EnvbuilderError("mount-source-missing", f"cannot mount {source} at {target}: it does not exist",
                              "create it, or fix the mount's source path", {"source": str(source), "target": target})
    return ResolvedMount(Path(source).resolve(), str(target), bool(read_only))


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", exc)).removeprefix("Value error, ")
    return str(exc)


def parse_env_args(items: Iterable[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not is_env_name(key):
            raise EnvbuilderError("bad-env", f"--env {item!r} is not NAME=VALUE", "write e.g. --env OMP_NUM_THREADS=4")
        env[key] = value
    return env


def default_shm_size(mem_bytes: int | None = None) -> str:
    """Half of the host's RAM, at most 2 GiB, at least 64 MiB, in Docker's size syntax."""
    if mem_bytes is None:
        try:
            mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            mem_bytes = 2 * DEFAULT_SHM_CAP
    size = max(64 * 1024**2, min(DEFAULT_SHM_CAP, mem_bytes // 2))
    return f"{size // 1024**2}m"


def gpu_request(requested: str | int | None, *, has_nvidia: Callable[[], bool]) -> str | int | None:
    """"auto" | "all" | "none" | N -> what Docker gets ("all", a count, or None). has_nvidia runs only for auto.

    `--gpus 0` is read as none, as `docker run --gpus 0` reads it."""
    if requested in (None, 0, "0"):
        return None
    try:
        choice = parse_gpu_request(requested)
    except ValueError:
        raise EnvbuilderError("bad-gpus", f"--gpus {requested!r}: expected auto, all, none or a count", "e.g. --gpus 1") from None
    if choice == "auto":
        return "all" if has_nvidia() else None
    return None if choice == "none" else choice


def container_path_for(path: str, *, project_dir: Path, artifacts_dir: Path | None) -> tuple[str, ResolvedMount | None]:
    """Where the container sees a host file: under /artifacts or the project when it is there, else mounted
    read-only on its own. A path that does not exist on the host is taken as a container path already."""
    host = Path(path).expanduser()
    if not host.exists():
        return path, None
    host = host.resolve()
    for root, inside in ((artifacts_dir, CONTAINER_ARTIFACTS), (project_dir, IMAGE_PROJECT_DIR)):
        if root is not None:
            try:
                return str(PurePosixPath(inside) / host.relative_to(Path(root).resolve()).as_posix()), None
            except ValueError:
                pass
    target = f"{CONTAINER_EXTRA_DIR}/{host.name}"
    return target, ResolvedMount(host, target, True)


def _check_mode(mode: str) -> str:
    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {', '.join(RUN_MODES)}, not {mode!r}")
    return mode


def _check_mount_targets(mounts: Sequence[ResolvedMount], artifacts_dir: Path | None) -> None:
    targets = [m.target for m in mounts] + ([CONTAINER_ARTIFACTS] if artifacts_dir is not None else [])
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise EnvbuilderError("mount-conflict", f"two mounts target {', '.join(dupes)}",
                              "give each mount its own container path")

"""Run a job (or any command) in the project's image: mounts, user, GPUs, shm, live logs, metrics, stop.

Owns run_job, stop_run and reconcile_runs. A run is recorded in the RunStore (status `running`) BEFORE
its container starts, so a crash at any point leaves a record that reconcile_runs can settle. The
container runs as the caller's uid:gid so that artifacts belong to the caller, with the project mounted
read-only at /workspace/project (the image's PYTHONPATH makes it importable) and the artifacts folder
writable at /artifacts. Containers are removed once their run is recorded: nothing is left behind.
Must not import the CLI.
"""

from __future__ import annotations


import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import IMAGE_PROJECT_DIR, LABEL_PREFIX

CONTAINER_ARTIFACTS = "/artifacts"
CONTAINER_EXTRA_DIR = "/opt/envbuilder-inputs"  # where a checkpoint from outside the mounts is mounted
LABEL_RUN_ID = f"{LABEL_PREFIX}.run-id"
LABEL_JOB = f"{LABEL_PREFIX}.job"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
DEFAULT_GRACE_S = 10.0
DEFAULT_SHM_CAP = 2 * 1024**3  # Docker's 64m default starves DataLoader workers; half the RAM, at most 2 GiB
METRICS_FLUSH_S = 1.0
METRICS_FLUSH_POINTS = 200
EXIT_VERIFY_FAILED = 1
# A container killed by SIGKILL (docker kill, OOM) exits 137; by SIGTERM, 143.
_SIGNAL_EXITS = {137: "killed (SIGKILL: docker kill, or out of memory)", 143: "terminated (SIGTERM)"}


@dataclass(frozen=True)
class RunResult:
    run_id: str
    status: str  # completed | failed | stopped
    exit_code: int | None
    metrics: Mapping[str, float]  # the last value of each metric
    artifacts_dir: Path | None
    log_path: Path
    message: str | None = None
    verified: tuple[Any, ...] = ()  # onnx_verify.VerifiedModel, one per declared export
    duration_s: float = 0.0
    job: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id, "job": self.job, "status": self.status, "exit_code": self.exit_code,
            "metrics": dict(self.metrics), "artifacts_dir": str(self.artifacts_dir) if self.artifacts_dir else None,
            "log_path": str(self.log_path), "message": self.message, "duration_s": round(self.duration_s, 3),
            "verified": [v.to_json() for v in self.verified],
        }


@dataclass(frozen=True)
class ResolvedMount:
    source: Path
    target: str
    read_only: bool

    def as_tuple(self) -> tuple[str, str, bool]:
        return (str(self.source), self.target, self.read_only)


# --- pure helpers (unit-tested without Docker) ------------------------------------------------------


def parse_mount_arg(text: str, *, base: Path | None = None) -> ResolvedMount:
    """`SRC:DST[:ro|rw]` from the command line; SRC relative to `base` (default: the current folder)."""
    from envbuilder.project.config import Mount

    try:
        mount = Mount.model_validate(text)
    except Exception as exc:
        raise EnvbuilderError("bad-mount", f"--mount {text!r}: {_first_error(exc)}",
                              "write SRC:DST[:ro|rw], with DST an absolute container path, e.g. ./data:/data:ro") from None
    return resolve_mount(mount, base or Path.cwd())


def resolve_mount(mount: Any, base: Path) -> ResolvedMount:
    """A config Mount (or a ResolvedMount) with its source made absolute and checked to exist."""
    if isinstance(mount, ResolvedMount):
        source, target, read_only = mount.source, mount.target, mount.read_only
    elif isinstance(mount, str):
        return parse_mount_arg(mount, base=base)
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
        if not sep or not key or not (key[0].isalpha() or key[0] == "_") or not key.replace("_", "a").isalnum():
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
    """"auto" | "all" | "none" | N -> what Docker gets ("all", a count, or None). has_nvidia runs only for auto."""
    if requested in (None, "none", 0, "0"):
        return None
    if requested == "auto":
        return "all" if has_nvidia() else None
    if requested == "all":
        return "all"
    if isinstance(requested, int) or (isinstance(requested, str) and requested.isdigit()):
        return int(requested)
    raise EnvbuilderError("bad-gpus", f"--gpus {requested!r}: expected auto, all, none or a count", "e.g. --gpus 1")


def host_has_nvidia() -> bool:
    """Whether `--gpus auto` means all GPUs. A host with no NVIDIA device node, no WSL GPU and no nvidia-smi
    answers at once; anything else gets the full probe (envbuilder.host.probes), which costs ~0.1 s."""
    import shutil

    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg") or shutil.which("nvidia-smi")):
        return False
    from envbuilder.host.probes import detect_host

    return detect_host(timeout=5.0).gpu_vendor == "nvidia"


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


def final_status(exit_code: int | None, *, stop_requested: bool) -> str:
    if stop_requested:
        return "stopped"
    return "completed" if exit_code == 0 else "failed"


def exit_message(exit_code: int | None) -> str | None:
    if exit_code in (0, None):
        return None
    return f"exited with {exit_code}" + (f": {_SIGNAL_EXITS[exit_code]}" if exit_code in _SIGNAL_EXITS else "")


# --- metrics ----------------------------------------------------------------------------------------


class _MetricSink:
    """Feeds log lines to a MetricTracker and writes its points to the store in batches (not per line)."""

    def __init__(self, store: Any, run_id: str, extra_patterns: Sequence[Any]) -> None:
        from envbuilder.run.metrics import MetricTracker

        self._tracker = MetricTracker(extra_patterns=tuple(extra_patterns))
        self._store, self._run_id = store, run_id
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self.last: dict[str, float] = {}

    def feed(self, line: str) -> None:
        points = self._tracker.feed(line)
        if not points:
            return
        self._pending.extend(points)
        for point in points:
            self.last[point.name] = point.value
        if len(self._pending) >= METRICS_FLUSH_POINTS or time.monotonic() - self._last_flush >= METRICS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._store.add_metrics(self._run_id, self._pending)
            self._pending = []
        self._last_flush = time.monotonic()


# --- running ----------------------------------------------------------------------------------------


def run_job(
    *,
    image: str,
    project_dir: Path,
    job: Any = None,
    command: Sequence[str] | None = None,
    settings: Any,
    docker: Any,
    store: Any,
    args: Sequence[str] = (),
    job_name: str | None = None,
    extra_mounts: Iterable[Any] = (),
    artifacts_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    gpus: str | int | None = None,
    shm_size: str | None = None,
    user: str | None = None,
    network: str | None = None,
    read_only_project: bool = True,
    plan: Any = None,
    plan_hash: str | None = None,
    project_name: str | None = None,
    resume_from: str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    verify: bool = True,
    on_line: Callable[[str], None] | None = None,
    has_nvidia: Callable[[], bool] = host_has_nvidia,
) -> RunResult:
    """Run `job` (a config Job) or a bare `command` in `image`; record it; return how it ended.

    job's command + args (+ the rendered resume-arg) is what runs; with `command`, that runs instead.
    Values given here win over the job's (gpus, shm_size, env merged over the job's env). user defaults to
    the caller's uid:gid. Ctrl-C stops the container (SIGTERM, grace, SIGKILL), records `stopped`, removes
    the container and re-raises KeyboardInterrupt. After a successful job with `exports`, each model is
    verified in the same image; a failed verification fails the run.
    """
    project_dir = Path(project_dir).resolve()
    if job is None and not command:
        raise EnvbuilderError("nothing-to-run", "neither a job nor a command was given", "name a job, or pass -- CMD ...")
    argv = list(command) if command else list(job.command)
    argv += list(args)
    recorded_args = list(args)
    mounts: list[ResolvedMount] = [ResolvedMount(project_dir, IMAGE_PROJECT_DIR, read_only_project)]
    if job is not None:
        mounts += [resolve_mount(m, project_dir) for m in job.mounts]
    mounts += [resolve_mount(m, Path.cwd()) for m in extra_mounts]

    if artifacts_dir is None and job is not None:
        artifacts_dir = job.artifacts_path(project_dir)
    if artifacts_dir is not None:
        artifacts_dir = Path(artifacts_dir).resolve()
        try:
            artifacts_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EnvbuilderError("artifacts-dir-unusable", f"cannot create the artifacts folder {artifacts_dir}: {exc.strerror}",
                                  "pass --artifacts DIR with a folder you can write") from None

    if resume_from:
        if job is None or job.resume_arg is None:
            raise EnvbuilderError("resume-unsupported", "--resume needs a job with a resume-arg template",
                                  "add e.g. resume-arg = \"--resume {checkpoint}\" to the job's config")
        inside, extra = container_path_for(resume_from, project_dir=project_dir, artifacts_dir=artifacts_dir)
        if extra is not None:
            mounts.append(extra)
        resume_args = list(job.resume_args(inside))
        argv += resume_args
        recorded_args += resume_args

    _check_mount_targets(mounts, artifacts_dir)
    run_env = dict(job.env) if job is not None else {}
    run_env.update(env or {})
    run_env.setdefault("HOME", "/tmp")  # the caller's uid has no home in the image
    run_env["PYTHONUNBUFFERED"] = "1"  # logs arrive line by line, as they happen
    if artifacts_dir is not None:
        run_env["ENVBUILDER_ARTIFACTS"] = CONTAINER_ARTIFACTS
    docker_gpus = gpu_request(gpus if gpus is not None else (job.gpus if job is not None else "auto"), has_nvidia=has_nvidia)
    shm = shm_size or (job.shm_size if job is not None else None) or default_shm_size()
    user = user or f"{os.getuid()}:{os.getgid()}"
    workdir = (job.workdir if job is not None else None) or IMAGE_PROJECT_DIR
    name = job_name or (None if job is None else "job")

    run_id, log_path = store.record_start(
        project_name or project_dir.name, argv, job=name, image=image, plan=_plan_record(plan, plan_hash),
        artifacts_dir=artifacts_dir,
        args={"args": recorded_args, "resume_from": resume_from, "project_dir": str(project_dir),
              "mounts": [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}" for m in mounts],
              "gpus": docker_gpus, "shm_size": shm, "user": user},
    )
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sink = _MetricSink(store, run_id, job.metric_specs() if job is not None else ())

    container_mounts = [m.as_tuple() for m in mounts]
    if artifacts_dir is not None:
        container_mounts.append((str(artifacts_dir), CONTAINER_ARTIFACTS, False))
    labels = {LABEL_RUN_ID: run_id, LABEL_PROJECT: project_name or project_dir.name}
    if name:
        labels[LABEL_JOB] = name

    def result(status: str, code: int | None, message: str | None, verified: tuple = ()) -> RunResult:
        return RunResult(run_id, status, code, dict(sink.last), artifacts_dir, log_path, message, verified,
                         time.monotonic() - started, name)

    try:
        container = docker.run_detached(image, argv, mounts=container_mounts, env=run_env, user=user, workdir=workdir,
                                        gpus=docker_gpus, shm_size=shm, labels=labels, network=network, attach=True)
    except EnvbuilderError as exc:
        store.record_finish(run_id, "failed", None, str(exc))
        _remove_labelled(docker, run_id)  # a refused start (no NVIDIA runtime) leaves a `created` container
        raise
    except BaseException:
        store.record_finish(run_id, "failed", None, "interrupted while starting the container")
        _remove_labelled(docker, run_id)
        raise
    store.set_container(run_id, container)

    timed_out = threading.Event()
    timer = None
    if job is not None and job.timeout:
        def _on_timeout() -> None:
            timed_out.set()
            docker.stop(container, grace_s)

        timer = threading.Timer(job.timeout, _on_timeout)
        timer.daemon = True
        timer.start()
    try:
        with log_path.open("a", encoding="utf-8") as log:
            def handle(line: str) -> None:
                log.write(line + "\n")
                log.flush()
                sink.feed(line)
                if on_line:
                    on_line(line)

            exit_code = docker.follow_to_exit(container, handle)
            sink.flush()
    except KeyboardInterrupt:
        # Ctrl-C: give the job its grace period to checkpoint, record why it ended, leave nothing behind.
        _quietly(lambda: docker.stop(container, grace_s))
        _quietly(sink.flush)
        _quietly(lambda: _append_unseen(store, docker, run_id, container, log_path))  # what it said while stopping
        state = _quietly(lambda: docker.container_state(container)) or {}
        store.record_finish(run_id, "stopped", state.get("ExitCode"), "interrupted (Ctrl-C)")
        _quietly(lambda: docker.remove_container(container))
        raise
    except BaseException as exc:
        _quietly(lambda: docker.stop(container, grace_s))
        store.record_finish(run_id, "failed", None, f"envbuilder failed while watching the run: {exc!r}")
        _quietly(lambda: docker.remove_container(container))
        raise
    finally:
        if timer:
            timer.cancel()
    # The job has ended: whatever happens from here on (cleanup, verification, Ctrl-C), the run is recorded.
    try:
        docker.remove_container(container)
        stop_requested = _stop_requested(store, run_id)
        status = final_status(exit_code, stop_requested=stop_requested)
        message = exit_message(exit_code)
        if timed_out.is_set():
            status, message = "failed", f"ran past its timeout of {job.timeout:g} s and was stopped"
        elif stop_requested:
            message = "stopped on request" + (f" ({message})" if message else "")

        verified: tuple = ()
        if status == "completed" and verify and job is not None and job.exports and artifacts_dir is not None:
            verified, failure = _verify(image=image, job=job, artifacts_dir=artifacts_dir, docker=docker, plan=plan,
                                        plan_hash=plan_hash, user=user, gpus=docker_gpus, log_path=log_path, on_line=on_line)
            if failure:
                status, exit_code, message = "failed", EXIT_VERIFY_FAILED, failure
    except KeyboardInterrupt:
        store.record_finish(run_id, "stopped", exit_code, "interrupted (Ctrl-C) after the job ended, before it was checked")
        _quietly(lambda: docker.remove_container(container))
        raise
    except BaseException as exc:
        store.record_finish(run_id, "failed", exit_code, f"envbuilder failed after the job ended: {exc}")
        raise
    store.record_finish(run_id, status, exit_code, message)
    return result(status, exit_code, message, verified)


def _verify(*, image, job, artifacts_dir, docker, plan, plan_hash, user, gpus, log_path, on_line):
    from envbuilder.run.onnx import export_checks, failure_message, verify_exports

    with log_path.open("a", encoding="utf-8") as log:
        def handle(line: str) -> None:
            log.write(line + "\n")
            if on_line:
                on_line(line)

        try:
            results = verify_exports(image=image, artifacts_dir=artifacts_dir, checks=export_checks(job.exports),
                                     docker=docker, plan=plan, plan_hash=plan_hash, user=user, gpus=gpus, on_line=handle)
        except EnvbuilderError as exc:
            handle(f"envbuilder: {exc}")
            return (), str(exc)
        for r in results:
            line = (f"envbuilder: verified {r.path.name}: max abs diff {r.max_abs_diff}" if r.ok
                    else f"envbuilder: {r.path.name} FAILED verification: {r.reason}")
            handle(line)
    return tuple(results), failure_message(results)


def _check_mount_targets(mounts: Sequence[ResolvedMount], artifacts_dir: Path | None) -> None:
    targets = [m.target for m in mounts] + ([CONTAINER_ARTIFACTS] if artifacts_dir is not None else [])
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise EnvbuilderError("mount-conflict", f"two mounts target {', '.join(dupes)}",
                              "give each mount its own container path")


def _quietly(fn: Callable[[], Any]) -> Any:
    """Best-effort cleanup: a failure here must not hide the error (or Ctrl-C) being handled."""
    try:
        return fn()
    except Exception:
        return None


def _remove_labelled(docker: Any, run_id: str) -> None:
    for container in _quietly(lambda: docker.containers_labelled(LABEL_RUN_ID, run_id)) or ():
        _quietly(lambda: docker.remove_container(container))


def _stop_requested(store: Any, run_id: str) -> bool:
    return store.stop_requested(run_id)


def _plan_record(plan: Any, plan_hash: str | None) -> dict | None:
    """What the store keeps of the plan: enough to say which torch build a run used."""
    if plan is None:
        return {"plan_hash": plan_hash} if plan_hash else None
    from envbuilder.run.onnx import plan_summary

    return plan_summary(plan, plan_hash=plan_hash)


# --- stopping and reconciling -------------------------------------------------------------------------


def stop_run(store: Any, run_id: str, grace_s: float = DEFAULT_GRACE_S, settings: Any = None, docker: Any = None) -> Any:
    """Stop a running run: SIGTERM, then SIGKILL after grace_s; records `stopped`. Returns the run's record.

    The stop request is stored first, so a runner process that is still watching the container records
    `stopped` (not `failed`) when the job exits; when no runner is left, this records it.
    """
    record = store.get(run_id)  # raises run-not-found
    run_id = record.id  # a unique prefix names the run too
    if record.status != "running":
        return record
    store.request_stop(run_id)
    container = getattr(record, "container_id", None)
    if container:
        docker = docker or _docker_for(settings)
        docker.stop(container, grace_s)
        # The runner removes the container after recording; give it a moment before recording ourselves.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            current = store.get(run_id)
            if current.status != "running":
                return current
            time.sleep(0.1)
        state = docker.container_state(container) or {}
        store.finish_run(run_id, "stopped", state.get("ExitCode"), "stopped on request")
        docker.remove_container(container)
    else:
        store.finish_run(run_id, "stopped", None, "stopped on request before its container started")
    return store.get(run_id)


def reconcile_runs(store: Any, settings: Any = None, docker: Any = None) -> list[Any]:
    """Settle runs recorded `running` whose runner is gone (host crash, a killed envbuilder process) and whose
    container vanished or ended while nobody watched: the run is recorded by the container's exit code, the
    lines the runner never saw are appended to its log (and their metrics recorded), and the container is
    removed. Without a Docker engine, nothing is changed and [] is returned."""
    try:
        docker = docker or _docker_for(settings)
        docker.ping()  # connect now: no engine means we cannot tell, so we change nothing
    except EnvbuilderError:
        return []
    changed = list(store.reconcile(docker.container_state))
    for run_id in changed:
        record = store.get(run_id)
        if record.container_id:
            _quietly(lambda: _append_unseen(store, docker, record.id, record.container_id,
                                            Path(record.log_path) if record.log_path else None))
            _quietly(lambda: docker.remove_container(record.container_id))
    return changed


def _append_unseen(store: Any, docker: Any, run_id: str, container_id: str, log_path: Path | None) -> None:
    """Append what the container wrote that no runner saw (after a crash, or during a stop's grace period)
    to the run's log, and record its metrics."""
    from envbuilder.run.metrics import MetricTracker

    if log_path is None:
        return
    seen = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
    output = docker.log_lines(container_id)
    if output[: len(seen)] != seen:
        return  # the log is not a prefix of the output (edited, or lines lost): leave it as it is
    missing = output[len(seen):]
    if not missing:
        return
    tracker = MetricTracker()
    for line in seen:  # the step counter continues where the runner left off
        tracker.feed(line)
    points = [p for line in missing for p in tracker.feed(line)]
    with log_path.open("a", encoding="utf-8") as log:
        log.writelines(line + "\n" for line in missing)
    if points:
        store.add_metrics(run_id, points)


def _docker_for(settings: Any) -> Any:
    from envbuilder.docker.engine import Docker

    return Docker(getattr(settings, "docker_binary", None))


# --- pipelines ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelineResult:
    runs: tuple[RunResult, ...]
    skipped: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()  # after the first failure

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs) and not self.not_run

    def to_json(self) -> dict:
        return {"ok": self.ok, "runs": [r.to_json() for r in self.runs], "skipped": list(self.skipped),
                "not_run": list(self.not_run)}


def run_pipeline(
    *,
    image: str,
    project_dir: Path,
    config: Any,
    settings: Any,
    docker: Any,
    store: Any,
    skip: Iterable[str] = (),
    from_checkpoint: str | None = None,
    gpus: str | int | None = None,
    plan: Any = None,
    plan_hash: str | None = None,
    project_name: str | None = None,
    network: str | None = None,
    on_line: Callable[[str], None] | None = None,
    on_job: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run the config's pipeline in order in one image; stop at the first job that does not complete.

    from_checkpoint resumes the first job (not skipped) that has a resume-arg, e.g. train.
    """
    skip = tuple(skip)
    order = config.pipeline_order()
    unknown = [name for name in skip if name not in config.jobs]
    if unknown:
        config.job(unknown[0])  # raises job-not-found, naming the jobs there are
    todo = [name for name in order if name not in skip]
    resume_job = None
    if from_checkpoint:
        resume_job = next((name for name in todo if config.jobs[name].resume_arg), None)
        if resume_job is None:
            raise EnvbuilderError("resume-unsupported", "--from-checkpoint needs a job with a resume-arg in the pipeline",
                                  "add e.g. resume-arg = \"--resume {checkpoint}\" to the training job")
    runs: list[RunResult] = []
    for index, name in enumerate(todo):
        if on_job:
            on_job(name)
        result = run_job(
            image=image, project_dir=project_dir, job=config.jobs[name], job_name=name, settings=settings,
            docker=docker, store=store, gpus=gpus, plan=plan, plan_hash=plan_hash, project_name=project_name,
            resume_from=from_checkpoint if name == resume_job else None, network=network, on_line=on_line,
        )
        runs.append(result)
        if not result.ok:
            return PipelineResult(tuple(runs), tuple(n for n in order if n in skip), tuple(todo[index + 1 :]))
    return PipelineResult(tuple(runs), tuple(n for n in order if n in skip))

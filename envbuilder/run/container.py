"""The executor: carries out a RunSpec in a container, records the run, follows its output, settles how it ended.

Owns execute_run, stop_run and reconcile_runs. A run is recorded in the RunStore (status `running`) BEFORE
its container starts, so a crash at any point leaves a record that reconcile_runs can settle. It is recorded
while the engine creates the container (Engine.run_detached's while_creating): making the record (the
`dataclasses` module, RunRecord, one SQLite write) would otherwise add ~10 ms to every run's start.
Ctrl-C or SIGTERM (raised as KeyboardInterrupt by the CLI) gives the job its grace period, records `stopped`
and re-raises.
Containers are removed once their run is recorded: nothing is left behind. What runs, and how, is decided
before this module is reached (envbuilder.run.spec): nothing here chooses a mount, a variable or a GPU.

Faults while watching: a full disk under the run's log or the store stops the container, records `failed`
(when the record can still be written) and raises `disk-full`; an engine that stops answering leaves the run
`running` with a note (RunStore.note_watch) and raises `docker-not-running`, so that reconcile_runs, once the
engine is back, records the container's real exit, appends the lines nobody saw and removes the container.
Must not import the CLI, pydantic or the docker SDK (the engine is passed in).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.imagelayout import LABEL_RUN_ID
from envbuilder.run.faults import describe, disk_full_error, is_disk_full
from envbuilder.run.record import new_run_id
from envbuilder.run.spec import DEFAULT_GRACE_S, RunSpec

if TYPE_CHECKING:
    from envbuilder.run.metric_channels import MetricRecorder
    from envbuilder.run.result import RunResult

HINT_LINES = 40  # the last lines of output kept for run.hints (a traceback's end)
LOST_ENGINE = "envbuilder lost contact with the Docker engine while watching"
EXIT_VERIFY_FAILED = 1
# A container killed by SIGKILL (docker kill, OOM) exits 137; by SIGTERM, 143.
_SIGNAL_EXITS = {137: "killed (SIGKILL: docker kill, or out of memory)", 143: "terminated (SIGTERM)"}


def host_has_nvidia() -> bool:
    """Whether `--gpus auto` means all GPUs: the probe run_spec is given. A host with no NVIDIA device node,
    no WSL GPU and no nvidia-smi answers at once; anything else gets the full probe (~0.1 s)."""
    # os.access, not shutil.which: shutil loads its compression modules, ~2 ms of every `run --image`
    on_path = any(os.access(os.path.join(folder, "nvidia-smi"), os.X_OK)
                  for folder in os.environ.get("PATH", os.defpath).split(os.pathsep) if folder)
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg") or on_path):
        return False
    from envbuilder.host.probes import detect_host

    return detect_host(timeout=5.0).gpu_vendor == "nvidia"


def final_status(exit_code: int | None, *, stop_requested: bool) -> str:
    if stop_requested:
        return "stopped"
    return "completed" if exit_code == 0 else "failed"


def exit_message(exit_code: int | None) -> str | None:
    if exit_code in (0, None):
        return None
    return f"exited with {exit_code}" + (f": {_SIGNAL_EXITS[exit_code]}" if exit_code in _SIGNAL_EXITS else "")


# --- running ----------------------------------------------------------------------------------------


def execute_run(spec: RunSpec, *, docker: Any, store: Any, on_line: Callable[[str], None] | None = None,
                on_progress: Callable[[str], None] | None = None,
                on_start: Callable[[Any], None] | None = None) -> RunResult:
    """Run `spec` in a container; record it; return how it ended.

    on_start is given the run's record as soon as it is recorded (before the image is pulled or the container
    starts), so the run id is known from the start; on_line gets each line of the job's output, on_progress
    each state of a line the job redraws with carriage returns (a progress bar) before the line ends.
    Ctrl-C stops the container (SIGTERM, grace, SIGKILL), records `stopped`, removes the container and
    re-raises KeyboardInterrupt. After a successful job with exports, each model is verified in the same
    image; a failed verification fails the run.
    """
    if spec.run_id is None:  # the container's labels name the run before it is recorded
        spec = spec._replace(run_id=new_run_id())
    if spec.mode == "interactive":
        _make_artifacts_dir(spec.artifacts_dir)
        record = begin_run(spec, store)
        if on_start:
            on_start(record)
        return _run_interactive(spec, record, store)
    record, container = start_container(spec, docker, store, attach=spec.mode == "attached", on_start=on_start)
    if spec.mode == "detached":
        from envbuilder.run.detach import start_watcher

        start_watcher(spec, record, container, docker=docker, store=store)
        from envbuilder.run.result import RunResult

        return RunResult(record.id, "running", None, {}, spec.artifacts_dir, Path(record.log_path),
                         "detached: a watcher process follows and records it", job=spec.job)
    return watch_run(spec, record, container, docker=docker, store=store, on_line=on_line, on_progress=on_progress)


def _run_interactive(spec: RunSpec, record: Any, store: Any) -> RunResult:
    """`run -it` and `shell`: the container on this terminal (envbuilder.run.interactive), recorded by its exit.
    Its output went to the terminal, not to the log; metrics and export checks need a followed run."""
    from envbuilder.run.interactive import run_interactive

    log_path = Path(record.log_path)
    try:
        code = run_interactive(spec, record.id)
    except BaseException as exc:
        why = describe(exc)
        _quietly(lambda: store.finish_run(record.id, "failed", None, why))
        raise
    status = "completed" if code == 0 else "failed"
    # 125: `docker run` itself failed (it printed why on the terminal); 126/127: the command could not run
    message = ("docker run could not start the container (exit 125; its error is above)" if code == 125
               else exit_message(code))
    _quietly(lambda: log_path.write_text("envbuilder: an interactive session: its output went to the terminal\n",
                                         encoding="utf-8"))
    store.finish_run(record.id, status, code, message)
    from envbuilder.run.result import RunResult

    return RunResult(record.id, status, code, {}, spec.artifacts_dir, log_path, message,
                     duration_s=max(0.0, time.time() - record.started_at.timestamp()), job=spec.job)


def begin_run(spec: RunSpec, store: Any) -> Any:
    """Record the run (`running`, owned by this process): its record. Its artifacts folder is made before, by
    whoever creates its container (a bind mount's source must exist then)."""
    return store.start_run(spec.project_name, spec.argv, job=spec.job, image=spec.image, plan=spec.plan,
                           artifacts_dir=spec.artifacts_dir, args=spec.record_args(), run_id=spec.run_id,
                           origin=spec.origin)


def watch_run(spec: RunSpec, record: Any, container: str, *, docker: Any, store: Any,
              on_line: Callable[[str], None] | None = None,
              on_progress: Callable[[str], None] | None = None) -> RunResult:
    """Follow the started run's container to its end, then record how it ended and remove the container (the
    part of execute_run a detached run's watcher process does: envbuilder.run.detach)."""
    run_id, log_path, started = record.id, Path(record.log_path), record.started_at.timestamp()
    # the metrics' parsers and the result are imported while the job runs, not before it starts
    from envbuilder.run.metric_channels import MetricRecorder
    from envbuilder.run.result import RunResult

    sink = MetricRecorder(store, run_id, extra_patterns=spec.metric_patterns, artifacts_dir=spec.artifacts_dir,
                          since=started)
    sink.start()  # polls the metrics file; only once there is a job to write it
    if spec.stop_on_nan:
        sink.on_nonfinite = lambda why: _stop_in_background(store, run_id, docker, container, spec.grace_s)
    last_lines: deque[str] = deque(maxlen=HINT_LINES)
    exit_code, timed_out = _follow(spec, run_id, container, log_path, sink, docker, store,
                                   _keeping(last_lines, on_line), on_progress)
    # The job has ended: whatever happens from here on (cleanup, verification, Ctrl-C), the run is recorded.
    verified: tuple = ()
    try:
        out_of_memory = exit_code == 137 and spec.memory is not None and _oom_killed(docker, container)
        docker.remove_container(container)
        stop_requested = store.stop_requested(run_id)
        status, message = final_status(exit_code, stop_requested=stop_requested), exit_message(exit_code)
        if out_of_memory:
            message = f"exited with 137: killed for using more than its memory limit (--memory {spec.memory})"
        if timed_out:
            status, message = "failed", f"ran past its timeout of {spec.timeout_s:g} s and was stopped"
        elif stop_requested:
            why = f"stopped by --stop-on-nan: {sink.nonfinite}" if spec.stop_on_nan and sink.nonfinite else None
            message = (why or "stopped on request") + (f" ({message})" if message else "")
        if status == "completed" and spec.exports and spec.artifacts_dir is not None:
            verified, failure = _verify(spec, docker, log_path, on_line)
            if failure:
                status, exit_code, message = "failed", EXIT_VERIFY_FAILED, failure
    except KeyboardInterrupt:
        store.finish_run(run_id, "stopped", exit_code, "interrupted (Ctrl-C) after the job ended, before it was checked")
        _quietly(lambda: docker.remove_container(container))
        raise
    except BaseException as exc:
        store.finish_run(run_id, "failed", exit_code, f"envbuilder failed after the job ended: {describe(exc)}")
        raise
    store.finish_run(run_id, status, exit_code, message)
    hint = None
    if status == "failed":
        from envbuilder.run.hints import job_hint

        hint = job_hint(last_lines, read_only_project=bool(spec.mounts) and spec.mounts[0].read_only)
    return RunResult(run_id, status, exit_code, dict(sink.last), spec.artifacts_dir, log_path, message, verified,
                     max(0.0, time.time() - started), spec.job, hint, tuple(sink.notices))


def _keeping(lines: deque[str], on_line: Callable[[str], None] | None) -> Callable[[str], None]:
    def keep(line: str) -> None:
        lines.append(line)
        if on_line:
            on_line(line)

    return keep


def _make_artifacts_dir(artifacts_dir: Path | None) -> None:
    if artifacts_dir is None:
        return
    try:
        artifacts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvbuilderError("artifacts-dir-unusable", f"cannot create the artifacts folder {artifacts_dir}: {exc.strerror}",
                              "pass --artifacts DIR with a folder you can write") from None


def _oom_killed(docker: Any, container: str) -> bool:
    return bool((_quietly(lambda: docker.container_state(container)) or {}).get("OOMKilled"))


def start_container(spec: RunSpec, docker: Any, store: Any, *, attach: bool,
                    on_start: Callable[[Any], None] | None = None) -> tuple[Any, str]:
    """Record the run (begin_run) and start its container: (the run's record, the container's id).

    The run is recorded while the engine creates the container, before it starts, and on_start is given the
    record then. A start that fails once the run is recorded is recorded `failed` and raised; a run that could
    not be recorded leaves no container."""
    run_id = spec.run_id
    recorded: list[Any] = []

    def record_run() -> None:
        recorded.append(begin_run(spec, store))
        if on_start:
            on_start(recorded[0])

    _make_artifacts_dir(spec.artifacts_dir)  # a bind mount's source must be there when the engine creates it
    try:
        container = docker.run_detached(spec.image, list(spec.argv), attach=attach, while_creating=record_run,
                                        **spec.container_options(run_id))
    except BaseException as exc:
        # Unrecorded, the engine removed what it created, and the id may be another run's (run-id-exhausted).
        if recorded:
            why = str(exc) if isinstance(exc, EnvbuilderError) else "interrupted while starting the container"
            store.finish_run(run_id, "failed", None, why)
            _remove_labelled(docker, run_id)  # ours remove a container they could not start; another engine may not
        raise
    try:
        store.set_container(run_id, container)
    except BaseException:  # unrecorded, nobody could ever settle or remove it: it must not outlive this call
        _quietly(lambda: docker.remove_container(container))
        _quietly(lambda: store.finish_run(run_id, "failed", None, "its container could not be recorded"))
        raise
    return recorded[0], container


def _follow(spec: RunSpec, run_id: str, container: str, log_path: Path, sink: MetricRecorder, docker: Any, store: Any,
            on_line: Callable[[str], None] | None, on_progress: Callable[[str], None] | None) -> tuple[int, bool]:
    """(the job's exit code, whether it ran past its timeout), with its output in the log, metrics and on_line."""
    timed_out = threading.Event()
    timer = None
    if spec.timeout_s:
        def _on_timeout() -> None:
            timed_out.set()
            docker.stop(container, spec.grace_s)

        timer = threading.Timer(spec.timeout_s, _on_timeout)
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

            # on_progress only when asked for: an engine written before it (a host application's) still works
            progress = {"on_progress": on_progress} if on_progress is not None else {}
            exit_code = docker.follow_to_exit(container, handle, **progress)
            sink.finish()
    except KeyboardInterrupt:
        # Ctrl-C: give the job its grace period to checkpoint, record why it ended, leave nothing behind.
        # The note comes first: if this cleanup is cut short, the record still says envbuilder was watching.
        _quietly(lambda: store.note_watch(run_id, "envbuilder was interrupted (Ctrl-C) while watching"))
        _stop_insisting(docker, container, spec.grace_s)
        _quietly(sink.finish)
        _quietly(lambda: _append_unseen(store, docker, run_id, container, log_path))  # what it said while stopping
        state = _quietly(lambda: docker.container_state(container)) or {}
        if _quietly(lambda: store.finish_run(run_id, "stopped", state.get("ExitCode"), "interrupted (Ctrl-C)") or True):
            _quietly(lambda: docker.remove_container(container))
        raise
    except BaseException as exc:
        _watch_failed(exc, spec, run_id, container, log_path, docker, store)
        raise
    finally:
        sink.close()
        if timer:
            timer.cancel()
    return exit_code, timed_out.is_set()


def _stop_in_background(store: Any, run_id: str, docker: Any, container: str, grace_s: float) -> None:
    """--stop-on-nan: stop the job as `runs stop` does (SIGTERM, grace, SIGKILL), off the thread reading its output."""
    _quietly(lambda: store.request_stop(run_id))
    threading.Thread(target=lambda: _quietly(lambda: docker.stop(container, grace_s)), daemon=True).start()


def _stop_insisting(docker: Any, container: str, grace_s: float) -> None:
    """docker stop with the grace period; a second Ctrl-C during it kills the job at once."""
    try:
        _quietly(lambda: docker.stop(container, grace_s))
    except KeyboardInterrupt:
        _quietly(lambda: docker.kill(container))


def _watch_failed(exc: BaseException, spec: RunSpec, run_id: str, container: str, log_path: Path, docker: Any,
                  store: Any) -> None:
    """Record why watching the run failed, and raise the error the user should see (else the caller re-raises).

    The engine gone: the run stays `running` with a note, and its container is left for reconcile_runs (the
    real exit, the rest of the log) once the engine is back. A full disk: the job is stopped (it would print
    into nothing) and recorded `failed` when the store can still write; if it cannot, the container is kept so
    that a later reconcile records its exit. Anything else: `failed`, with what went wrong in words."""
    if isinstance(exc, DockerError) and exc.code == "docker-not-running":
        _quietly(lambda: store.note_watch(run_id, LOST_ENGINE))
        raise DockerError("docker-not-running", f"the Docker engine stopped answering while run {run_id} was running",
                          "start the engine again; `envbuilder runs list` then records how the job ended and "
                          "appends the rest of its log", {"run_id": run_id}) from None
    full = is_disk_full(exc, log_path)
    if full:  # the store's reserve makes room for the record; the note first, should the rest fail
        _quietly(store.release_reserve)
        _quietly(lambda: store.note_watch(run_id, "the disk filled up while envbuilder was watching"))
    _quietly(lambda: docker.stop(container, spec.grace_s))
    state = _quietly(lambda: docker.container_state(container)) or {}
    reason = ("the disk holding its log or the run database is full: envbuilder stopped the job" if full
              else f"envbuilder failed while watching the run: {describe(exc)}")
    recorded = _quietly(lambda: store.finish_run(run_id, "failed", state.get("ExitCode"), reason) or True)
    if recorded:
        _quietly(lambda: docker.remove_container(container))
    if full:
        where = getattr(exc, "filename", None) or (exc.context.get("path") if isinstance(exc, EnvbuilderError) else None)
        error = disk_full_error(where or log_path, f"recording run {run_id}; the job was stopped")
        if not recorded:
            error.hint = (f"{error.hint}; the end of the run could not be recorded: once there is space, "
                          "`envbuilder runs list` records it")
        raise error from None


def _verify(spec: RunSpec, docker: Any, log_path: Path, on_line: Callable[[str], None] | None) -> tuple[tuple, str | None]:
    from envbuilder.run.onnx import export_checks, failure_message, verify_exports

    with log_path.open("a", encoding="utf-8") as log:
        def handle(line: str) -> None:
            log.write(line + "\n")
            if on_line:
                on_line(line)

        try:
            results = verify_exports(image=spec.image, artifacts_dir=spec.artifacts_dir, checks=export_checks(spec.exports),
                                     docker=docker, built_with=spec.plan, user=spec.user, gpus=spec.gpus, on_line=handle)
        except EnvbuilderError as exc:
            handle(f"envbuilder: {exc}")
            return (), str(exc)
        for r in results:
            handle(f"envbuilder: verified {r.path.name}: max abs diff {r.max_abs_diff}" if r.ok
                   else f"envbuilder: {r.path.name} FAILED verification: {r.reason}")
    return tuple(results), failure_message(results)


def _quietly(fn: Callable[[], Any]) -> Any:
    """Best-effort cleanup: a failure here must not hide the error (or Ctrl-C) being handled."""
    try:
        return fn()
    except Exception:
        return None


def _remove_labelled(docker: Any, run_id: str) -> None:
    for container in _quietly(lambda: docker.containers_labelled(LABEL_RUN_ID, run_id)) or ():
        _quietly(lambda: docker.remove_container(container))


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
        from envbuilder.run.store import runner_alive

        if runner_alive(record):
            # The runner removes the container after recording; give it a moment before recording ourselves.
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                current = store.get(run_id)
                if current.status != "running":
                    return current
                time.sleep(0.1)
        # Nobody is watching (the runner was killed): what the job printed since is only in the container.
        _quietly(lambda: _append_unseen(store, docker, run_id, container, Path(record.log_path)))
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
    if log_path is None:
        return
    seen = log_path.read_text(encoding="utf-8", errors="replace").splitlines() if log_path.exists() else []
    output = docker.log_lines(container_id)
    kept = len(seen)
    if output[:kept] != seen:
        # The stream broke inside the last line the runner saw (the engine died): that line is taken whole.
        if not (seen and output[: kept - 1] == seen[:-1] and len(output) >= kept and output[kept - 1].startswith(seen[-1])):
            return  # the log is not a prefix of the output (edited, or lines lost): leave it as it is
        kept -= 1
    fresh = output[kept:]
    if not fresh:
        return
    from envbuilder.run.metric_channels import lines_to_points

    points = lines_to_points(seen[:kept], fresh)  # the step counter continues where the runner left off
    if kept < len(seen):
        tmp = log_path.with_name(log_path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in output), encoding="utf-8")
        os.replace(tmp, log_path)
    else:
        with log_path.open("a", encoding="utf-8") as log:
            log.writelines(line + "\n" for line in fresh)
    if points:
        store.add_metrics(run_id, points)


def _docker_for(settings: Any) -> Any:
    from envbuilder.docker.engine import Docker

    return Docker(getattr(settings, "docker_binary", None))

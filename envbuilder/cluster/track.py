"""Runs on clusters, tracked like local runs: their status from the engine, their log and metrics, their stop.

Nothing watches a submitted job the way the local executor watches its container, so the run commands settle
cluster runs when they are asked about them (`runs list`, `show`, `logs -f`, `plot`, `stop` call sync_runs):
the engine says queued, running or how the job ended; the job's output (the file Slurm writes, or the pod's
log fetched through the API) is the run's log, and its metrics are recorded from the channels local runs use
(envbuilder.cluster.metrics), each exactly once, even with several readers at once. A stop is graceful first:
SIGTERM through the engine, the grace period for the job to checkpoint, then the engine's full cancel.
Must not import the CLI or envbuilder.api.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from envbuilder.cluster.engines import ClusterEngine, engine_for
from envbuilder.cluster.metrics import ingest_metrics
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.spec import JobState
from envbuilder.errors import EnvbuilderError
from envbuilder.run.runrecord import RunRecord

EngineFactory = Callable[[ClusterProfile], ClusterEngine]
STOP_POLL_S = 0.5


def profile_of(record: RunRecord) -> ClusterProfile:
    """The profile the run was submitted with, as it was then (the user config may have changed since)."""
    data = dict((record.args or {}).get("cluster", {}).get("profile") or {})
    data.setdefault("engine", record.backend)
    return ClusterProfile.model_validate(data)


def sync_runs(store: Any, run_ids: Iterable[str] | None = None, *, engines: EngineFactory = engine_for) -> list[str]:
    """Settle the active cluster runs (or the ones named) from their engines; returns the ids whose status changed.

    An engine that cannot be asked (its tools missing, its controller down) leaves its runs as they are."""
    records = store.active_backend_runs() if run_ids is None else [store.get(i) for i in run_ids]
    changed = []
    for record in records:
        if record.backend is None or not record.active or not record.backend_job_id:
            if record.backend is not None:
                _read_output(store, record, None, None)
            continue
        try:
            engine = engines(profile_of(record))
            state = engine.state(record.backend_job_id)
            _read_output(store, record, engine, state)
        except EnvbuilderError:
            continue
        if _apply(store, record, state):
            changed.append(record.id)
    return changed


def _apply(store: Any, record: RunRecord, state: JobState) -> bool:
    if state.status == "running" and record.status == "queued":
        return store.mark_running(record.id)
    if state.status is None:
        store.finish_run(record.id, "stopped" if record.stop_requested_at else "failed", None,
                         f"{record.backend}: {state.detail or 'the job is gone'}")
        return True
    if not state.finished:
        return False
    status = state.status
    error = None
    if record.stop_requested_at is not None:
        status, error = "stopped", f"stopped on request ({state.detail})"
    elif status != "completed":
        error = f"{record.backend}: {state.detail}" + (f", exit {state.exit_code}" if state.exit_code is not None else "")
    store.finish_run(record.id, status, state.exit_code, error)
    return True


def _read_output(store: Any, record: RunRecord, engine: ClusterEngine | None, state: JobState | None) -> None:
    """Bring the run's log up to date (engines that keep the output themselves) and record new metrics."""
    log = Path(record.log_path)
    if engine is not None and state is not None and state.status != "queued":
        text = engine.output(record.backend_job_id or "")
        if text is not None:
            _append_new(log, text)
    ingest_metrics(store, record)


def _append_new(log: Path, text: str) -> None:
    """The engine returns the whole output each time: append what the log does not have yet."""
    have = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    if text.startswith(have) and len(text) > len(have):
        with log.open("a", encoding="utf-8") as handle:
            handle.write(text[len(have):])


def stop_run(store: Any, run_id: str, grace_s: float, *, engines: EngineFactory = engine_for,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> RunRecord:
    """SIGTERM through the engine, up to grace_s for the job to end, then the engine's full cancel; the run is
    recorded `stopped`. A run that already ended is returned as it is."""
    record = store.get(run_id)
    sync_runs(store, [record.id], engines=engines)
    record = store.get(record.id)
    if not record.active:
        return record
    store.request_stop(record.id)
    if not record.backend_job_id:
        store.finish_run(record.id, "stopped", None, "stopped on request before the engine accepted it")
        return store.get(record.id)
    engine = engines(profile_of(record))
    if record.status == "running":
        engine.signal_term(record.backend_job_id, grace_s)
        deadline = clock() + grace_s
        while clock() < deadline:
            sync_runs(store, [record.id], engines=engines)
            if not store.get(record.id).active:
                return store.get(record.id)
            sleep(STOP_POLL_S)
    engine.cancel(record.backend_job_id)
    deadline = clock() + 30.0
    while clock() < deadline:
        sync_runs(store, [record.id], engines=engines)
        if not store.get(record.id).active:
            return store.get(record.id)
        sleep(STOP_POLL_S)
    store.finish_run(record.id, "stopped", None, "cancelled on request; the engine had not confirmed it yet")
    return store.get(record.id)

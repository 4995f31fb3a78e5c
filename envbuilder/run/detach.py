"""Detached runs (`envbuilder run --detach`): the container starts, the run id comes back at once, and a
watcher process of its own follows the container to its end and records it as an attached run is recorded
(log file, metrics, status, export verification, container removed); `envbuilder runs logs -f ID` follows it.

Owns start_watcher (in the process that started the run) and what the watcher is told (the run's spec as JSON
on its stdin); the watcher itself is envbuilder.run.watcher (`python -m envbuilder.run.watcher`). The spec travels without the job's environment: the container has it
already, and it may hold secrets that must not sit in a pipe or a file. The run is handed to the watcher in the
store (its owner pid), so reconcile_runs leaves it alone while the watcher lives and settles it if the watcher
is killed. Must not import the docker SDK or the CLI.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from envbuilder.run.spec import RunSpec

WATCHER_LOG = "watcher.txt"  # next to the run's log: what the watcher itself said (a crash's traceback)


def start_watcher(spec: RunSpec, record: Any, container: str, *, docker: Any, store: Any) -> int:
    """Start the watcher of a started, recorded run and make it the run's owner; its process id.

    A watcher that cannot be started removes the container and records the run `failed`: nothing is left
    that nobody would record."""
    from envbuilder.proc import start_detached

    payload = json.dumps({"run_id": record.id, "container": container, "store": str(store.path),
                          "runs_dir": str(store.runs_dir), "spec": spec_to_json(spec)})
    try:
        pid = start_detached([sys.executable, "-m", "envbuilder.run.watcher"], stdin_data=payload,
                             output=Path(record.log_path).with_name(WATCHER_LOG))
        store.set_owner(record.id, pid)
    except BaseException as exc:
        _abandon(store, docker, record.id, container, exc)
        raise
    return pid


def _abandon(store: Any, docker: Any, run_id: str, container: str, exc: BaseException) -> None:
    # Best effort: the error being raised says more than a cleanup's own failure.
    with contextlib.suppress(Exception):
        docker.remove_container(container)
    with contextlib.suppress(Exception):
        store.finish_run(run_id, "failed", None, f"its watcher process could not start: {exc}")


def spec_to_json(spec: RunSpec) -> dict[str, Any]:
    """What the watcher needs of the spec: never its environment."""
    exports = [e.model_dump(mode="json", by_alias=True) if hasattr(e, "model_dump") else e for e in spec.exports]
    return {"image": spec.image, "argv": list(spec.argv), "args": list(spec.args), "project_dir": str(spec.project_dir),
            "project_name": spec.project_name, "job": spec.job, "user": spec.user, "workdir": spec.workdir,
            "artifacts_dir": None if spec.artifacts_dir is None else str(spec.artifacts_dir),
            "gpus": spec.gpus, "shm_size": spec.shm_size, "timeout_s": spec.timeout_s, "grace_s": spec.grace_s,
            "metric_patterns": [list(p) if isinstance(p, tuple) else p for p in spec.metric_patterns],
            "exports": exports, "plan": dict(spec.plan) if spec.plan is not None else None,
            "stop_on_nan": spec.stop_on_nan, "memory": spec.memory}


def spec_from_json(data: dict[str, Any]) -> RunSpec:
    exports: tuple[Any, ...] = ()
    if data["exports"]:
        from envbuilder.project.jobs import Export

        exports = tuple(Export.model_validate(e) for e in data["exports"])
    artifacts = data["artifacts_dir"]
    return RunSpec(
        image=data["image"], argv=tuple(data["argv"]), args=tuple(data["args"]), project_dir=Path(data["project_dir"]),
        project_name=data["project_name"], job=data["job"], mounts=(),
        artifacts_dir=None if artifacts is None else Path(artifacts), env={}, gpus=data["gpus"],
        shm_size=data["shm_size"], user=data["user"], workdir=data["workdir"], timeout_s=data["timeout_s"],
        grace_s=data["grace_s"], exports=exports, plan=data["plan"], stop_on_nan=data["stop_on_nan"],
        metric_patterns=tuple(tuple(p) if isinstance(p, list) else p for p in data["metric_patterns"]),
        memory=data["memory"], mode="detached")

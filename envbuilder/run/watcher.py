"""The watcher of a detached run (`envbuilder run --detach`): a process of its own, started by
envbuilder.run.detach.start_watcher, that follows the run's container to its end and records it as an attached
run is recorded (envbuilder.run.container.watch_run: log, metrics, status, export checks, container removed).

Run as `python -m envbuilder.run.watcher`, with what envbuilder.run.detach wrote on its stdin. What it says
itself (a crash) goes to the run folder's watcher.txt. Must not import the docker SDK at module level, nor the CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from envbuilder.errors import EnvbuilderError
from envbuilder.run.detach import WATCHER_LOG, spec_from_json


def watch(payload: dict[str, Any], *, docker: Any = None, store: Any = None) -> Any:
    """The watcher: follow the run's container to its end and record it; its RunResult."""
    from envbuilder.run.container import watch_run

    if store is None:
        from envbuilder.run.store import RunStore

        store = RunStore(Path(payload["store"]), Path(payload["runs_dir"]))
    if docker is None:
        from envbuilder.docker.engine import Docker

        docker = Docker()
    record = store.get(payload["run_id"])
    if record.status != "running":  # settled already (stopped before the watcher got going)
        return None
    spec = spec_from_json(payload["spec"])
    return watch_run(spec, record, payload["container"], docker=docker, store=store)


def main() -> int:
    payload = json.loads(sys.stdin.read())
    try:
        watch(payload)
    except EnvbuilderError as exc:  # recorded on the run already; this is for watcher.txt
        print(f"envbuilder watcher: {exc}", file=sys.stderr)
        return 1
    said = Path(payload["runs_dir"]) / payload["run_id"] / WATCHER_LOG
    if said.exists() and said.stat().st_size == 0:  # nothing went wrong: no file to wonder about
        said.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())

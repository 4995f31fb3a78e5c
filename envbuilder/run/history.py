"""Questions about recorded runs: how two or more runs differ, and removing runs with (or without) their files.

Owns compare_runs (the config, plan, origin and last metrics of runs side by side, and which rows differ) and
remove_runs (records, logs and, when asked, the per-run artifacts folders envbuilder made, never a folder the
user chose with --artifacts). `runs compare` and `runs rm` are these functions; drawing the overlaid metrics
is envbuilder.run.plot. Must not import docker or the CLI.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envbuilder.errors import UsageError
from envbuilder.run.artifacts import LATEST, point_latest


@dataclass(frozen=True)
class CompareRow:
    field: str
    values: tuple[str, ...]  # one per run, "-" when the run has none
    metric: bool = False  # the last value of a metric (always shown), else a config/plan/origin field

    @property
    def differs(self) -> bool:
        return len(set(self.values)) > 1


@dataclass(frozen=True)
class Comparison:
    runs: tuple[Any, ...]  # RunRecord, in the order asked
    rows: tuple[CompareRow, ...]

    def to_json(self) -> dict[str, Any]:
        return {"runs": [r.id for r in self.runs],
                "rows": [{"field": row.field, "values": list(row.values), "differs": row.differs,
                          "metric": row.metric} for row in self.rows]}


def compare_runs(store: Any, run_ids: Sequence[str]) -> Comparison:
    """The runs named (ids, unique prefixes or `last`) side by side; at least two distinct runs (`usage`)."""
    records = list({r.id: r for r in (store.get(run_id) for run_id in run_ids)}.values())
    if len(records) < 2:
        raise UsageError("usage", "runs compare needs at least two different runs",
                         "name two or more: envbuilder runs compare RUN_A RUN_B [RUN_C...]")
    fields = [_fields(record) for record in records]
    names = list(dict.fromkeys(name for f in fields for name in f))
    rows = [CompareRow(name, tuple(f.get(name, "-") for f in fields)) for name in names]
    last = store.last_metrics([r.id for r in records])
    metric_names = sorted({name for values in last.values() for name in values})
    rows += [CompareRow(name, tuple(_number(last[r.id].get(name)) for r in records), metric=True)
             for name in metric_names]
    return Comparison(tuple(records), tuple(rows))


def _fields(record: Any) -> dict[str, str]:
    """What a run was, flattened to named text values: project, job, plan, origin, how it was started, outcome."""
    plan = dict(record.plan or {})
    args = dict(record.args or {})
    fields = {"project": record.project, "job": record.job or "-", "status": record.status,
              "exit code": _text(record.exit_code), "image": record.image or "-"}
    for key in ("torch", "flavor", "python", "plan_hash"):
        fields[f"plan {key.replace('_', ' ')}"] = _text(plan.get(key))
    fields["git commit"] = (record.git_commit[:12] + (" (dirty)" if record.git_dirty else "")
                            if record.git_commit else "-")
    fields["resumed from"] = record.parent_run or "-"
    fields["command"] = " ".join(record.command)
    for key, value in args.items():
        if key not in ("project_dir", "cluster"):
            fields[key.replace("_", " ")] = _text(value)
    fields["duration"] = "-" if record.duration_s is None else f"{record.duration_s:.1f} s"
    return fields


def _text(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


# --- removing runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    runs: tuple[Any, ...]  # the RunRecords removed
    artifacts_removed: tuple[Path, ...] = ()
    artifacts_kept: tuple[tuple[Path, str], ...] = ()  # (folder, why it was kept), with `artifacts` asked for

    def to_json(self) -> dict[str, Any]:
        return {"removed": [r.id for r in self.runs], "artifacts_removed": [str(p) for p in self.artifacts_removed],
                "artifacts_kept": [{"path": str(p), "why": why} for p, why in self.artifacts_kept]}


def remove_runs(store: Any, run_ids: Sequence[str], *, artifacts: bool = False) -> Removal:
    """Remove finished runs (their records, metrics and logs). With artifacts, also each run's own artifacts
    folder (the `<job>/<run-id>/` folder envbuilder made), unless a run that remains uses it; a folder given
    with --artifacts is never removed. A `latest` link that pointed at a removed folder moves to the newest
    run left. An active run among them refuses the whole removal (`run-active`)."""
    records = store.remove(run_ids)
    if not artifacts:
        return Removal(tuple(records))
    in_use: dict[str, str] = {}  # folder -> the newest run left that uses it
    for record in store.list_runs(limit=None):
        if record.artifacts_dir:
            in_use.setdefault(str(Path(record.artifacts_dir)), record.id)
    left = [Path(folder) for folder in in_use]  # newest first
    removed: list[Path] = []
    kept: list[tuple[Path, str]] = []
    for folder, record in _folders_of(records):
        if str(folder) in in_use:
            kept.append((folder, f"run {in_use[str(folder)]} uses it too"))
        elif folder.name != record.id:
            kept.append((folder, "not a per-run folder envbuilder made (given with --artifacts, or another run's)"))
        elif folder.is_dir():
            shutil.rmtree(folder)
            removed.append(folder)
            _relink(folder, left)
    return Removal(tuple(records), tuple(removed), tuple(kept))


def _folders_of(records: Iterable[Any]) -> list[tuple[Path, Any]]:
    """Each artifacts folder once, with the run it is named after when that run is among them."""
    by_folder: dict[str, tuple[Path, Any]] = {}
    for record in records:
        if not record.artifacts_dir:
            continue
        folder = Path(record.artifacts_dir)
        if str(folder) not in by_folder or folder.name == record.id:
            by_folder[str(folder)] = (folder, record)
    return list(by_folder.values())


def _relink(removed: Path, left: list[Path]) -> None:
    """`latest` links (of this job and of jobs that worked in its folder) that pointed at `removed`: this job's
    moves to the folder of its newest run left (`left`: the folders runs still use, newest first), another
    job's is removed."""
    job_dir = removed.parent
    # not glob("*/latest"): it skips a link whose target is gone, which is every link this is about
    for link in (sibling / LATEST for sibling in job_dir.parent.iterdir() if sibling.is_dir()):
        if not link.is_symlink() or (link.parent / Path(link.readlink())).resolve() != removed.resolve():
            continue
        newest = None
        if link.parent == job_dir:
            newest = next((folder for folder in left if folder.parent == job_dir and folder.is_dir()), None)
        point_latest(link, newest)

"""The metrics of runs on clusters: the same channels as local runs, read whenever a run command asks.

The channels and their order are envbuilder.run.metric_channels': the explicit one first, which is the file
$ENVBUILDER_METRICS names (the artifacts folder's .envbuilder/metrics.jsonl: readable from here for Slurm runs,
whose artifacts folder is on this machine or on a filesystem it shares with the nodes; a pod's or a SkyPilot
node's is not, and submit says so) and `ENVBUILDER_METRIC {...}` lines in the job's output (every engine); the
log heuristics only while the explicit channel has said nothing. Nothing watches a cluster run, so each reader
(`runs list`, `show`, `logs -f`, `plot`) brings the record up to what the files hold:
- while there are only log lines, the new complete ones are parsed and appended, each once
  (RunStore.add_log_metrics: a compare-and-set on the run's read mark, so two readers never record a line twice);
- once the explicit channel has spoken, its records (the file's, then the output's prefixed lines) are re-read
  whole whenever either file grew, and replace the run's points (RunStore.replace_log_metrics, the same
  compare-and-set, on a mark that is then the two files' combined length): the log's points are dropped, as the
  local recorder drops them, and a `metrics-source` notice marks the switch for good. Re-reading whole keeps no
  per-file offsets in the store; the channel holds one record a step or an epoch, little beside the log.
Must not import the CLI, docker or envbuilder.api.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envbuilder.run.metric_channels import (
    METRIC_PREFIX,
    SOURCES,
    checked_record,
    prefixed_record,
)
from envbuilder.run.metrics import MetricTracker, is_nonfinite_loss
from envbuilder.run.record import MetricPoint
from envbuilder.run.runrecord import RunRecord
from envbuilder.run.spec import METRICS_ENV, METRICS_RELPATH

SWITCHED = "metrics-source"  # the run notice that says the explicit channel spoke (local runs write it too)
READABLE_ARTIFACTS = ("slurm",)  # engines whose artifacts folder this machine can read


def metrics_file(record: RunRecord) -> Path | None:
    """The run's $ENVBUILDER_METRICS file as this machine sees it, for engines whose artifacts it can read."""
    if record.backend not in READABLE_ARTIFACTS or not record.artifacts_dir:
        return None
    return Path(record.artifacts_dir) / METRICS_RELPATH


def ingest_metrics(store: Any, record: RunRecord) -> int:
    """Record what the run's output and metrics file hold that the store has not; returns how many points were
    written (all of them when the explicit channel's were replaced)."""
    log_data = _complete_lines(Path(record.log_path))
    path = metrics_file(record)
    file_data = _complete_lines(path) if path is not None else b""
    switched = _switched(record)
    if switched or file_data.strip() or METRIC_PREFIX.encode() in log_data:
        written = _ingest_channel(store, record, log_data, file_data, switched)
        if written is not None:
            return written
    return _ingest_log_lines(store, record, log_data)


def _ingest_channel(store: Any, record: RunRecord, log_data: bytes, file_data: bytes, switched: bool) -> int | None:
    """The explicit channel, re-read whole; None when it has no valid record yet (the log heuristics go on)."""
    mark = len(log_data) + len(file_data)
    start = store.log_read_bytes(record.id)
    if mark == start:
        # Nothing new since the last reader (a switch always comes with new bytes: the file's, or the line's).
        return 0
    points, notes = channel_points(_lines(file_data), _lines(log_data))
    if not points and not switched and not _switched(store.get(record.id)):  # (another reader may have switched)
        return None
    if not store.replace_log_metrics(record.id, points, start, mark):
        return 0  # another reader recorded this state first
    notes.insert(0, (SWITCHED, f"metrics from {SOURCES['envbuilder']}"))
    known = {n.get("code") for n in store.get(record.id).notices}  # as they are now, not as the caller read them
    for code, message in notes:
        if code not in known:
            known.add(code)
            store.add_notice(record.id, code, message)
    return len(points)


def _switched(record: RunRecord) -> bool:
    return any(n.get("code") == SWITCHED for n in record.notices)


def channel_points(file_lines: list[str], log_lines: list[str]) -> tuple[list[MetricPoint], list[tuple[str, str]]]:
    """(the explicit channel's points, the notices its lines call for: a line that is no record, keys that are not
    numbers, a NaN loss), from the metrics file's lines and then the output's prefixed ones. A job uses one or
    the other; with both, the file's records come first (their interleaving is not known here)."""
    tracker = MetricTracker()
    points: list[MetricPoint] = []
    notes: dict[str, str] = {}
    sources = [(text, f"line {number} of ${METRICS_ENV}") for number, text in enumerate(file_lines, 1) if text.strip()]
    sources += [(record, f"a {METRIC_PREFIX} line") for record in map(prefixed_record, log_lines) if record is not None]
    for text, where in sources:
        values, said = checked_record(text, where)
        for code, message in said:
            notes.setdefault(code, message)
        if values is None:
            continue
        new = tracker.feed_values(values)
        for point in new:
            if is_nonfinite_loss(point.name, point.value):
                notes.setdefault("nonfinite-loss", f"{point.name} was {point.value} at {point.axis} {point.step}")
        points.extend(new)
    return points, list(notes.items())


def _ingest_log_lines(store: Any, record: RunRecord, log_data: bytes) -> int:
    """The log heuristics on the complete lines not read yet, appended once."""
    start = store.log_read_bytes(record.id)
    end = len(log_data)
    if end <= start:
        return 0
    patterns = tuple(tuple(p) if isinstance(p, list) else p
                     for p in (record.args or {}).get("cluster", {}).get("metric_patterns", ()))
    tracker = MetricTracker(extra_patterns=patterns)
    tracker.feed_lines(_lines(log_data[:start]))  # the step counter continues where the last reader stopped
    points = tracker.feed_lines(_lines(log_data[start:end]))
    return len(points) if store.add_log_metrics(record.id, points, start, end) else 0


def _complete_lines(path: Path) -> bytes:
    """The file's bytes up to its last newline (a line still being written waits for the next reader)."""
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    return data[:data.rfind(b"\n") + 1]


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").splitlines()

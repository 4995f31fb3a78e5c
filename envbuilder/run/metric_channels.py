"""Where a run's metrics come from: the explicit channels, the log-line fallback, and the recorder that picks one.

Channels, in order of preference (the first that has anything is the run's only source):
1. envbuilder's own: one JSON object per line, written to the file `$ENVBUILDER_METRICS` names (the executor sets
   it to /artifacts/.envbuilder/metrics.jsonl) or printed to stdout after the prefix `ENVBUILDER_METRIC `.
   Contract (parse_record): keys are metric names, kept as written; values are numbers (JSON NaN/Infinity and
   the strings "nan"/"inf" allowed); nested objects are flattened with `/`; optional "step" (an integer) and
   "epoch" (a number) place the values on the x axis, as in the log heuristics. Read live (the file is polled).
2. TensorBoard event files written under the artifacts folder during the run, read after it ends with
   tensorboard's own event reader (the optional `tensorboard` extra; without it the run says so once).
3. The log heuristics of envbuilder.run.metrics, recorded live, replaced when a better channel shows up.

A NaN or infinite loss from any channel is a notice on the run (`nonfinite-loss`) and, when asked
(--stop-on-nan), calls on_nonfinite so the executor stops the job gracefully.
Must not import docker, the CLI, or tensorboard at module level (the default install has no tensorboard).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from envbuilder.run.metrics import (
    MetricPoint,
    MetricTracker,
    flatten_numbers,
    is_nonfinite_loss,
)
from envbuilder.run.spec import METRICS_ENV, METRICS_RELPATH

METRIC_PREFIX = "ENVBUILDER_METRIC"
POLL_S = 0.5
FLUSH_S = 1.0
FLUSH_POINTS = 200
_MAX_RECORD = 100_000  # bytes; a longer "record" is not one (and a line that size is someone's bug)

SOURCES = {"envbuilder": f"${METRICS_ENV} / {METRIC_PREFIX} lines", "tensorboard": "TensorBoard event files",
           "log": "log lines (heuristics)"}


class BadRecord(ValueError):
    """A line of the metrics channel that does not follow its contract; the message says how."""


def parse_record(text: str) -> tuple[dict[str, float], list[str]]:
    """(the values of one metrics-channel record, names as written with `step`/`epoch` when given; the keys
    ignored because their value is not a number). Raises BadRecord for a line that is no record at all."""
    if len(text) > _MAX_RECORD:
        raise BadRecord(f"longer than {_MAX_RECORD} bytes")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadRecord(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise BadRecord(f"a JSON {type(data).__name__}, not an object")
    data = {key: _number_text(value) for key, value in data.items()}
    values = flatten_numbers(data)
    if "step" in data and not (isinstance(data["step"], int) and not isinstance(data["step"], bool)
                               or isinstance(data["step"], float) and data["step"].is_integer()):
        raise BadRecord(f"\"step\" must be an integer, got {data['step']!r}")
    ignored = sorted(str(k) for k, v in data.items() if not isinstance(v, (int, float, dict)) or isinstance(v, bool))
    if not values:
        raise BadRecord("no numeric values")
    return values, ignored


def checked_record(text: str, where: str) -> tuple[dict[str, float] | None, list[tuple[str, str]]]:
    """(a channel line's values, None when it is no record; the (code, message) notices it calls for), `where`
    naming the line for the user."""
    try:
        values, ignored = parse_record(text)
    except BadRecord as exc:
        return None, [("metrics-record-ignored", f"{where} was ignored: {exc} (one JSON object of numbers a line)")]
    if ignored:
        return values, [("metrics-keys-ignored", f"{where}: {', '.join(map(repr, ignored))} ignored: not a number")]
    return values, []


def _number_text(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return float(value.strip().lower().replace("infinity", "inf"))
    return value


def prefixed_record(line: str) -> str | None:
    """The JSON text of a stdout line `ENVBUILDER_METRIC {...}`, else None."""
    stripped = line.lstrip()
    if not stripped.startswith(METRIC_PREFIX):
        return None
    rest = stripped[len(METRIC_PREFIX):]
    return rest.lstrip(" \t:").strip() if rest[:1] in (" ", "\t", ":") or not rest else None


def fresh_metrics_file(path: Path) -> None:
    """Make the metrics file's folder (the job only opens the file) and move an earlier run's file aside, so
    that this run's lines are all read even when the job rewrites the file. Cluster runs do it at submit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.rename(path.with_name(f"metrics.{int(path.stat().st_mtime)}.jsonl"))
    except OSError:
        pass  # an unwritable artifacts folder fails the run elsewhere, with its own message


def _fresh_tail(path: Path) -> JsonlTail | None:
    """A tail on the run's metrics file, made fresh (fresh_metrics_file)."""
    fresh_metrics_file(path)
    return JsonlTail(path)


class JsonlTail:
    """The complete lines appended to a file since the last read. A file that shrank was rewritten (a job
    that opens it with "w"): reading starts over. A last line without its newline waits for the next read."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = self.path.stat().st_size if self.path.exists() else 0  # an earlier run's lines are not ours
        self._line_no = 0

    def read(self) -> list[tuple[int, str]]:
        """(line number, text) of each new complete line."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self._offset:
            self._offset, self._line_no = 0, 0
        if size == self._offset:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(size - self._offset)
        cut = chunk.rfind(b"\n") + 1
        self._offset += cut
        lines = []
        for raw in chunk[:cut].splitlines():
            self._line_no += 1
            if raw.strip():
                lines.append((self._line_no, raw.decode("utf-8", errors="replace")))
        return lines


def tensorboard_scalars(root: Path, since: float | None = None) -> list[tuple[str, int, float, float]]:
    """(tag, step, value, wall time) of every scalar in the event files under `root` written at or after `since`
    (a file's mtime; an earlier run's files are left out). Tags in more than one folder are prefixed with the
    folder (Lightning's version_0/ and version_1/). Raises ImportError without the tensorboard package."""
    files = [p for p in sorted(Path(root).rglob("*tfevents*"))
             if p.is_file() and (since is None or p.stat().st_mtime >= since)]
    if not files:
        return []
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    folders = {f.parent for f in files}
    scalars: list[tuple[str, int, float, float]] = []
    for path in files:
        prefix = "" if len(folders) == 1 else f"{path.parent.relative_to(root).as_posix()}/"
        scalar_tags: set[str] = set()
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                # The loader migrates legacy simple_value summaries to scalar tensors; a tag's metadata comes with
                # its first value only, so remember which tags are scalars.
                if value.metadata.plugin_data.plugin_name == "scalars":
                    scalar_tags.add(value.tag)
                if value.tag not in scalar_tags or value.WhichOneof("value") != "tensor":
                    continue
                array = tensor_util.make_ndarray(value.tensor)
                if array.size == 1:
                    scalars.append((prefix + value.tag, int(event.step), float(array.reshape(-1)[0]), event.wall_time))
    return scalars


def has_event_files(root: Path, since: float | None = None) -> bool:
    return any(p.is_file() and (since is None or p.stat().st_mtime >= since) for p in Path(root).rglob("*tfevents*"))


class MetricRecorder:
    """Records one run's metrics from its best channel (see the module docstring) into the store, in batches.

    feed() takes each output line as it arrives; start() polls the metrics file in a thread until finish(), which
    reads the last of it and the TensorBoard events, writes what is pending and the run's notices.
    Thread-safe: lines arrive on the executor's thread, the file is polled on another.
    """

    def __init__(self, store: Any, run_id: str, *, extra_patterns: tuple[Any, ...] = (),
                 artifacts_dir: Path | None = None, since: float | None = None,
                 on_nonfinite: Callable[[str], None] | None = None, clock: Callable[[], float] = time.time) -> None:
        self._store, self._run_id, self._clock = store, run_id, clock
        self._heuristics = MetricTracker(extra_patterns=tuple(extra_patterns), clock=clock)
        self._channel = MetricTracker(clock=clock)  # the explicit channel's own step and axis
        self._artifacts, self._since = artifacts_dir, since
        self._tail = _fresh_tail(artifacts_dir / METRICS_RELPATH) if artifacts_dir is not None else None
        self.on_nonfinite = on_nonfinite  # called once, with the sentence, at the first NaN/inf loss
        self._lock = threading.RLock()
        self._pending: list[MetricPoint] = []
        self._last_flush = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._noted: set[str] = set()
        self.source = "log"
        self.recorded = 0
        self.last: dict[str, float] = {}
        self.notices: list[dict[str, str]] = []
        self.nonfinite: str | None = None  # the first NaN/inf loss, said as a sentence

    # --- input ---------------------------------------------------------------------------------------------

    def feed(self, line: str) -> None:
        """One line of the job's output: a prefixed record, or (while no channel has spoken) a log line."""
        record = prefixed_record(line)
        with self._lock:
            # What the job wrote to the file before printing this line comes first (one stat() when unchanged).
            self.poll()
            if record is not None:
                self._record(record, f"a {METRIC_PREFIX} line")
            elif self.source == "log":
                self._add(self._heuristics.feed(line))

    def poll(self) -> None:
        """Read what the job appended to the metrics file."""
        if self._tail is None:
            return
        with self._lock:
            for line_no, text in self._tail.read():
                self._record(text, f"line {line_no} of ${METRICS_ENV}")

    def start(self) -> MetricRecorder:
        if self._tail is not None and self._thread is None:
            self._thread = threading.Thread(target=self._poll_loop, name=f"metrics-{self._run_id}", daemon=True)
            self._thread.start()
        return self

    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
                self._maybe_flush()
            except Exception as exc:  # a full disk or a locked store must not kill the run: say it, once
                self._note("metrics-not-recorded", f"metrics from the file were not recorded: {exc}")

    def _record(self, text: str, where: str) -> None:
        values, notes = checked_record(text, where)
        for code, message in notes:
            self._note(code, message)
        if values is None:
            return
        if self.source != "envbuilder":
            self._switch("envbuilder")
        self._add(self._channel.feed_values(values))

    # --- state -----------------------------------------------------------------------------------------------

    def _switch(self, source: str) -> None:
        """A better channel spoke: what the lesser one recorded is dropped, here and in the store."""
        self.source, self._pending, self.last = source, [], {}
        if self.recorded:
            self._store.replace_metrics(self._run_id, [])
            self.recorded = 0

    def _add(self, points: Iterable[MetricPoint]) -> None:
        points = list(points)
        if not points:
            return
        self._pending.extend(points)
        self._observe(points)
        self._maybe_flush()

    def _observe(self, points: list[MetricPoint]) -> None:
        for point in points:
            self.last[point.name] = point.value
            if self.nonfinite is None and is_nonfinite_loss(point.name, point.value):
                self.nonfinite = f"{point.name} was {point.value} at {point.axis} {point.step}"
                self._note("nonfinite-loss", self.nonfinite)
                if self.on_nonfinite is not None:
                    self.on_nonfinite(self.nonfinite)

    def _maybe_flush(self) -> None:
        with self._lock:
            if len(self._pending) >= FLUSH_POINTS or time.monotonic() - self._last_flush >= FLUSH_S:
                self.flush()

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._store.add_metrics(self._run_id, self._pending)
                self.recorded += len(self._pending)
                self._pending = []
            self._last_flush = time.monotonic()

    def _note(self, code: str, message: str) -> None:
        with self._lock:
            if code in self._noted:
                return
            self._noted.add(code)
            self.notices.append({"code": code, "message": message})
            try:
                self._store.add_notice(self._run_id, code, message)
            except Exception:  # the notice stays on the result; the store's own error surfaces on the next write
                pass

    # --- the end -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop polling the metrics file (finish() does it too); safe to call more than once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def finish(self) -> None:
        """The run's output has ended: last file lines, TensorBoard when no better channel spoke, all written."""
        self.close()
        self.poll()
        with self._lock:
            if self.source == "log" and self._artifacts is not None:
                self._read_tensorboard()
            self.flush()
            if self.recorded:
                self._note("metrics-source", f"metrics from {SOURCES[self.source]}")

    def _read_tensorboard(self) -> None:
        # mtimes have a coarse resolution on some filesystems: a second of slack keeps a fast job's own files
        since = None if self._since is None else self._since - 1.0
        try:
            scalars = tensorboard_scalars(self._artifacts, since)
        except ImportError:
            if has_event_files(self._artifacts, since):
                self._note("tensorboard-missing", "TensorBoard event files are in the artifacts folder but were not "
                           "read: the tensorboard package is missing (pip install 'envbuilder[tensorboard]')")
            return
        except Exception as exc:  # a truncated or foreign event file: the log's metrics stay
            self._note("tensorboard-unreadable", f"TensorBoard event files could not be read: {exc}")
            return
        if not scalars:
            return
        points = [MetricPoint(step, tag, value, wall) for tag, step, value, wall in sorted(scalars, key=lambda s: s[1])]
        self.source, self.last, self._pending = "tensorboard", {}, []
        self._observe(points)
        # One write replaces the log's points: a reader never sees the two mixed.
        self._store.replace_metrics(self._run_id, points)
        self.recorded = len(points)


def lines_to_points(seen: Iterable[str], missing: Iterable[str], extra_patterns: tuple[Any, ...] = ()) -> list[MetricPoint]:
    """The points of `missing` lines that no runner saw (a crash, a stop's grace period), with the step state that
    `seen` leaves: prefixed records when the output has any, else the log heuristics."""
    seen, missing = list(seen), list(missing)
    explicit = any(prefixed_record(line) is not None for line in seen + missing)
    tracker = MetricTracker(extra_patterns=tuple(extra_patterns))
    points: list[MetricPoint] = []
    for index, line in enumerate(seen + missing):
        if explicit:
            record = prefixed_record(line)
            try:
                new = tracker.feed_values(parse_record(record)[0]) if record is not None else []
            except BadRecord:
                new = []
        else:
            new = tracker.feed(line)
        if index >= len(seen):
            points.extend(new)
    return points


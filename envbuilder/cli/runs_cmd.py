"""`envbuilder runs list|show|logs|stop|plot|compare|rm` and `envbuilder schema`: thin commands over
envbuilder.run.store and envbuilder.run.history. Every command that takes a run accepts its id, a unique prefix
of it, or `last` (the newest run)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from envbuilder.cli.output import emit_json, settings_of
from envbuilder.errors import DockerError, EnvbuilderError

_FOLLOW_POLL_S = 0.25
_CLUSTER_POLL_S = 1.0  # each poll of a cluster run asks its scheduler


def _store(ctx: click.Context):
    from envbuilder.run.store import RunStore

    # A damaged database moved aside, a full disk: said once, on stderr, before the answer.
    return RunStore.from_settings(settings_of(ctx), on_notice=lambda m: click.echo(f"envbuilder: warning: {m}", err=True))


def _reconcile(ctx: click.Context, store) -> None:
    """Let the executor settle runs whose container is gone; runs can be listed without Docker."""
    from envbuilder.run.container import reconcile_runs

    try:
        reconcile_runs(store, settings_of(ctx))
    except DockerError as exc:
        why = "the disk is full" if exc.code == "disk-full" else exc.code
        click.echo(f"envbuilder: note: run states not checked against Docker ({why})", err=True)


def _sync_cluster(store, run_ids=None) -> None:
    """Settle runs on clusters from their engines (status, log, metrics); loaded only when there are some."""
    wanted = list(run_ids) if run_ids is not None else None
    if wanted is None and not store.active_backend_runs():
        return
    if wanted is not None and not any(store.get(i).backend for i in wanted):
        return
    from envbuilder.cluster.track import sync_runs

    sync_runs(store, wanted)


def _row(record) -> dict[str, Any]:
    return record.to_json()


@click.group("runs")
def runs() -> None:
    """List, show, compare, follow, stop, plot and remove recorded runs.

    RUN is a run id, a unique prefix of one, or `last` (the newest run)."""


_LIST_COLUMNS = ("ID", "STATUS", "PROJECT", "JOB", "EXIT", "STARTED", "DURATION", "COMMIT", "METRICS", "COMMAND")


@runs.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table", show_default=True,
              help="table: aligned columns, one line per run (never wrapped); tsv: tab-separated with a header; "
                   "json: every field.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--project", help="Only runs of this project.")
@click.option("--job", help="Only runs of this job.")
@click.option("--status", type=click.Choice(["queued", "running", "completed", "failed", "stopped"]),
              help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs.")
@click.pass_context
def list_cmd(ctx: click.Context, fmt: str, as_json: bool, project: str | None, job: str | None, status: str | None,
             limit: int) -> None:
    """Recorded runs, newest first, with each run's last metric values."""
    store = _store(ctx)
    _reconcile(ctx, store)
    _sync_cluster(store)
    records = store.list_runs(limit=limit, project=project, status=status, job=job)
    last = store.last_metrics([r.id for r in records])
    if as_json or fmt == "json":
        emit_json([{**_row(record), "last_metrics": {k: _json_number(v) for k, v in last[record.id].items()}}
                   for record in records])
        return
    rows = [_list_row(record, last[record.id]) for record in records]
    if fmt == "tsv":
        for row in [_LIST_COLUMNS, *rows]:
            click.echo("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    if not records:
        click.echo("no runs recorded")
        return
    _print_table(_LIST_COLUMNS, rows)


def _list_row(record, metrics: dict[str, float]) -> tuple[str, ...]:
    commit = (record.git_commit[:8] + ("+" if record.git_dirty else "")) if record.git_commit else "-"
    return (record.id, record.status, record.project, record.job or "-",
            "-" if record.exit_code is None else str(record.exit_code),
            record.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), _duration(record.duration_s), commit,
            " ".join(f"{name}={value:.4g}" for name, value in sorted(metrics.items())) or "-",
            " ".join(record.command))


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Aligned columns, one line per row. On a terminal the last column is cut to its width (…) so that no row
    wraps; elsewhere (a pipe, a file) lines are whole: nothing is lost to a width no one chose."""
    import shutil
    import sys

    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    room = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    for row in [header, *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
        if room is not None and len(line) > room:
            line = line[: max(room - 1, 0)] + "…"
        click.echo(line.rstrip())


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the record and its metric series).")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run: its record, where it came from, and the last value of each metric."""
    store = _store(ctx)
    _reconcile(ctx, store)
    record = store.get(run_id)
    _sync_cluster(store, [record.id])
    record = store.get(record.id)
    series = store.metric_series(record.id)
    if as_json:
        data = _row(record)
        data["metrics"] = {name: [[step, _json_number(value)] for step, value in points]
                           for name, points in series.items()}
        data["metrics_axis"] = store.metric_axis(record.id) if series else None  # what the steps count
        emit_json(data)
        return
    for label, value in _show_fields(record):
        if value is not None:
            click.echo(f"{label:>10}: {value}")
    for notice in record.notices:  # a NaN loss, a metrics channel that could not be read
        click.echo(f"{'notice':>10}: {notice.get('message')} [{notice.get('code')}]")
    axis = store.metric_axis(record.id) if series else "step"
    for name, points in sorted(series.items()):
        step, value = points[-1]
        click.echo(f"{name:>10}: {value:.6g} ({axis} {step}, {len(points)} points)")


def _show_fields(record) -> list[tuple[str, Any]]:
    plan = record.plan or {}
    plan_text = ", ".join(f"{key.replace('_', ' ')} {plan[key]}" for key in ("torch", "flavor", "python", "plan_hash")
                          if plan.get(key)) or None
    commit = (record.git_commit + (" (tracked files changed)" if record.git_dirty else "")) if record.git_commit \
        else None
    return [("id", record.id), ("status", record.status), ("project", record.project), ("job", record.job),
            ("image", record.image), ("plan", plan_text), ("commit", commit), ("resumed", record.parent_run),
            ("command", " ".join(record.command)),
            ("started", record.started_at.astimezone().isoformat(timespec="seconds")),
            ("finished", record.finished_at.astimezone().isoformat(timespec="seconds") if record.finished_at else None),
            ("duration", _duration(record.duration_s)), ("exit code", record.exit_code),
            ("container", record.container_id), ("artifacts", record.artifacts_dir), ("log", record.log_path),
            ("args", json.dumps(record.args) if record.args else None), ("error", record.error)]


@runs.command("compare")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_A RUN_B [RUN...]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG of the runs' metrics overlaid (default: compare-<ids>.png in the runs folder).")
@click.option("--all", "show_all", is_flag=True, help="Show every field, not only those that differ.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON (and the PNG's path).")
@click.pass_context
def compare(ctx: click.Context, run_ids: tuple[str, ...], output: Path | None, show_all: bool, as_json: bool) -> None:
    """Two or more runs side by side: what differs in their config, plan and origin, their last metric
    values, and one PNG with their metrics overlaid."""
    from envbuilder.run.history import compare_runs

    store = _store(ctx)
    comparison = compare_runs(store, run_ids)
    ids = [r.id for r in comparison.runs]
    png, why = _compare_plot(store, ids, output)
    if as_json:
        emit_json({**comparison.to_json(), "plot": None if png is None else str(png), "plot_note": why})
        return
    rows = [row for row in comparison.rows if show_all or row.metric or row.differs]
    if not any(row.differs for row in comparison.rows if not row.metric) and not show_all:
        click.echo("the runs' config, plan and origin are the same (--all shows them)")
    table = [(row.field, *row.values) for row in rows if not row.metric]
    metrics = [(row.field, *row.values) for row in rows if row.metric]
    if metrics:  # a section of its own: what the runs measured, under what they were
        table += [("last metric values:", *[""] * len(ids)), *metrics]
    _print_table(("", *ids), table)
    click.echo(f"plot: {png}" if png is not None else f"no plot: {why}", err=png is None)


def _compare_plot(store, ids: list[str], output: Path | None) -> tuple[Path | None, str | None]:
    """(the PNG written, None) or (None, why there is none: no metrics, no matplotlib)."""
    from envbuilder.run.plot import plot_compare

    out = output or store.runs_dir / f"compare-{'-'.join(ids)[:180]}.png"
    series = {run_id: store.metric_series(run_id) for run_id in ids}
    axes = {run_id: store.metric_axis(run_id) for run_id in ids if series[run_id]}
    try:
        return plot_compare(series, out, axes_of=axes, title=f"{len(ids)} runs compared"), None
    except EnvbuilderError as exc:
        if exc.code not in ("no-metrics", "matplotlib-missing"):
            raise
        return None, f"{exc.message} ({exc.hint})" if exc.hint else exc.message


@runs.command("rm")
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN...")
@click.option("--artifacts", "with_artifacts", is_flag=True,
              help="Also delete each run's own artifacts folder (never a folder given with --artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.pass_context
def rm(ctx: click.Context, run_ids: tuple[str, ...], with_artifacts: bool, as_json: bool) -> None:
    """Remove finished runs: their records, metrics and logs (artifacts stay unless --artifacts).
    A running or queued run is refused: stop it first."""
    from envbuilder.run.history import remove_runs

    store = _store(ctx)
    _reconcile(ctx, store)  # a run whose container ended while nobody watched is finished, so removable
    removal = remove_runs(store, run_ids, artifacts=with_artifacts)
    if as_json:
        emit_json(removal.to_json())
        return
    for record in removal.runs:
        kept = "" if with_artifacts or not record.artifacts_dir else f" (artifacts kept: {record.artifacts_dir})"
        click.echo(f"removed {record.id}{kept}")
    for folder in removal.artifacts_removed:
        click.echo(f"deleted {folder}")
    for folder, why in removal.artifacts_kept:
        click.echo(f"kept {folder}: {why}")


@runs.command("logs")
@click.argument("run_id", metavar="RUN")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the run is no longer running.")
@click.option("--tail", "tail", type=click.IntRange(min=0), help="Start with only the last N lines.")
@click.pass_context
def logs(ctx: click.Context, run_id: str, follow: bool, tail: int | None) -> None:
    """The run's log."""
    store = _store(ctx)
    record = store.get(run_id)
    path = Path(record.log_path)
    if not path.exists() and not (follow and record.active):
        raise EnvbuilderError("log-missing", f"the log of {record.id} is gone ({path})",
                              "logs live under the data dir's runs/ folder; was it cleaned?")
    offset = _print_start(path, tail)
    while follow:
        offset = _print_from(path, offset)
        if record.backend:  # a cluster run: its engine says when it has ended
            _sync_cluster(store, [record.id])
        if not store.get(record.id).active:
            _print_from(path, offset)
            break
        time.sleep(_FOLLOW_POLL_S if not record.backend else _CLUSTER_POLL_S)


def _print_start(path: Path, tail: int | None) -> int:
    if not path.exists():
        return 0
    data = path.read_bytes()
    if tail is not None:
        lines = data.splitlines(keepends=True)
        shown = b"".join(lines[-tail:]) if tail else b""
    else:
        shown = data
    _echo_bytes(shown)
    return len(data)


def _print_from(path: Path, offset: int) -> int:
    if not path.exists():
        return offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    # Print whole lines only; a half-written line waits for the next poll.
    cut = chunk.rfind(b"\n") + 1
    _echo_bytes(chunk[:cut])
    return offset + cut


def _echo_bytes(data: bytes) -> None:
    if data:
        click.echo(data.decode("utf-8", errors="replace"), nl=False)


@runs.command("stop")
@click.argument("run_id", metavar="RUN")
@click.option("--grace", "grace_s", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between SIGTERM and kill.")
@click.pass_context
def stop(ctx: click.Context, run_id: str, grace_s: float) -> None:
    """Stop a running run: SIGTERM, then kill after the grace period."""
    store = _store(ctx)
    record = store.get(run_id)
    if record.backend and record.active:
        from envbuilder.cluster.track import stop_run as stop_cluster_run

        click.echo(f"{record.id}: {stop_cluster_run(store, record.id, grace_s).status}")
        return
    if not record.running:
        click.echo(f"{record.id} is not running ({record.status})")
        return
    from envbuilder.run.container import stop_run

    stop_run(store, record.id, grace_s, settings_of(ctx))
    click.echo(f"{record.id}: {store.get(record.id).status}")


@runs.command("plot")
@click.argument("run_id", metavar="RUN")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write (default: metrics.png in the run's folder).")
@click.pass_context
def plot(ctx: click.Context, run_id: str, output: Path | None) -> None:
    """Plot the run's loss, accuracy and learning rate into a PNG."""
    from envbuilder.run.plot import plot_run

    store = _store(ctx)
    record = store.get(run_id)
    _sync_cluster(store, [record.id])
    series = store.metric_series(record.id)
    out = output or Path(record.log_path).parent / "metrics.png"
    title = f"{record.id} · {record.job or ' '.join(record.command)[:60]} ({record.status})"
    axis = store.metric_axis(record.id) if series else "step"
    click.echo(str(plot_run(series, out, title, axis=axis, subject=f"run {record.id}")))


@click.command("schema")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout.")
def schema(output: Path | None) -> None:
    """Print the JSON schema of the project config ([tool.envbuilder] or envbuilder.toml)."""
    from envbuilder.project.config import config_json_schema

    text = json.dumps(config_json_schema(), indent=2)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(str(output), err=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def _json_number(value: float) -> float | str:
    # JSON has no NaN or infinity; say them as strings rather than emit invalid JSON.
    import math

    return value if math.isfinite(value) else str(value)

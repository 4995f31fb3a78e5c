"""`envbuilder runs list|show|logs|stop|plot` and `envbuilder schema`: thin commands over envbuilder.run.store."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from envbuilder.cli.output import console, emit_json, settings_of
from envbuilder.errors import DockerError, EnvbuilderError

_FOLLOW_POLL_S = 0.25
_CLUSTER_POLL_S = 1.0  # each poll of a cluster run asks its scheduler


def _store(ctx: click.Context):
    from envbuilder.run.store import RunStore

    # A damaged database moved aside, a full disk: said once, on stderr, before the answer.
    return RunStore.from_settings(settings_of(ctx), on_notice=lambda m: click.echo(f"envbuilder: warning: {m}", err=True))


def _reconcile(ctx: click.Context, store) -> None:
    """Let the executor fail runs whose container is gone; runs can be listed without it (or Docker)."""
    try:
        from envbuilder.run.container import reconcile_runs
    except ImportError:
        return
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
    """List, show, follow, stop and plot recorded runs."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--project", help="Only runs of this project.")
@click.option("--status", type=click.Choice(["queued", "running", "completed", "failed", "stopped"]),
              help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool, project: str | None, status: str | None, limit: int) -> None:
    """Recorded runs, newest first."""
    store = _store(ctx)
    _reconcile(ctx, store)
    _sync_cluster(store)
    records = store.list_runs(limit=limit, project=project, status=status)
    if as_json:
        emit_json([_row(record) for record in records])
        return
    if not records:
        click.echo("no runs recorded")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("ID", "STATUS", "JOB", "EXIT", "STARTED", "DURATION", "COMMAND"):
        table.add_column(column, no_wrap=column != "COMMAND")
    for record in records:
        table.add_row(record.id, record.status, record.job or "-",
                      "-" if record.exit_code is None else str(record.exit_code),
                      record.started_at.astimezone().strftime("%Y-%m-%d %H:%M:%S"), _duration(record.duration_s),
                      " ".join(record.command))
    console().print(table)


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the record and its metric series).")
@click.pass_context
def show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run: its record and the last value of each metric."""
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
    fields = [("id", record.id), ("status", record.status), ("project", record.project), ("job", record.job),
              ("image", record.image), ("command", " ".join(record.command)),
              ("started", record.started_at.astimezone().isoformat(timespec="seconds")),
              ("finished", record.finished_at.astimezone().isoformat(timespec="seconds") if record.finished_at else None),
              ("duration", _duration(record.duration_s)), ("exit code", record.exit_code),
              ("container", record.container_id), ("artifacts", record.artifacts_dir), ("log", record.log_path),
              ("args", json.dumps(record.args) if record.args else None), ("error", record.error)]
    for label, value in fields:
        if value is not None:
            click.echo(f"{label:>10}: {value}")
    for notice in record.notices:  # a NaN loss, a metrics channel that could not be read
        click.echo(f"{'notice':>10}: {notice.get('message')} [{notice.get('code')}]")
    axis = store.metric_axis(record.id) if series else "step"
    for name, points in sorted(series.items()):
        step, value = points[-1]
        click.echo(f"{name:>10}: {value:.6g} ({axis} {step}, {len(points)} points)")


@runs.command("logs")
@click.argument("run_id")
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
@click.argument("run_id")
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
    try:
        from envbuilder.run.container import stop_run
    except ImportError as exc:
        raise EnvbuilderError("stop-unavailable", f"cannot stop runs: {exc}",
                              "reinstall envbuilder; `docker stop` on the run's container also works") from None
    stop_run(store, record.id, grace_s, settings_of(ctx))
    click.echo(f"{record.id}: {store.get(record.id).status}")


@runs.command("plot")
@click.argument("run_id")
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
    return value if value == value and value not in (float("inf"), float("-inf")) else str(value)

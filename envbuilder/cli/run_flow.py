"""What `envbuilder run` does once its arguments are parsed, and how it shows it: click-free.

The click command (envbuilder.cli.run_cmd) and the plain `run --image` path that parses its own arguments
(envbuilder.cli.runargs) both call run_command; `pipeline` and `shell` share run_in_project and the
presentation. The job's own output goes to stdout as it happens (stderr with --json, so stdout carries only the
result); build progress and our notes go to stderr. The exit code is the job's (_exit_with raises JobEnded,
which envbuilder.cli.failures turns into it). Must not import click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from envbuilder.cli.output import echo, emit_json, style
from envbuilder.errors import UsageError


def run_command(*, settings, verbose: bool, path: str, job: str | None, args: tuple[str, ...],
                command: tuple[str, ...], image: str | None, ref: str | None, resume: str | None,
                stop_on_nan: bool, mode: str, target: Callable, network: Callable, as_json: bool,
                container: Mapping[str, Any]) -> None:
    """`envbuilder run`: JOB (with args) or the bare command, in `image` or the project's image; the result shown.
    container: the container flags (run_options' keywords); target, network: the deferred option values."""
    from envbuilder.run.launch import RunRequest

    # Mounts, variables and limits are checked before anything is built.
    options = run_options(args=tuple(args), resume_from=resume, stop_on_nan=stop_on_nan, mode=mode,
                          docker_cli=settings.docker_binary, **container)
    done = run_in_project(settings, verbose, path, RunRequest(job=job, command=command), ref=ref, image=image,
                          target=target, network=network, options=options, as_json=as_json)
    result = done.result
    if as_json:
        emit_json(done.to_json())
    elif result.status == "running":
        echo(result.run_id)  # on stdout alone, for `ID=$(envbuilder run -d ...)`
        echo(f"follow it: envbuilder runs logs -f {result.run_id}; stop it: envbuilder runs stop {result.run_id}",
             err=True)
    else:
        print_result(result)
    if result.status != "running":
        exit_with(result, f"run {result.run_id}")


def run_options(*, mounts, artifacts, env, env_files, gpus, publish, cpus, memory, rw, network_mode, trust,
                allow_mounts, **rest) -> Any:
    """RunOptions from the container flags; every value checked before anything is built."""
    from envbuilder.run.flags import (
        load_env_files,
        parse_cpus,
        parse_memory,
        parse_publish_arg,
    )
    from envbuilder.run.spec import RunOptions, parse_env_args, parse_mount_arg
    return RunOptions(mounts=tuple(parse_mount_arg(m) for m in mounts), artifacts_dir=artifacts,
                      env={**load_env_files(env_files), **parse_env_args(env)}, gpus=gpus,
                      network=docker_network(network_mode), read_only_project=not rw,
                      trust=_grants(trust, allow_mounts),
                      publish=tuple(parse_publish_arg(p) for p in publish), cpus=parse_cpus(cpus),
                      memory=parse_memory(memory), **rest)


def _grants(trust: tuple[str, ...], allow_mounts: bool) -> frozenset[str]:
    if not (trust or allow_mounts):
        return frozenset()  # the usual run: the trust module (its checks for remote projects) is not loaded
    from envbuilder.run.trust import parse_trust

    return parse_trust(trust, allow_mounts=allow_mounts)


def check_mode(detach: bool, interactive: bool, tty: bool) -> str:
    if detach and (interactive or tty):
        raise UsageError("usage", "--detach and -i/-t are alternatives: a detached job has no terminal",
                         "pass one of them")
    return "detached" if detach else "interactive" if (interactive or tty) else "attached"


def run_in_project(settings, verbose: bool, source, what, *, ref, image, target, network, options, as_json,
                   on_job=None):
    """The project run, through envbuilder.api.run_project: in --image as it is (pulled when missing), else in
    the project's image, built when missing or stale, with the display `build` shows.

    target and network are the deferred option values: built here, only when there is a plan to make, so that
    `run --image` never loads the resolver's models."""
    output = JobOutput(err=as_json)
    chosen = []
    display = _BuildDisplay(verbose)

    def announce(picked) -> None:
        display.close()  # the job's output comes next, below the build's
        chosen.append(picked.ref)
        if picked.build is not None and (not as_json or verbose):
            built, plan = picked.build.image, picked.build.plan
            state = "cached" if built.cached else f"built in {built.seconds:.1f} s"
            echo(f"{style(built.image, bold=True)} ({state}; torch {plan.torch.local}, Python {plan.python})", err=True)

    def started(record) -> None:
        if options is None or options.mode != "detached":
            echo(style(f"run {record.id} started (log: {record.log_path})", dim=True), err=True)

    common = {"ref": ref, "options": options, "image": image, "settings": settings, "on_image": announce,
              "on_line": output.line, "on_progress": output.progress if output.live else None,
              "on_job": on_job and (lambda name: on_job(name, chosen[-1])), "on_warning": warn,
              "on_start": started, "on_pull": lambda ref: echo(f"envbuilder: pulling {ref} (not here yet)", err=True)}
    from envbuilder.api import run_project

    try:
        if image:
            return run_project(source, what, **common)
        flags, request = target()
        return run_project(source, what, flags=flags, request=request, network=network(),
                           on_build_line=display.line, **common)
    finally:
        display.close()


class _BuildDisplay:
    """`build`'s progress display (cli.build_cmd), opened at the first build line and closed before the job
    runs: a cached image shows nothing, and the job's output never mixes with a live display."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.progress = None
        self.on_line = None

    def line(self, line: str) -> None:
        if self.on_line is None:
            from envbuilder.cli.build_cmd import build_progress

            self.progress = build_progress(self.verbose)
            self.on_line = self.progress.__enter__()
        self.on_line(line)

    def close(self) -> None:
        if self.progress is not None:
            progress, self.progress = self.progress, None
            progress.__exit__(None, None, None)


class JobOutput:
    """A job's output as it comes: each line; a line it redraws with carriage returns (tqdm), live on a
    terminal, rewritten in place (at most 10 times a second), and once, in its last state, when it ends."""

    REDRAW_S = 0.1

    def __init__(self, *, err: bool) -> None:
        self.err = err
        stream = sys.stderr if err else sys.stdout
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = False
        self.drawn_at = 0.0

    def line(self, text: str) -> None:
        if self.drawn:
            echo("\r\x1b[K", nl=False, err=self.err)
            self.drawn = False
        echo(text, err=self.err)

    def progress(self, text: str) -> None:
        import shutil
        import time

        now = time.monotonic()
        if now - self.drawn_at < self.REDRAW_S:
            return
        self.drawn_at, self.drawn = now, True
        width = shutil.get_terminal_size().columns
        echo("\r\x1b[K" + text[: max(width - 1, 20)], nl=False, err=self.err)


def warn(message: str) -> None:
    from envbuilder.redact import redact_text

    echo(redact_text(f"envbuilder: warning: {message}"), err=True)


def docker_network(network_mode: str | None) -> str | None:
    return None if network_mode in (None, "default") else network_mode


def _exit_code(result) -> int:
    if result.status == "completed":
        return 0
    return result.exit_code if result.exit_code not in (None, 0) else 1


def exit_with(result, what: str) -> None:
    """The job's exit code becomes ours, through the one place that maps errors to exit codes (cli.failures)."""
    code = _exit_code(result)
    if code == 0:
        return
    from envbuilder.errors import JobEnded

    hint = getattr(result, "hint", None)
    raise JobEnded(f"run-{result.status}", f"{what} {result.status}: {result.message or f'exit {code}'}",
                   f"{hint}; the log is {result.log_path}" if hint else f"read the log: {result.log_path}",
                   {"run_id": result.run_id}, job_exit_code=code)


def _metrics_text(metrics) -> str:
    return " ".join(f"{name}={value:.4g}" for name, value in metrics.items()) or "no metrics"


_STATUS_COLOURS = {"completed": "green", "failed": "red", "stopped": "yellow"}


def print_result(result) -> None:
    def say(text: str) -> None:
        echo(text, err=True)

    say(f"{style(result.status, fg=_STATUS_COLOURS.get(result.status), bold=True)} run {result.run_id} "
        f"(exit {result.exit_code}) in {result.duration_s:.1f} s: {_metrics_text(result.metrics)}")
    if result.message and result.status != "completed":
        say(f"  {result.message}")
    for notice in getattr(result, "notices", ()):  # a NaN loss, a metrics channel that could not be read
        if notice["code"] != "metrics-source":
            say(f"  {style('note', fg='yellow')}: {notice['message']}")
    if result.artifacts_dir:
        say(f"  artifacts: {result.artifacts_dir}")
    for model in result.verified:
        say(_model_text(model))
    say(f"  log: {result.log_path}")


def _model_text(model) -> str:
    if model.ok:
        diff = f"max abs diff {model.max_abs_diff:.2g}" if model.max_abs_diff is not None else "no reference"
        return f"  {style('✓', fg='green')} ONNX {model.path} verified ({diff}); metadata {model.metadata_path}"
    return f"  {style('✗', fg='red')} ONNX {model.path}: {model.reason}"


def print_pipeline(result, image: str) -> None:
    state = style("completed", fg="green") if result.ok else style("failed", fg="red")
    echo(f"{style('pipeline', bold=True)} {state} in {image}")
    for run in result.runs:
        status = style(f"{run.status:<9}", fg=_STATUS_COLOURS.get(run.status))
        echo(f"  {run.job:<10} {status} {run.run_id}  {run.duration_s:6.1f} s  {_metrics_text(run.metrics)}")
        if run.message and run.status != "completed":
            echo(f"             {run.message}")
        if run.artifacts_dir:
            echo(f"             artifacts: {run.artifacts_dir}")
        for model in run.verified:
            echo(_model_text(model))
    for name in result.skipped:
        echo(f"  {name:<10} skipped")
    for name in result.not_run:
        echo(f"  {name:<10} not run (an earlier job failed)")

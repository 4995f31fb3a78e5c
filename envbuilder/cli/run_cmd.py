"""`envbuilder run` and `envbuilder pipeline`: build the project's image if needed, run jobs in it.

Thin: parse the arguments, call envbuilder.api.run_project, present the
result. The job's own output goes to stdout as it happens (stderr with --json, so stdout carries only the
result); build progress and our notes go to stderr. The exit code is the job's.
A project from a git URL is untrusted: --trust/--allow-mounts grant its jobs what they may not do by default
(envbuilder.run.trust; docs/security.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from envbuilder.cli.netopts import deferred_network_options
from envbuilder.cli.options import deferred_target_options
from envbuilder.cli.output import emit_json, settings_of


class DashDashCommand(click.Command):
    """Keeps what follows the first `--` apart: `run PATH -- CMD ...` runs CMD instead of a job."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            split = args.index("--")
            ctx.meta["envbuilder.after_dashdash"] = list(args[split + 1 :])
            args = args[:split]
        return super().parse_args(ctx, args)


_DashDashCommand = DashDashCommand  # the name submit_cmd imports


def trust_options(f):
    for decorator in reversed((
        click.option("--trust", "trust", multiple=True, metavar="GRANTS",
                     help="Let a project from a git URL do more: mounts, docker-socket, env or all (comma-separated)."),
        click.option("--allow-mounts", is_flag=True,
                     help="Let a project from a git URL mount host paths outside its checkout (--trust mounts)."),
    )):
        f = decorator(f)
    return f


def job_or_command(ctx: click.Context, job_and_args: tuple[str, ...]) -> tuple[str | None, list[str], tuple[str, ...]]:
    """(job name, its extra arguments, or the bare command after `--`) from `JOB [ARGS]... [-- CMD...]`."""
    after = ctx.meta.get("envbuilder.after_dashdash")
    if job_and_args:
        return job_and_args[0], [*job_and_args[1:], *(after or [])], ()
    if after:
        return None, [], tuple(after)
    raise click.UsageError("name a JOB from the project's config, or pass -- CMD ...")


def container_options(f):
    """The container flags `run` and `shell` share. Flags only: a project's config cannot set them."""
    for decorator in reversed((
        click.option("--image", metavar="IMAGE", help="Run in IMAGE as it is (no resolve, no build); pulled when "
                     "it is not here."),
        click.option("--mount", "mounts", multiple=True, metavar="SRC:DST[:ro|rw]",
                     help="Mount a host path (repeatable); read-only unless :rw."),
        click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
                     help="Host folder mounted writable at /artifacts, used as it is. Default: a folder of the "
                          "run's own, ARTIFACTS/<job>/<run-id> in the project (a `latest` link per job)."),
        click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable for the job (repeatable)."),
        click.option("--env-file", "env_files", multiple=True, metavar="FILE",
                     help="Variables from FILE: NAME=VALUE lines, # comments, as docker's --env-file (repeatable; "
                     "--env wins)."),
        click.option("--gpus", metavar="auto|all|none|N", help="GPUs for the container. Default: the job's (auto)."),
        click.option("--publish", "-p", "publish", multiple=True, metavar="[IP:]HOST:CONTAINER[/udp]",
                     help="Publish a container port on the host (repeatable), as docker run -p: on every "
                     "interface unless IP is given."),
        click.option("--cpus", metavar="N", help="Limit the job to N CPUs' worth of time (e.g. 2 or 0.5)."),
        click.option("--memory", metavar="SIZE", help="Limit the job's memory (e.g. 8g); a job killed for "
                     "passing it is recorded so."),
        click.option("--rw", is_flag=True, help="Mount the project read-write (default: read-only)."),
    )):
        f = decorator(f)
    return f


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
    from envbuilder.run.trust import parse_trust

    return RunOptions(mounts=tuple(parse_mount_arg(m) for m in mounts), artifacts_dir=artifacts,
                      env={**load_env_files(env_files), **parse_env_args(env)}, gpus=gpus,
                      network=_docker_network(network_mode), read_only_project=not rw,
                      trust=parse_trust(trust, allow_mounts=allow_mounts),
                      publish=tuple(parse_publish_arg(p) for p in publish), cpus=parse_cpus(cpus),
                      memory=parse_memory(memory), **rest)


@click.command(cls=DashDashCommand, context_settings={"ignore_unknown_options": True})
@click.argument("path", metavar="PATH")
@click.argument("job_and_args", nargs=-1, type=click.UNPROCESSED, metavar="[JOB [ARGS]...] [-- CMD...]")
@deferred_target_options
@deferred_network_options
@container_options
@trust_options
@click.option("--ref", help="Branch, tag or commit when PATH is a git URL.")
@click.option("--resume", metavar="CHECKPOINT|last",
              help="Resume from CHECKPOINT (through the job's resume-arg); `last`: the newest checkpoint of the "
                   "job's newest completed or stopped run.")
@click.option("--stop-on-nan", is_flag=True,
              help="Stop the job (SIGTERM, as Ctrl-C does) at its first NaN or infinite loss.")
@click.option("--detach", "-d", is_flag=True,
              help="Start the job, print its run id and return; `envbuilder runs logs -f ID` follows it.")
@click.option("--interactive", "-i", is_flag=True, help="Run on this terminal (-it): type into the job, as in a shell.")
@click.option("--tty", "-t", is_flag=True, help="Same as -i (a terminal is given when stdin is one).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (the job's output goes to stderr).")
@click.pass_context
def run(ctx: click.Context, path: str, job_and_args: tuple[str, ...], target, network, image, ref, resume,
        stop_on_nan, detach, interactive, tty, as_json, **flags) -> None:
    """Run JOB from PATH's config, or `-- CMD ...`, inside the project's image.

    The image is built first when needed (cached when nothing changed). The project is mounted read-only at
    /workspace/project, the run's own artifacts folder writable at /artifacts; the job runs as you, so what it writes
    is yours. The run id is printed as it starts. Ctrl-C stops the job (SIGTERM, then SIGKILL after 10 s) and
    records the run as stopped. --detach leaves it running, recorded by a watcher process; -it gives it this
    terminal (its output then goes to the terminal only, not to the run's log).
    """
    from envbuilder.run.launch import RunRequest

    if detach and (interactive or tty):
        raise click.UsageError("--detach and -i/-t are alternatives: a detached job has no terminal")
    job_name, args, command = job_or_command(ctx, job_and_args)
    mode = "detached" if detach else "interactive" if (interactive or tty) else "attached"
    # Mounts, variables and limits are checked before anything is built.
    options = run_options(args=tuple(args), resume_from=resume, stop_on_nan=stop_on_nan, mode=mode,
                          docker_cli=settings_of(ctx).docker_binary, **flags)
    done = run_project_cli(ctx, path, RunRequest(job=job_name, command=command), ref=ref, image=image, target=target,
                           network=network, options=options, as_json=as_json)
    result = done.result
    if as_json:
        emit_json(done.to_json())
    elif result.status == "running":
        click.echo(result.run_id)  # on stdout alone, for `ID=$(envbuilder run -d ...)`
        click.echo(f"follow it: envbuilder runs logs -f {result.run_id}; stop it: envbuilder runs stop "
                   f"{result.run_id}", err=True)
    else:
        _print_result(result)
    if result.status != "running":
        _exit_with(result, f"run {result.run_id}")


@click.command()
@click.argument("path", metavar="PATH")
@deferred_target_options
@deferred_network_options
@click.option("--image", metavar="IMAGE", help="Run in IMAGE as it is (no resolve, no build); pulled when it is not here.")
@click.option("--ref", help="Branch, tag or commit when PATH is a git URL.")
@click.option("--skip", "skip", multiple=True, metavar="JOB", help="Leave JOB out (repeatable).")
@click.option("--from-checkpoint", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="Resume the first job that has a resume-arg (training) from FILE.")
@click.option("--gpus", metavar="auto|all|none|N", help="GPUs for every job. Default: each job's (auto).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the jobs' output goes to stderr).")
@trust_options
@click.pass_context
def pipeline(ctx: click.Context, path: str, target, network, network_mode, image, ref, skip, from_checkpoint, gpus,
             as_json, trust, allow_mounts) -> None:
    """Run PATH's pipeline (e.g. train, then export) in one image, stopping at the first failure.

    Exported ONNX models are verified in the same image; a model that fails verification fails its job.
    """
    from envbuilder.run.launch import RunRequest
    from envbuilder.run.spec import RunOptions
    from envbuilder.run.trust import parse_trust

    what = RunRequest(pipeline=True, skip=tuple(skip), from_checkpoint=from_checkpoint)
    options = RunOptions(gpus=gpus, network=_docker_network(network_mode), trust=parse_trust(trust, allow_mounts=allow_mounts))
    done = run_project_cli(ctx, path, what, ref=ref, image=image, target=target, network=network, options=options,
                           as_json=as_json,
                           on_job=lambda name, image_ref: click.secho(f"── {name} in {image_ref}", bold=True, err=True))
    result = done.result
    if as_json:
        emit_json(done.to_json())
    else:
        _print_pipeline(result, done.image.ref)
    if not result.ok:
        _exit_with(result.runs[-1], f"pipeline stopped at job {result.runs[-1].job!r}: run {result.runs[-1].run_id}")


# --- shared steps ---------------------------------------------------------------------------------------


def run_project_cli(ctx, source, what, *, ref, image, target, network, options, as_json, on_job=None):
    """The project run, through envbuilder.api.run_project: in --image as it is (pulled when missing), else in
    the project's image, built when missing or stale, with the display `build` shows.

    target and network are the deferred option values: built here, only when there is a plan to make, so that
    `run --image` never loads the resolver's models."""
    settings = settings_of(ctx)
    verbose = bool(ctx.find_root().obj.get("verbose"))
    output = JobOutput(err=as_json)
    chosen = []
    display = _BuildDisplay(verbose)

    def announce(picked) -> None:
        display.close()  # the job's output comes next, below the build's
        chosen.append(picked.ref)
        if picked.build is not None and (not as_json or verbose):
            built, plan = picked.build.image, picked.build.plan
            state = "cached" if built.cached else f"built in {built.seconds:.1f} s"
            click.echo(f"{click.style(built.image, bold=True)} ({state}; torch {plan.torch.local}, Python {plan.python})",
                       err=True)

    def started(record) -> None:
        if options is None or options.mode != "detached":
            click.secho(f"run {record.id} started (log: {record.log_path})", dim=True, err=True)

    common = {"ref": ref, "options": options, "image": image, "settings": settings, "on_image": announce,
              "on_line": output.line, "on_progress": output.progress if output.live else None,
              "on_job": on_job and (lambda name: on_job(name, chosen[-1])), "on_warning": warn,
              "on_start": started, "on_pull": lambda ref: click.echo(f"envbuilder: pulling {ref} (not here yet)",
                                                                     err=True)}
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
            click.echo("\r\x1b[K", nl=False, err=self.err)
            self.drawn = False
        click.echo(text, err=self.err)

    def progress(self, text: str) -> None:
        import shutil
        import time

        now = time.monotonic()
        if now - self.drawn_at < self.REDRAW_S:
            return
        self.drawn_at, self.drawn = now, True
        width = shutil.get_terminal_size().columns
        click.echo("\r\x1b[K" + text[: max(width - 1, 20)], nl=False, err=self.err)


def warn(message: str) -> None:
    from envbuilder.redact import redact_text

    click.echo(redact_text(f"envbuilder: warning: {message}"), err=True)


def _docker_network(network_mode: str | None) -> str | None:
    return None if network_mode in (None, "default") else network_mode


def _exit_code(result) -> int:
    if result.status == "completed":
        return 0
    return result.exit_code if result.exit_code not in (None, 0) else 1


def _exit_with(result, what: str) -> None:
    """The job's exit code becomes ours, through the one place that maps errors to exit codes (cli.main)."""
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


_COLOURS = {"completed": "green", "failed": "red", "stopped": "yellow"}


def _print_result(result) -> None:
    # click, not rich: a run's fixed cost is mostly imports, and this is all the styling a summary needs
    say = lambda text: click.echo(text, err=True)  # noqa: E731
    say(f"{click.style(result.status, fg=_COLOURS.get(result.status), bold=True)} run {result.run_id} "
        f"(exit {result.exit_code}) in {result.duration_s:.1f} s: {_metrics_text(result.metrics)}")
    if result.message and result.status != "completed":
        say(f"  {result.message}")
    for notice in getattr(result, "notices", ()):  # a NaN loss, a metrics channel that could not be read
        if notice["code"] != "metrics-source":
            say(f"  {click.style('note', fg='yellow')}: {notice['message']}")
    if result.artifacts_dir:
        say(f"  artifacts: {result.artifacts_dir}")
    for model in result.verified:
        say(_model_text(model))
    say(f"  log: {result.log_path}")


def _model_text(model) -> str:
    if model.ok:
        diff = f"max abs diff {model.max_abs_diff:.2g}" if model.max_abs_diff is not None else "no reference"
        return f"  {click.style('✓', fg='green')} ONNX {model.path} verified ({diff}); metadata {model.metadata_path}"
    return f"  {click.style('✗', fg='red')} ONNX {model.path}: {model.reason}"


def _print_pipeline(result, image: str) -> None:
    state = click.style("completed", fg="green") if result.ok else click.style("failed", fg="red")
    click.echo(f"{click.style('pipeline', bold=True)} {state} in {image}")
    for run in result.runs:
        status = click.style(f"{run.status:<9}", fg=_COLOURS.get(run.status))
        click.echo(f"  {run.job:<10} {status} {run.run_id}  {run.duration_s:6.1f} s  {_metrics_text(run.metrics)}")
        if run.message and run.status != "completed":
            click.echo(f"             {run.message}")
        if run.artifacts_dir:
            click.echo(f"             artifacts: {run.artifacts_dir}")
        for model in run.verified:
            click.echo(_model_text(model))
    for name in result.skipped:
        click.echo(f"  {name:<10} skipped")
    for name in result.not_run:
        click.echo(f"  {name:<10} not run (an earlier job failed)")

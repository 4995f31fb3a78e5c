"""`envbuilder run` and `envbuilder pipeline`: build the project's image if needed, run jobs in it.

Thin: parse the arguments, call envbuilder.api.run_project, present the
result. The job's own output goes to stdout as it happens (stderr with --json, so stdout carries only the
result); build progress and our notes go to stderr. The exit code is the job's.
A project from a git URL is untrusted: --trust/--allow-mounts grant its jobs what they may not do by default
(envbuilder.run.trust; docs/security.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from envbuilder.cli.netopts import deferred_network_options
from envbuilder.cli.options import deferred_target_options
from envbuilder.cli.output import echo, emit_json, settings_of, style
from envbuilder.cli.run_flow import (  # noqa: F401 - run_options: shell_cmd's, as the rest of the shared steps
    check_mode,
    docker_network,
    exit_with,
    print_pipeline,
    run_command,
    run_in_project,
    run_options,
)


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
    root = ctx.find_root().obj
    job_name, args, command = job_or_command(ctx, job_and_args)
    run_command(settings=settings_of(ctx), verbose=bool(root.get("verbose")), path=path, job=job_name, args=tuple(args),
                command=command, image=image, ref=ref, resume=resume, stop_on_nan=stop_on_nan,
                mode=check_mode(detach, interactive, tty), target=target, network=network, as_json=as_json,
                container=flags)


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
    options = RunOptions(gpus=gpus, network=docker_network(network_mode), trust=parse_trust(trust, allow_mounts=allow_mounts))
    done = run_project_cli(ctx, path, what, ref=ref, image=image, target=target, network=network, options=options,
                           as_json=as_json,
                           on_job=lambda name, image_ref: echo(style(f"── {name} in {image_ref}", bold=True), err=True))
    result = done.result
    if as_json:
        emit_json(done.to_json())
    else:
        print_pipeline(result, done.image.ref)
    if not result.ok:
        exit_with(result.runs[-1], f"pipeline stopped at job {result.runs[-1].job!r}: run {result.runs[-1].run_id}")


# --- shared steps ---------------------------------------------------------------------------------------


def run_project_cli(ctx, source, what, *, ref, image, target, network, options, as_json, on_job=None):
    """run_flow.run_in_project with the settings and verbosity of the command line's group."""
    return run_in_project(settings_of(ctx), bool(ctx.find_root().obj.get("verbose")), source, what, ref=ref,
                          image=image, target=target, network=network, options=options, as_json=as_json, on_job=on_job)

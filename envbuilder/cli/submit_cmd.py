"""`envbuilder submit`: send a job to a cluster (Slurm, Kubernetes, SkyPilot) and record it as a queued run.

Thin: parse the arguments, call envbuilder.api.submit_project, print the run (or, with --dry-run or when the
engine cannot be reached from here, the job description). The run is then followed with `envbuilder runs`.
"""

from __future__ import annotations

from pathlib import Path

import click

from envbuilder.cli.netopts import deferred_network_options
from envbuilder.cli.options import deferred_target_options
from envbuilder.cli.output import emit_json, settings_of
from envbuilder.cli.run_cmd import _DashDashCommand, job_or_command


@click.command(cls=_DashDashCommand, context_settings={"ignore_unknown_options": True})
@click.argument("path", metavar="PATH")
@click.argument("job_and_args", nargs=-1, type=click.UNPROCESSED, metavar="[JOB [ARGS]...] [-- CMD...]")
@click.option("--to", "engine", type=click.Choice(["slurm", "kubernetes", "skypilot"]),
              help="The cluster engine. Default: the profile's, or the job's [cluster] table's.")
@click.option("--profile", metavar="NAME", help="A cluster profile ([clusters.NAME] in the user config).")
@click.option("--image", metavar="IMAGE", help="Submit IMAGE as it is (no resolve, no build).")
@click.option("--dry-run", is_flag=True, help="Print the job description; submit nothing.")
@click.option("--gpus", type=click.IntRange(min=0), help="GPUs for the job. Default: the job's resources.")
@click.option("--gpu-type", metavar="MODEL", help="GPU model, e.g. H100 (refused when the image has no kernels for it).")
@click.option("--cpus", type=click.IntRange(min=1), help="CPU cores for the job.")
@click.option("--memory", metavar="SIZE", help="Memory for the job, e.g. 32g.")
@click.option("--time", "time_limit", metavar="LIMIT", help="Time limit: seconds, 2h, 90m, 02:00:00.")
@click.option("--partition", help="Slurm partition.")
@click.option("--account", help="Slurm account.")
@click.option("--namespace", help="Kubernetes namespace.")
@click.option("--mount", "mounts", multiple=True, metavar="SRC:DST[:ro|rw]", help="Mount a path (repeatable).")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Folder mounted writable at /artifacts. Default: the job's artifacts folder.")
@click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable for the job (repeatable).")
@click.option("--ref", help="Branch, tag or commit when PATH is a git URL.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@deferred_target_options
@deferred_network_options
@click.pass_context
def submit(ctx: click.Context, path: str, job_and_args: tuple[str, ...], engine, profile, image, dry_run, gpus, gpu_type,
           cpus, memory, time_limit, partition, account, namespace, mounts, artifacts, env, ref, as_json, target,
           network, network_mode) -> None:
    """Submit JOB from PATH's config, or `-- CMD ...`, to a cluster, in the project's image.

    The image is built for the cluster's GPU (the profile's gpu-type, or --gpu-type), not this machine's. The
    run is recorded as queued; `envbuilder runs list|show|logs -f|stop|plot` follow it like a local run.
    """
    from envbuilder.api import submit_project
    from envbuilder.build.progress import is_step_header
    from envbuilder.cluster.spec import ResourceRequest
    from envbuilder.cluster.submit import SubmitRequest
    from envbuilder.errors import UsageError
    from envbuilder.project.jobs import parse_duration_s
    from envbuilder.run.spec import RunOptions, parse_env_args, parse_mount_arg

    job_name, args, command = job_or_command(ctx, job_and_args)
    try:
        time_s = None if time_limit is None else parse_duration_s(time_limit)
    except ValueError as exc:
        raise UsageError("usage", f"--time: {exc}", "e.g. --time 2h") from None
    options = RunOptions(args=tuple(args), mounts=tuple(parse_mount_arg(m) for m in mounts), artifacts_dir=artifacts,
                         env=parse_env_args(env))
    what = SubmitRequest(job=job_name, command=command, engine=engine, profile=profile, image=image, options=options,
                         resources=ResourceRequest(gpus=gpus, gpu_type=gpu_type, cpus=cpus, memory=memory, time_s=time_s),
                         partition=partition, account=account, namespace=namespace, dry_run=dry_run)
    verbose = bool(ctx.find_root().obj.get("verbose"))
    flags, request = target()

    def progress(line: str) -> None:
        if verbose or is_step_header(line):
            click.secho(line, dim=True, err=True)

    done = submit_project(path, what, ref=ref, flags=flags, request=request, network=network(),
                          settings=settings_of(ctx), on_build_line=progress)
    if as_json:
        emit_json(done.to_json())
        return
    for note in done.notes:
        click.echo(f"envbuilder: note: {note}", err=True)
    for notice in done.notices:
        click.echo(f"envbuilder: note: {notice.message}" + (f" (hint: {notice.hint})" if notice.hint else ""), err=True)
    if not done.submitted:
        click.echo(done.description, nl=False)
        return
    click.echo(f"{click.style('queued', fg='cyan', bold=True)} run {done.run_id} on {done.engine} "
               f"({done.profile}), job {done.job_id}", err=True)
    click.echo(f"  {done.description_path}", err=True)
    click.echo(f"  follow: envbuilder runs logs -f {done.run_id}", err=True)
    click.echo(done.run_id)

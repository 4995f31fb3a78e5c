"""`envbuilder shell`: an interactive shell (or `-- CMD ...`) in the project's image, on this terminal.

Thin: the same path as `envbuilder run -it -- CMD` (envbuilder.api.run_project with an interactive RunSpec,
carried out by envbuilder.run.interactive through the docker CLI): the same image, mounts, user, variables
and limits as a job, and the session is recorded as a run (so what it leaves in /artifacts is found again).
The exit code is the shell's.
"""

from __future__ import annotations

import click

from envbuilder.cli.netopts import deferred_network_options
from envbuilder.cli.options import deferred_target_options
from envbuilder.cli.output import settings_of
from envbuilder.cli.run_cmd import (
    DashDashCommand,
    container_options,
    run_options,
    run_project_cli,
    trust_options,
)


@click.command(cls=DashDashCommand)
@click.argument("path", metavar="PATH")
@deferred_target_options
@deferred_network_options
@container_options
@trust_options
@click.option("--ref", help="Branch, tag or commit when PATH is a git URL.")
@click.pass_context
def shell(ctx: click.Context, path: str, target, network, image, ref, **flags) -> None:
    """Open a shell in PATH's image (bash when the image has it, else sh), or run `-- CMD ...` on this terminal.

    The image is built first when needed. As for a job: the project at /workspace/project (read-only unless
    --rw), the artifacts folder at /artifacts, your user id, the job's variables and GPUs.
    """
    from envbuilder.run.interactive import DEFAULT_SHELL
    from envbuilder.run.launch import RunRequest

    command = tuple(ctx.meta.get("envbuilder.after_dashdash") or DEFAULT_SHELL)
    options = run_options(mode="interactive", docker_cli=settings_of(ctx).docker_binary, **flags)
    done = run_project_cli(ctx, path, RunRequest(command=command), ref=ref, image=image, target=target,
                           network=network, options=options, as_json=False)
    ctx.exit(done.result.exit_code or 0)

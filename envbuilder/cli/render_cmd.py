"""`envbuilder render` (plan -> Dockerfile, bash, PowerShell or lock text) and `envbuilder lock` (full resolution
with hashes). Thin: resolve the plan through envbuilder.api, render, write or print."""

from __future__ import annotations

import os
from pathlib import Path

import click

from envbuilder.cli.netopts import network_options
from envbuilder.cli.options import target_options
from envbuilder.cli.output import settings_of

FORMATS = ("dockerfile", "bash", "powershell", "lock")


@click.command()
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@target_options
@network_options
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="dockerfile", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write to FILE (a Dockerfile also gets FILE.dockerignore) instead of stdout.")
@click.option("--venv", metavar="PATH", help="Scripts: where to create the venv. Default runtime/venv.")
@click.option("--netrc", is_flag=True, help="Dockerfile: read index credentials from BuildKit secret 'netrc'.")
@click.option("--no-copy", is_flag=True, help="Dockerfile: leave the project files out (mount them at run time).")
@click.option("--lock", "lock_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="Dockerfile: install exactly this lock (`envbuilder lock --format requirements`), by hash.")
@click.pass_context
def render(ctx: click.Context, source: str, ref: str | None, flags, request, network, fmt: str, output: str | None,
           venv: str | None, netrc: bool, no_copy: bool, lock_file: Path | None) -> None:
    """Render the plan for SOURCE as a Dockerfile, a bash or PowerShell install script, or an (unresolved) lock."""
    from envbuilder.api import plan_project, project_network

    project, plan = plan_project(source, ref=ref, flags=flags, request=request, settings=settings_of(ctx),
                                 network=network, index_required=False)
    network = project_network(project, network)  # the project's [defaults] under the flags
    options = network.render_options(venv=venv, netrc=netrc, copy_project=not no_copy)
    if fmt == "dockerfile":
        from envbuilder.render.dockerfile import render_dockerfile, render_dockerignore

        locked = None
        if lock_file is not None:
            from envbuilder.build.lockfile import load_lock

            locked = load_lock(lock_file, plan)
        text = render_dockerfile(plan, options, locked)
        _emit(text, output)
        if output:
            _write(Path(output + ".dockerignore"), render_dockerignore(plan))  # BuildKit's <Dockerfile>.dockerignore
    elif lock_file is not None:
        from envbuilder.errors import UsageError

        raise UsageError("lock-not-for-scripts", f"--lock applies to Dockerfiles, not --format {fmt}",
                              f"a requirements lock installs directly: pip install --require-hashes -r {lock_file}")
    elif fmt == "bash":
        from envbuilder.render.scripts import render_bash

        _emit(render_bash(plan, options), output, executable=True)
    elif fmt == "powershell":
        from envbuilder.render.scripts import render_powershell

        _emit(render_powershell(plan, options), output)
    else:
        from envbuilder.render.lock import render_lock

        _emit(render_lock(plan, options), output)


@click.command()
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@target_options
@network_options
@click.option("--format", "fmt", type=click.Choice(["toml", "requirements"]), default="toml", show_default=True,
              help="toml: envbuilder-lock v1; requirements: pinned with --hash lines (uv pip sync / pip --require-hashes).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="FILE", help="Write to FILE instead of stdout.")
@click.option("--no-resolve", is_flag=True, help="Record the plan's pins only; do not run the resolver (no network).")
@click.pass_context
def lock(ctx: click.Context, source: str, ref: str | None, flags, request, network, fmt: str, output: str | None,
         no_resolve: bool) -> None:
    """Resolve every package SOURCE needs on the target (uv pip compile, with hashes) and write a lock."""
    from envbuilder.api import plan_project, project_network
    from envbuilder.build.lockfile import resolve_lock
    from envbuilder.render.lock import render_lock

    project, plan = plan_project(source, ref=ref, flags=flags, request=request, settings=settings_of(ctx),
                                 network=network, index_required=False)
    network = project_network(project, network)
    options = network.render_options()
    resolved = None
    if not no_resolve:
        from envbuilder.build.image import credentials_netrc

        with credentials_netrc(network.credentials(), None) as netrc:  # URL credentials reach uv as its NETRC
            resolved = resolve_lock(plan, options, netrc=netrc)
    _emit(render_lock(plan, options, resolved, format=fmt), output)


def _emit(text: str, output: str | None, executable: bool = False) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    path = Path(output)
    _write(path, text)
    if executable and os.name != "nt":
        path.chmod(path.stat().st_mode | 0o111)
    click.echo(f"wrote {path}", err=True)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:  # newline="": keep the script's own line endings
        f.write(text)

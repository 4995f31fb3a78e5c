"""`envbuilder base bootstrap` (a Python base image without a registry) and `envbuilder engine` (check or
start Docker). Thin: the work is in envbuilder.build.base and envbuilder.docker.service."""

from __future__ import annotations

import click

from envbuilder.cli.output import console, emit_json, settings_of


@click.group()
def base() -> None:
    """Make base images without a registry (air-gapped hosts)."""


@base.command("bootstrap")
@click.option("--suite", default="bookworm", show_default=True, help="Debian release (bookworm: Python 3.11).")
@click.option("--name", metavar="IMAGE", help="Image name. Default envbuilder/base-python:<python>-<suite>.")
@click.option("--mirror", metavar="URL", help="Debian mirror. Default: debootstrap's (deb.debian.org).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def bootstrap(ctx: click.Context, suite: str, name: str | None, mirror: str | None, as_json: bool) -> None:
    """Build a Python base image from Debian packages (debootstrap + docker import); needs root.

    Idempotent: an existing image of that name made by this command is reused. Use it with
    `envbuilder build --base-image IMAGE`.
    """
    from envbuilder.build.base import bootstrap_base
    from envbuilder.docker.engine import Docker

    settings = settings_of(ctx)
    verbose = bool(ctx.find_root().obj.get("verbose"))
    err = console(stderr=True)

    def on_line(line: str) -> None:
        if verbose or line.startswith(("$ ", "I: Retrieving Release", "packing", "importing")):
            err.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)

    image = bootstrap_base(Docker(settings.docker_binary), suite=suite, name=name, mirror=mirror, on_line=on_line)
    if as_json:
        emit_json(image.to_json())
        return
    state = "created" if image.created else "already present"
    console().print(f"[bold]{image.name}[/]  Python {image.python}  ({state})")


@click.command()
@click.option("--start", is_flag=True, help="Start the engine when it does not answer (installs docker.io as root).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def engine(ctx: click.Context, start: bool, as_json: bool) -> None:
    """Check that a Docker engine answers and which client runs BuildKit builds; --start starts one."""
    from envbuilder.docker.service import check_engine

    settings = settings_of(ctx)
    status = check_engine(settings.docker_binary, start=start, on_line=console(stderr=True).print)
    if as_json:
        emit_json(status.to_json())
    elif status.running:
        out = console()
        started = " (started now)" if status.started else ""
        out.print(f"engine [green]running[/]: Docker {status.server_version}{started}")
        out.print(f"builds use: {status.build_cli or '[red]no BuildKit-capable client[/] (' + status.message + ')'}")
    if not status.running:
        raise status.not_running_error()

"""`envbuilder image inspect IMAGE`: what an image's labels say it holds, and whether it fits this host.

Thin: envbuilder.api.inspect_image reads the labels (build/labels.py) and applies the resolver's hardware rule
to the detected host, or to the target the flags declare (a cloud GPU you are about to ship to).
"""

from __future__ import annotations

import click

from envbuilder.cli.options import target_options
from envbuilder.cli.output import console, emit_json, settings_of
from envbuilder.errors import EXIT_ERROR


@click.group()
def image() -> None:
    """Inspect images envbuilder built."""


@image.command("inspect")
@click.argument("ref", metavar="IMAGE")
@target_options
@click.option("--pull", is_flag=True, help="Pull the image first when it is not here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def inspect(ctx: click.Context, ref: str, flags, request, pull: bool, as_json: bool) -> None:
    """Show IMAGE's plan, target and provenance labels, and whether it runs on this host's GPU and driver.

    The target flags (--gpu, --cuda-driver, --compute-capability...) check it against another machine instead.
    Exits 1 when the image does not fit.
    """
    from envbuilder.api import inspect_image

    found = inspect_image(ref, settings=settings_of(ctx), flags=flags, pull=pull)
    if as_json:
        emit_json(found.to_json())
    else:
        out = console()
        out.print(f"[bold]{found.ref}[/]  {found.image_id[:19]}")
        for key, value in found.labels.items():
            out.print(f"  {key.rsplit('.', 1)[-1] if key.startswith('org.envbuilder.') else key}: {value}",
                      markup=False, soft_wrap=True)
        verdict = {True: "[green]fits this host[/]", False: "[red]does not fit[/]", None: "[yellow]unknown[/]"}
        out.print(f"{verdict[found.fits]}: {found.why}", soft_wrap=True)
        for warning in found.warnings:
            out.print(f"  warning: {warning}", markup=False, soft_wrap=True)
    if found.fits is False:
        ctx.exit(EXIT_ERROR)

"""`envbuilder resolve`: the plan for a project on this machine or a declared target, with reasons."""

from __future__ import annotations

import click

from envbuilder.cli.netopts import network_options
from envbuilder.cli.options import target_options
from envbuilder.cli.output import console, emit_json, settings_of


@click.command()
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@target_options
@network_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
@click.pass_context
def resolve(ctx: click.Context, source: str, ref: str | None, flags, request, network, as_json: bool) -> None:
    """Pick Python, the torch build and its companions for SOURCE, and explain why.

    Target flags replace detection, so a GPU-less machine can resolve for a cloud GPU, e.g.
    `envbuilder resolve . --gpu nvidia --cuda-driver 570.86 --compute-capability 9.0`.
    The project's other dependencies are checked with uv against --index-url/--extra-index-url/--find-links
    (PyPI by default) and the project's own indexes, so the plan's Python is one on which they all install;
    --offline skips the check. The network flags are those of `build`, so one command line serves both.
    """
    from envbuilder.api import plan_project

    # A conflict's JSON (status "conflict", its reasons) is printed by cli.main, like every command's errors.
    _, plan = plan_project(source, ref=ref, flags=flags, request=request, settings=settings_of(ctx),
                           network=network, index_required=False)
    if as_json:
        emit_json(plan.to_json())
        return
    _print_plan(plan)


def _print_plan(plan) -> None:
    from rich.markup import escape
    from rich.table import Table

    out = console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    colour = {"ok": "green", "minor-version-compat": "yellow", "potential-incompatibility": "yellow", "cpu-fallback": "red"}[plan.status]
    table.add_row("status", f"[{colour}]{plan.status}[/]")
    table.add_row("python", plan.python)
    table.add_row("torch", f"{plan.torch.local}  ({plan.torch.flavor})")
    for name, choice in plan.companions.items():
        table.add_row(name, choice.version)
    table.add_row("index", plan.torch.index_url)
    if plan.dependencies:
        table.add_row("dependencies", escape(", ".join(plan.dependencies)))
    out.print(table)
    out.print("\n[bold]why[/]")
    for reason in plan.reasons:
        out.print(f"  - {escape(reason)}", soft_wrap=True)
    if plan.warnings:
        out.print("\n[bold yellow]warnings[/]")
        for warning in plan.warnings:
            out.print(f"  ! {escape(warning.message)}", soft_wrap=True)

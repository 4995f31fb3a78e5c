"""`envbuilder compat show|update`: thin commands over envbuilder.index.matrix_update."""

from __future__ import annotations

import click

from envbuilder.cli.output import console, emit_json, settings_of


@click.group("compat")
def compat() -> None:
    """Show or update the compatibility matrix (torch builds, CUDA driver floors, ROCm, onnxruntime)."""


@compat.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--torch", "torch_version", metavar="VERSION", help="Show one release with its builds in full.")
@click.pass_context
def show(ctx: click.Context, as_json: bool, torch_version: str | None) -> None:
    """Show torch releases (newest first) with their flavours per platform, and CUDA driver floors."""
    from envbuilder.index.matrix_update import PLATFORMS, installed_matrix, python_range, show_matrix

    summary = show_matrix(installed_matrix(settings_of(ctx)), torch=torch_version)
    if as_json:
        emit_json(summary)
        return

    from rich.table import Table

    out = console()
    releases = Table(title=f"torch releases (matrix updated {summary['updated']})")
    releases.add_column("torch", no_wrap=True)
    releases.add_column("released", no_wrap=True)
    releases.add_column("python", no_wrap=True)
    releases.add_column("vision / audio", no_wrap=True)
    releases.add_column("flavours per platform")
    labels = dict(PLATFORMS)
    for row in summary["releases"]:
        flavours = "\n".join(f"{labels[key]}: {' '.join(row['platforms'][key])}" for key in row["platforms"])
        companions = f"{' '.join(row['torchvision']) or '-'} / {' '.join(row['torchaudio']) or '-'}"
        releases.add_row(row["version"], row["released"], row["python_range"], companions, flavours)
    out.print(releases)

    if torch_version is not None:
        builds = Table(title=f"torch {torch_version} builds")
        for column in ("os/arch", "flavour", "python", "sm (SASS)", "ptx", "gfx"):
            builds.add_column(column)
        for b in summary["releases"][0]["builds"]:
            builds.add_row(
                f"{b['os']}/{b['arch']}", b["flavor"], python_range(b["python"]), " ".join(b["sm"]) or "-",
                b["ptx"] or "-", " ".join(b["gfx"]) or "-",
            )
        out.print(builds)

    drivers = Table(title="CUDA minimum drivers (strict compatibility)")
    for column in ("CUDA", "Linux", "Windows"):
        drivers.add_column(column)
    for row in summary["cuda"]:
        drivers.add_row(row["version"], f">= {row['min_driver_linux']}", f">= {row['min_driver_windows'] or '-'}")
    for row in summary["cuda_minor_compat"]:
        drivers.add_row(f"{row['major']}.x (minor compat)", f">= {row['min_driver_linux']}",
                        f">= {row['min_driver_windows'] or '-'}")
    out.print(drivers)


@compat.command("update")
@click.option("--from", "source", required=True, metavar="URL_OR_FILE", help="An https URL or a file with a matrix.")
@click.option("--force", is_flag=True, help="Install even if it is older than the installed matrix.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def update(ctx: click.Context, source: str, force: bool, as_json: bool) -> None:
    """Validate a compatibility matrix and install it for this user (the old one is kept if it is invalid)."""
    from envbuilder.index.matrix_update import update_matrix

    settings = settings_of(ctx)
    matrix = update_matrix(source, settings, force=force)
    result = {
        "installed": str(settings.matrix_override),
        "updated": matrix.updated,
        "releases": len(matrix.torch),
        "newest": matrix.releases_newest_first[0].version if matrix.torch else None,
    }
    if as_json:
        emit_json(result)
    else:
        console().print(
            f"Installed matrix updated {result['updated']} ({result['releases']} torch releases, newest "
            f"{result['newest']}) at {result['installed']}"
        )

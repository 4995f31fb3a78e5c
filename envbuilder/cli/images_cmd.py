"""`envbuilder images` (a checkout's images with their plan and size) and `envbuilder prune` (remove superseded ones).

Thin: envbuilder.api.list_project_images and prune_project_images do the work (envbuilder.build.images).
"""

from __future__ import annotations

import click

from envbuilder.cli.output import emit_json, settings_of
from envbuilder.errors import UsageError


@click.command()
@click.argument("source", required=False, metavar="[PATH_OR_GIT_URL]")
@click.option("--all", "every", is_flag=True, help="Every image envbuilder built, of every project and checkout.")
@click.option("--json", "as_json", is_flag=True, help="Print the images as a JSON list.")
@click.pass_context
def images(ctx: click.Context, source: str | None, every: bool, as_json: bool) -> None:
    """List the images built from a project's checkout (default: the current folder), newest first.

    Each checkout of a project has its own repository, envbuilder/<project>-<checkout digest>, tagged with the
    build key and :latest (its newest build). Sizes are as Docker reports them: layers shared between images
    (the torch stage, usually) count in each.
    """
    from envbuilder.api import list_project_images

    found = list_project_images(_source(source, every), settings=settings_of(ctx))
    if as_json:
        emit_json([entry.to_json() for entry in found])
        return
    if not found:
        click.echo("no images" + ("" if every else " for this checkout: `envbuilder build` makes one"))
        return
    from envbuilder.quantities import human_size

    rows = [("IMAGE", "TORCH", "FLAVOR", "PYTHON", "PLAN", "CREATED", "SIZE")]
    for entry in found:
        name = entry.tags[0] if entry.tags else entry.image_id[:19]
        rows.append((name + (" (latest)" if entry.latest else ""), entry.torch or "-", entry.flavor or "-",
                     entry.python or "-", entry.plan_hash or "-", entry.created.strftime("%Y-%m-%d %H:%M"),
                     human_size(entry.size)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@click.command()
@click.argument("source", required=False, metavar="[PATH_OR_GIT_URL]")
@click.option("--all", "every", is_flag=True, help="Prune the images of every project and checkout.")
@click.option("--keep", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
              help="How many of each checkout's newest images to keep.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def prune(ctx: click.Context, source: str | None, every: bool, keep: int, dry_run: bool, as_json: bool) -> None:
    """Remove a checkout's superseded images (default: the current folder's), keeping its newest N.

    An image that a recorded running (or queued) job uses is never removed, nor one any container was made
    from (Docker refuses; nothing is forced). Only envbuilder's tags are removed: an image you also tagged
    with --tag NAME stays under that name.
    """
    from envbuilder.api import prune_project_images

    done = prune_project_images(_source(source, every), keep=keep, dry_run=dry_run, settings=settings_of(ctx))
    if as_json:
        emit_json(done.to_json())
        return
    from envbuilder.quantities import human_size

    verb = "would remove" if dry_run else "removed"
    for entry in done.removed:
        click.echo(f"{verb} {' '.join(entry.tags) or entry.image_id} ({entry.torch or '?'}, plan {entry.plan_hash or '?'})")
    for entry in done.in_use:
        click.echo(f"kept {entry.tags[0] if entry.tags else entry.image_id}: a running job uses it")
    for entry, why in done.failed:
        click.echo(f"kept {entry.tags[0] if entry.tags else entry.image_id}: {why}")
    freed = sum(e.size for e in done.removed)
    click.echo(f"{verb} {len(done.removed)} image(s), kept {len(done.kept) + len(done.in_use) + len(done.failed)}"
               + (f"; up to {human_size(freed)} (layers other images share stay)" if done.removed else ""))


def _source(source: str | None, every: bool) -> str | None:
    if every and source is not None:
        raise UsageError("usage", "pass a project or --all, not both",
                         "drop --all to act on that project's images only")
    return None if every else (source or ".")

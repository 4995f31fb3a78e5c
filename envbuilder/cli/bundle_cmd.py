"""`envbuilder bundle` (one tar with the image, its base, the lock, the wheelhouse and a manifest, for an air-gapped
machine) and `envbuilder load` (verify every checksum, then load it there).

Thin: envbuilder.api.bundle_project and envbuilder.build.bundle.load_bundle do the work. Progress goes to
stderr; stdout carries only the result (text, or JSON with --json).
"""

from __future__ import annotations

from pathlib import Path

import click

from envbuilder.cli.netopts import network_options
from envbuilder.cli.options import image_input_options, target_options
from envbuilder.cli.output import emit_json, settings_of
from envbuilder.quantities import human_size


@click.command()
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.tar",
              help="The bundle to write (replaced only when the new one is complete).")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@target_options
@network_options
@image_input_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def bundle(ctx: click.Context, source: str, output: Path, ref: str | None, flags, request, network,
           dockerfile: Path | None, netrc: Path | None, lock_file: Path | None, as_json: bool) -> None:
    """Write SOURCE's image, as `build` makes it, into one file for a machine with no network.

    The file holds the image and its base image (when local), a hashed lock of every package the image
    installed, those wheels for the image's Python and platform, and a manifest with the sha256 of each part
    and the plan. Copy it over, then run `envbuilder load FILE.tar` there. The same target, network and
    --lock flags as `build` select the same image (built first when missing).
    """
    from envbuilder.api import bundle_project
    from envbuilder.cli.build_cmd import build_progress

    verbose = bool(ctx.find_root().obj.get("verbose"))
    with build_progress(verbose) as on_line:
        done = bundle_project(source, output=output, ref=ref, flags=flags, request=request, network=network,
                              settings=settings_of(ctx), dockerfile=dockerfile, netrc=netrc, lock=lock_file,
                              on_line=on_line, on_step=_note)
    if as_json:
        emit_json(done.to_json())
        return
    written = done.bundle
    click.echo(f"wrote {written.path} ({human_size(written.size)}): {', '.join(i['ref'] for i in written.images)}, "
               f"{written.wheels} wheels, lock and manifest")
    click.echo(f"manifest digest sha256:{written.manifest_sha256}")
    click.echo(f"at the site: envbuilder load {written.path.name} --expect sha256:{written.manifest_sha256}")


@click.command()
@click.argument("bundle_file", metavar="FILE.tar", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where the lock, wheelhouse and manifest go (a new or empty folder). Default: FILE-bundle beside FILE.")
@click.option("--expect", metavar="sha256:HEX",
              help="The manifest digest `bundle` printed: refuse a bundle whose manifest is not this one.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def load(ctx: click.Context, bundle_file: Path, into: Path | None, expect: str | None, as_json: bool) -> None:
    """Verify every checksum of a bundle, then load its images and unpack its lock and wheelhouse.

    A bundle with any part changed, missing or added is refused whole: nothing is loaded. Afterwards,
    `envbuilder run PATH` (with the flags the bundle was built with) finds the image without a network.
    """
    from envbuilder.build.bundle import load_bundle
    from envbuilder.docker.engine import Docker

    settings = settings_of(ctx)
    done = load_bundle(bundle_file, docker=Docker(settings.docker_binary), into=into, expect=expect, on_step=_note)
    if as_json:
        emit_json(done.to_json())
        return
    click.echo(f"loaded {', '.join(i['ref'] for i in done.manifest['images'])} (every checksum verified)")
    click.echo(f"lock, wheelhouse and manifest in {done.into}")


def _note(text: str) -> None:
    click.echo(f"# envbuilder: {text}", err=True)

"""`envbuilder index serve`: wheels on disk as a PyTorch-index stand-in on 127.0.0.1."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from envbuilder.errors import EnvbuilderError, UsageError


@click.group()
def index() -> None:
    """Local package indexes for air-gapped and proxied sites."""


@index.command()
@click.argument("wheels", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="An existing PEP 503 tree (a folder holding simple/).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0: any free port.")
def serve(wheels: tuple[Path, ...], root: Path | None, port: int) -> None:
    """Serve WHEELS (files or folders) on 127.0.0.1 until Ctrl-C; prints the index URL.

    Use the URL as --torch-index-url (builds need --network host to reach loopback):
    the resolver reads it first and picks only the builds it serves.
    """
    from envbuilder.index.server import IndexServer

    if not wheels and root is None:
        raise UsageError("index-empty", "nothing to serve", "name wheel files or folders, or --root DIR")
    server = IndexServer(wheels, root=root, port=port)
    try:
        server.start()
    except OSError as exc:
        raise EnvbuilderError("index-port", f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", "pick another --port") from None
    click.echo(server.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()

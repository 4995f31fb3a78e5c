"""`envbuilder login REGISTRY -u USER --password-stdin`: a thin wrapper over `docker login`.

Thin: envbuilder.api.login_registry does the work (envbuilder.build.registry). The password is read from
standard input only (never an option: a command line is visible to every user in `ps`), and it is handed to
the docker CLI on its standard input; Docker's own config (or credential helper) stores it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from envbuilder.cli.output import settings_of
from envbuilder.errors import UsageError


@click.command()
@click.argument("registry", metavar="REGISTRY")
@click.option("--username", "-u", required=True, metavar="USER", help="The registry user.")
@click.option("--password-stdin", is_flag=True, help="Read the password (or token) from standard input.")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="FILE",
              help="The registry's private CA (PEM): installed where the engine trusts it, "
                   "/etc/docker/certs.d/REGISTRY/ca.crt (needs root).")
@click.pass_context
def login(ctx: click.Context, registry: str, username: str, password_stdin: bool, ca_cert: Path | None) -> None:
    """Log in to REGISTRY (HOST[:PORT]) so that build --push, reuse and run --image can use it.

    The credentials go to Docker's config.json, or to the credential helper it names, exactly as `docker login`
    stores them; envbuilder keeps no copy.
    """
    from envbuilder.api import login_registry

    if not password_stdin:
        raise UsageError("usage", "login reads the password from standard input only",
                         f"pipe it: echo \"$TOKEN\" | envbuilder login {registry} -u {username} --password-stdin")
    password = sys.stdin.read().rstrip("\r\n")
    message = login_registry(registry, username, password, ca_cert=ca_cert, settings=settings_of(ctx))
    click.echo(message.splitlines()[-1] if message else "Login Succeeded")

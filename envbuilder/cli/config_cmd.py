"""`envbuilder config show [PATH]`: the build and network defaults a command on PATH gets, and where each came from.

Thin: the layers below the project (user config, environment, the flags given here) come from
envbuilder.cli.netopts, the merge from envbuilder.api.effective_defaults. The same flags as `build` are accepted,
so `config show . --network host` previews exactly what `build . --network host` would use.
"""

from __future__ import annotations

import click

from envbuilder.cli.netopts import layered_network_options
from envbuilder.cli.output import emit_json, settings_of

# What applies when no layer sets a key: what a build then does.
BUILT_IN = {
    "base-image": "python:X.Y-slim-bookworm (X.Y: the plan's Python)",
    "index-url": "https://pypi.org/simple",
    "torch-index-url": "the flavour's download.pytorch.org index",
    "network": "default (Docker's bridge)",
}


@click.group()
def config() -> None:
    """Show envbuilder's effective configuration."""


@config.command("show")
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@click.option("--no-project", is_flag=True, help="Leave the project's [defaults] out (the machine's layers only).")
@layered_network_options
@click.option("--json", "as_json", is_flag=True, help="Print the values and their origins as one JSON object.")
@click.pass_context
def show(ctx: click.Context, source: str, ref: str | None, no_project: bool, layers, as_json: bool) -> None:
    """Print each build and network default with the layer that set it.

    Layers, lowest first: the project's [tool.envbuilder.defaults], the user config's [defaults]
    (~/.config/envbuilder/config.toml), ENVBUILDER_* variables, then flags. A later layer replaces a value whole.
    """
    from envbuilder.api import effective_defaults
    from envbuilder.defaults import KEYS
    from envbuilder.redact import redact_url

    done = effective_defaults(None if no_project else source, layers, ref=ref, settings=settings_of(ctx))
    if as_json:
        emit_json(_redacted(done.to_json()))
        return
    click.echo(f"project config: {done.project_config or 'none'}")
    if done.user_config:
        click.echo(f"user config:    {done.user_config}")
    else:
        click.echo("user config:    none (looked for " + ", ".join(str(p) for p in done.user_config_paths) + ")")
    click.echo("")
    width = max(len(key.name) for key in KEYS)
    for key in KEYS:
        setting = done.defaults.settings.get(key.name)
        if setting is None or setting.value in (None, ()):
            value = "-" if setting is None else "none"
            origin = setting.origin if setting is not None else "built-in" + (
                f": {BUILT_IN[key.name]}" if key.name in BUILT_IN else "")
            click.echo(f"{key.name:<{width}}  {value}  ({origin})")
            continue
        values = setting.value if isinstance(setting.value, tuple) else (setting.value,)
        text = " ".join(redact_url(str(v)) for v in values)
        click.echo(f"{key.name:<{width}}  {text}  ({_origin(setting)})")


def _origin(setting) -> str:
    if setting.layer == "user":
        return f"user config {setting.origin}"
    if setting.layer == "project":
        return f"project {setting.origin}"
    return setting.origin


def _redacted(payload: dict) -> dict:
    """Proxies and index URLs may carry credentials: never print them, even as JSON."""
    from envbuilder.redact import redact_url

    for item in payload["values"]:
        value = item["value"]
        if isinstance(value, list):
            item["value"] = [redact_url(v) for v in value]
        elif isinstance(value, str):
            item["value"] = redact_url(value)
    return payload

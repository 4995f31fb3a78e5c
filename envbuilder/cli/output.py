"""Presenting results: JSON on stdout for --json, or short human text through rich."""

from __future__ import annotations

import json
from typing import Any

import click


def settings_of(ctx: click.Context):
    return ctx.find_root().obj["settings"]


def emit_json(value: Any) -> None:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)

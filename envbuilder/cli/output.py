"""Presenting results: JSON on stdout for --json, or short human text through rich."""

from __future__ import annotations

import json
import os
import sys
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


def stderr_may_be_terminal() -> bool:
    """False when rich would certainly find stderr is not a terminal, so callers can skip importing it (~30 ms).

    Mirrors rich's Console.is_terminal: TTY_COMPATIBLE and FORCE_COLOR decide when set, else isatty()."""
    if "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ:
        return True
    try:
        return sys.stderr.isatty()
    except ValueError:  # a closed stream
        return False

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
    from envbuilder.redact import redact_text

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    # A project's own files may name an index as https://user:token@host (docs/security.md): never printed.
    click.echo(redact_text(json.dumps(value, indent=2, sort_keys=False, default=str)))


class _Redacted:
    """stdout or stderr as it is at each write (tests and callers swap them), with URL credentials redacted."""

    def __init__(self, stderr: bool) -> None:
        self.stderr = stderr

    @property
    def stream(self):
        return sys.stderr if self.stderr else sys.stdout

    def write(self, text: str) -> int:
        from envbuilder.redact import redact_text

        return self.stream.write(redact_text(text))

    def __getattr__(self, name: str):  # isatty, fileno, flush, encoding: the stream's own
        return getattr(self.stream, name)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(file=_Redacted(stderr), highlight=False)


def stderr_may_be_terminal() -> bool:
    """False when rich would certainly find stderr is not a terminal, so callers can skip importing it (~30 ms).

    Mirrors rich's Console.is_terminal: TTY_COMPATIBLE and FORCE_COLOR decide when set, else isatty()."""
    if "TTY_COMPATIBLE" in os.environ or "FORCE_COLOR" in os.environ:
        return True
    try:
        return sys.stderr.isatty()
    except ValueError:  # a closed stream
        return False

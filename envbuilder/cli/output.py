"""Presenting results: JSON on stdout for --json, or short human text through rich.

Must not import click: `build`'s answer is presented from its memo before click is loaded (envbuilder.cli.memo).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

# What click.echo strips from text bound for a stream that is not a terminal (colours, cursor moves).
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")
_COLOURS = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "cyan": 36}


def echo(text: str = "", *, err: bool = False, nl: bool = True) -> None:
    """A line on stdout (stderr with err), its styles dropped when the stream is not a terminal, as click.echo."""
    stream = sys.stderr if err else sys.stdout
    if not _is_terminal(stream):
        text = _ANSI.sub("", text)
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


def style(text: str, *, fg: str | None = None, bold: bool = False, dim: bool = False) -> str:
    """text in a colour and weight for echo (which drops them off a terminal)."""
    codes = ([_COLOURS[fg]] if fg else []) + ([1] if bold else []) + ([2] if dim else [])
    return "".join(f"\033[{c}m" for c in codes) + text + "\033[0m" if codes else text


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def settings_of(ctx):
    return ctx.find_root().obj["settings"]


def emit_json(value: Any) -> None:
    from envbuilder.redact import redact_text

    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    # A project's own files may name an index as https://user:token@host (docs/security.md): never printed.
    sys.stdout.write(redact_text(json.dumps(value, indent=2, sort_keys=False, default=str)) + "\n")
    sys.stdout.flush()


def present_build(answer: Mapping[str, Any], as_json: bool) -> None:
    """`envbuilder build`'s result (envbuilder.api.ProjectBuild.to_json, less its steps): JSON, or a few lines."""
    if as_json:
        emit_json(dict(answer))
        return
    out = console()
    if answer["reused"]:
        state = f"reused [bold]{answer['reused']}[/] (built elsewhere)"
    else:
        state = "[green]cached[/] (no build needed)" if answer["cached"] else f"built in {answer['seconds']:.1f} s"
    out.print(f"[bold]{answer['image']}[/]  {state}", soft_wrap=True)
    out.print(f"  torch {answer['torch']}, Python {answer['python']}; also tagged {', '.join(answer['tags'][1:])}")
    for pushed in answer["pushed"]:
        out.print(f"  pushed {pushed}", soft_wrap=True)
    if answer["digest"]:
        out.print(f"  digest {answer['digest']}", soft_wrap=True)
    if answer["log"]:
        out.print(f"  log: {answer['log']}", soft_wrap=True)


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

"""The `envbuilder` command line's entry point.

`main` first asks envbuilder.cli.memo whether this is an unchanged `build` it can answer from its memo, before
click, pydantic or the resolver are imported (a no-op build then costs a few stat calls); everything else goes to
the click group in envbuilder.cli.app, which turns every failure into one line and an exit code.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every failure into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    from envbuilder.cli.memo import answer_from_memo

    answered = answer_from_memo(args)
    if answered is not None:
        return answered
    from envbuilder.cli.app import main as run_app

    return run_app(args)


def __getattr__(name: str):
    """`COMMANDS` and `cli` are the click group's (envbuilder.cli.app), loaded when asked for."""
    if name in ("COMMANDS", "cli", "LazyGroup"):
        from envbuilder.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `envbuilder` command line's entry point.

`main` takes two paths that never import click, pydantic or the resolver, because for them the import time is
most of the command's cost: an unchanged `build` answered from its memo (envbuilder.cli.memo), and a plain
`run --image IMAGE -- CMD` (envbuilder.cli.runargs). Everything else goes to the click group in
envbuilder.cli.app. Either way envbuilder.cli.failures turns every failure into one line and an exit code.
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
    from envbuilder.cli.runargs import plain_run, run_plain

    parsed = plain_run(args)
    if parsed is not None:
        code = run_plain(parsed)
        if code is not None:
            return code
    from envbuilder.cli.app import main as run_app

    return run_app(args)


def entry() -> None:
    """The `envbuilder` program (its console script, `python -m envbuilder`): main, then exit with its code."""
    import gc

    # Python's young-generation collection runs every 700 allocations: 26 times (~5 ms) while a run loads its
    # modules, before its container is even created, finding next to nothing. Every 50,000 keeps what a long
    # job's watcher leaves in cycles bounded all the same.
    gc.set_threshold(50_000, *gc.get_threshold()[1:])
    code = main()
    # The interpreter ends next, and its last garbage collection walks every object the command made: ~10 ms
    # after a run, a thirtieth of `run --image`. Frozen objects are not walked. What must reach the disk (logs,
    # the run store's rows) was closed or committed before main returned; stdout and stderr are flushed at exit.
    gc.freeze()
    sys.exit(code)


def __getattr__(name: str):
    """`COMMANDS` and `cli` are the click group's (envbuilder.cli.app), loaded when asked for."""
    if name in ("COMMANDS", "cli", "LazyGroup"):
        from envbuilder.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

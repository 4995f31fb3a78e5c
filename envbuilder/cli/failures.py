"""Every failure of a command as one line and an exit code: the one place errors leave the CLI.

guarded() runs a command (the click group, or a `run --image` parsed without click: envbuilder.cli.runargs) with
SIGTERM and SIGHUP taking Ctrl-C's path, and turns what it raises into a line on stderr (JSON on stdout too with
--json) and the error class's exit code; a traceback only with -v. Must not import click: the plain run path
loads this module and not click.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from envbuilder.errors import EXIT_ERROR, EXIT_INTERRUPTED, EnvbuilderError
from envbuilder.redact import redact_text


def guarded(command: Callable[[], int], args: Sequence[str]) -> int:
    """command()'s exit code, or the one for what it raised, said in one line."""
    own = own_args(args)
    verbose = "-v" in own or "--verbose" in own
    as_json = "--json" in own
    restore = _terminate_like_ctrl_c()
    try:
        return command()
    except EnvbuilderError as exc:
        if verbose:
            import traceback

            traceback.print_exc()
        say(f"envbuilder: {exc}")
        if as_json:
            emit_error_json(exc.to_json())
        return exc.exit_code
    except KeyboardInterrupt:
        say("envbuilder: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last line of defence: no traceback unless -v
        if verbose:
            raise
        say(f"envbuilder: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)")
        return EXIT_ERROR
    finally:
        restore()


def own_args(args: Sequence[str]) -> Sequence[str]:
    """The command line up to `--`: what follows it is the job's command line, not ours."""
    return args[: args.index("--")] if "--" in args else args


def say(line: str) -> None:
    sys.stderr.write(redact_text(line) + "\n")
    sys.stderr.flush()


def emit_error_json(payload: dict) -> None:
    """With --json, every command's failure is also one JSON object on stdout, so a host app never parses text."""
    import json

    sys.stdout.write(redact_text(json.dumps(payload, indent=2, default=str)) + "\n")
    sys.stdout.flush()


def _terminate_like_ctrl_c():
    """SIGTERM and SIGHUP (CI cancelling, `timeout`, systemd, a closed terminal) take Ctrl-C's path, so a
    build or run being stopped cleans up and records why. Returns a function that puts the old handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signal handlers belong to the main thread (an embedding app may call main elsewhere)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            previous[number] = signal.signal(number, interrupt)

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore

"""`envbuilder build` answered from its memo (envbuilder.build.memo): the no-op build without the full path.

answer_from_memo runs before click is imported. It recognises only a plain `envbuilder [--data-dir D]
[--docker P] build ...` command line and answers nothing else: any other command, -v, --help or a memo that
no longer holds falls through to the full CLI, which presents errors and writes the next memo (observe /
remember, called by `build`). What it prints is what `build` printed for the same command, with this
answer's own timing.

Must not import click, pydantic or the resolver (tests/test_layers.py keeps it so).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envbuilder.cli.group_args import group_args

if TYPE_CHECKING:
    from envbuilder.api import ProjectBuild
    from envbuilder.build.memo import Observed
    from envbuilder.settings import Settings


def answer_from_memo(args: Sequence[str]) -> int | None:
    """Print `build`'s answer and return its exit code (0) when its memo holds; else None."""
    command = _build_command(args)
    if command is None:
        return None
    started = time.monotonic()
    try:
        from envbuilder.build.memo import memo_key, recall
        from envbuilder.settings import Settings

        settings = Settings.from_env(*command)
        engine: list[Any] = []

        def image_id(ref: str) -> str | None:
            if not engine:
                from envbuilder.docker.engine import open_engine

                engine.append(open_engine(settings.docker_binary))
            return (engine[0].image_inspect(ref) or {}).get("Id")

        memo = recall(settings, memo_key(args, os.getcwd(), os.environ), image_id)
    except Exception:  # noqa: BLE001 - a shortcut only: whatever went wrong, the full path runs and says it
        return None
    if memo is None:
        return None
    from envbuilder.cli.output import present_build

    present_build({**memo["result"], "seconds": round(time.monotonic() - started, 3)}, memo["as_json"])
    return 0


def _build_command(args: Sequence[str]) -> tuple[str | None, str | None] | None:
    """(--data-dir, --docker) of a plain `build` command line; None for anything else (-v shows the full path)."""
    group = group_args(args)
    if group is None or group.verbose or not group.rest or group.rest[0] != "build":
        return None
    if any(token in ("-h", "--help") for token in group.rest[1:]):
        return None
    return group.data_dir, group.docker


def observe(argv: Sequence[str] | None, source: str, settings: Settings) -> Observed | None:
    """Before `build` reads anything: the signatures its memo will need, or None when no memo applies (a git URL,
    no command line to key it by)."""
    if argv is None or not os.path.isdir(source):
        return None
    from envbuilder.build.memo import observe_before

    return observe_before(argv, os.getcwd(), os.environ, settings, Path(source))


def remember(observed: Observed | None, done: ProjectBuild, answer: dict, *, as_json: bool, settings: Settings,
             detected: bool, read: Sequence[str | None]) -> None:
    """After `build`: write the memo of the answer the same command gives next time: the image, found (`cached`,
    the newest log of its key). Only a build with nothing else said qualifies: no host probe (detection may answer
    differently tomorrow), no registry, no notices. read: more files the build read (a CA bundle, wheel folders)."""
    built = done.image
    if observed is None or detected or built.reused or built.pushed or built.notices:
        return
    from envbuilder.build.memo import remember as write
    from envbuilder.docker.engine import open_engine

    engine = open_engine(settings.docker_binary)
    images = {ref: built.image_id for ref in built.tags}
    for base in built.bases:
        found = engine.image_inspect(base)
        if found is None:
            return
        images[base] = found["Id"]
    project = Path(done.project.source.path)
    write(settings, observed,
          context=((str(project / rel), sig) for rel, sig in built.context_signatures),
          read_after=[str(project / f) for f in done.project.files] + [p for p in read if p and "://" not in p],
          images=images, written=[] if built.cached else [str(settings.logs_dir)],
          answer={"result": {**answer, "cached": True}, "as_json": as_json})

"""The `envbuilder` group's own options (-v, --data-dir, --docker), read without click.

For the two command lines answered before click loads: an unchanged `build` (envbuilder.cli.memo) and a plain
`run --image` (envbuilder.cli.runargs). The options themselves are declared on the click group
(envbuilder.cli.app); anything else before the command (--help, --version) is left to it. Must not import click.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

_VALUE_OPTIONS = ("--data-dir", "--docker")


class GroupArgs(NamedTuple):  # not a dataclass, which costs ~1 ms to define: this is on every command's path
    data_dir: str | None
    docker: str | None
    verbose: bool
    rest: tuple[str, ...]  # the command and its own arguments


def group_args(args: Sequence[str]) -> GroupArgs | None:
    """The group's options and what follows them; None for a line click must read: another group option, a
    missing value, or a data dir the group refuses (it says why, with its hint)."""
    rest, found, verbose = list(args), {"--data-dir": None, "--docker": None}, False
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-v", "--verbose"):
            verbose = True
            continue
        name, eq, value = option.partition("=")
        if name not in _VALUE_OPTIONS:
            return None
        if not eq:
            if not rest:
                return None
            value = rest.pop(0)
        found[name] = value
    data_dir = found["--data-dir"] if found["--data-dir"] is not None else os.environ.get("ENVBUILDER_HOME") or None
    if data_dir is not None and (not data_dir.strip() or (os.path.lexists(os.path.expanduser(data_dir))
                                                          and not os.path.isdir(os.path.expanduser(data_dir)))):
        return None
    return GroupArgs(found["--data-dir"], found["--docker"], verbose, tuple(rest))

"""The project's git commit and whether its tracked files differ from it, recorded with each run.

Owns git_state (one `git status` through envbuilder.proc) and parse_git_status (its text in, values out). git is
optional: a folder that is not in a work tree, a missing git, or a repository git refuses to read (another
user's: "dubious ownership") records no commit. Must not import docker, the store or the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

_TIMEOUT_S = 10.0


def parse_git_status(text: str) -> tuple[str | None, bool | None]:
    """(commit, dirty) from `git status --porcelain=v2 --branch`: the `# branch.oid` header, and whether any
    entry follows (untracked files are not asked for, so an entry is a changed tracked file). A repository with
    no commit yet has none: (None, None)."""
    commit, dirty = None, False
    for line in text.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2].strip()
            commit = None if oid == "(initial)" else oid
        elif line and not line.startswith("#"):
            dirty = True
    return (commit, dirty) if commit else (None, None)


def git_state(folder: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the work tree holding `folder`, dirty counting tracked files under `folder` only
    (a project inside a larger repository is not dirty because of its neighbours); (None, None) without git."""
    if not _may_be_in_work_tree(Path(folder)):
        return None, None
    from envbuilder.proc import run_command  # subprocess: only for a folder git may know

    result = run_command(["git", "-C", str(folder), "status", "--porcelain=v2", "--branch", "--untracked-files=no",
                          "--ignore-submodules=dirty", "--", "."], timeout=_TIMEOUT_S,
                         # status refreshes the index under a lock by default; the user's own git may hold it
                         env={"GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"})
    if not result.ok:
        return None, None
    return parse_git_status(result.stdout)


def _may_be_in_work_tree(folder: Path) -> bool:
    """False when no `.git` is in `folder` or above it and $GIT_DIR is unset: git would only say so, and starting
    it costs a run about 5 ms (more behind version-manager shims on PATH)."""
    if os.environ.get("GIT_DIR"):
        return True
    folder = folder.resolve()
    return any(os.path.lexists(os.path.join(d, ".git")) for d in (folder, *folder.parents))

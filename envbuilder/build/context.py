"""The build context: which project files reach the image, and a digest of them.

The context is the project folder itself (BuildKit sends only what changed since its last transfer).
Its ignore rules are envbuilder's defaults (from the Dockerfile renderer) followed by the project's own
`.dockerignore`, written together as `Dockerfile.dockerignore` next to the rendered Dockerfile, which
BuildKit prefers over the context's `.dockerignore`. Matching follows Docker's rules: patterns are
slash-separated, `*` and `?` stay within one path segment, `**` spans any number, a leading `!` re-includes,
the last matching pattern wins, and a pattern that matches a folder excludes everything below it.

`context_digest` hashes what BuildKit would send (relative path, file type and mode, content) so that a
build key changes exactly when the image's COPY layers could. Must not import docker or the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_IGNORE_FILE = ".dockerignore"
# Used when the renderer offers no defaults: what never belongs in an image.
FALLBACK_IGNORES = (
    ".git", ".hg", ".svn", "**/__pycache__", "**/*.pyc", ".venv", "venv", ".mypy_cache", ".pytest_cache",
    ".ruff_cache", ".tox", ".nox", "**/.ipynb_checkpoints", ".DS_Store", ".envbuilder", "runtime",
)


@dataclass(frozen=True)
class IgnoreRule:
    pattern: str  # cleaned, without the leading "!"
    negate: bool
    regex: re.Pattern[str]


def parse_ignore(text: str) -> list[str]:
    """The patterns of a .dockerignore file: comments and blank lines dropped, whitespace trimmed."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def default_ignores(plan=None) -> tuple[str, ...]:
    """envbuilder's own ignore patterns: the renderer's (render_dockerignore) when it has them."""
    if plan is not None:
        try:
            from envbuilder.render.dockerfile import render_dockerignore
        except ImportError:  # renderer without ignore defaults
            return FALLBACK_IGNORES
        return tuple(parse_ignore(render_dockerignore(plan)))
    return FALLBACK_IGNORES


def project_ignores(project_dir: Path) -> tuple[str, ...]:
    path = Path(project_dir) / PROJECT_IGNORE_FILE
    try:
        return tuple(parse_ignore(path.read_text(encoding="utf-8", errors="replace")))
    except FileNotFoundError:
        return ()


def ignore_patterns(project_dir: Path, defaults: Sequence[str] = FALLBACK_IGNORES) -> tuple[str, ...]:
    """Defaults first, then the project's .dockerignore, so the project can re-include with `!`."""
    return tuple(defaults) + project_ignores(project_dir)


def ignore_file_text(patterns: Iterable[str]) -> str:
    return "# written by envbuilder: its defaults, then the project's .dockerignore\n" + "".join(
        f"{p}\n" for p in patterns
    )


def compile_rules(patterns: Iterable[str]) -> list[IgnoreRule]:
    rules = []
    for raw in patterns:
        negate = raw.startswith("!")
        body = _clean(raw[1:] if negate else raw)
        if not body:
            continue
        rules.append(IgnoreRule(body, negate, re.compile(_pattern_regex(body))))
    return rules


def is_ignored(relpath: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether a slash-separated path relative to the context root is left out of the context."""
    parents = _self_and_parents(relpath)
    ignored = False
    for rule in rules:
        if any(rule.regex.fullmatch(p) for p in parents):
            ignored = not rule.negate
    return ignored


def iter_context(project_dir: Path, patterns: Sequence[str]) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every file, link and folder the context holds, in a stable order."""
    root = Path(project_dir)
    rules = compile_rules(patterns)
    # With no `!` rule nothing under an ignored folder can come back, so the walk skips it (as Docker does).
    can_prune = not any(r.negate for r in rules)

    def walk(folder: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            ignored = is_ignored(rel, rules)
            if stat.S_ISDIR(st.st_mode):
                if ignored and can_prune:
                    continue
                if not ignored:
                    yield rel, st
                yield from walk(Path(entry.path), rel + "/")
            elif not ignored:
                yield rel, st

    yield from walk(root, "")


def context_digest(project_dir: Path, ignore_patterns: Sequence[str], *, cache: Path | None = None) -> str:
    """sha256 (hex) over the included files' relative paths, types, modes and contents.

    With `cache`, file hashes are reused while a file's (size, mtime, inode) is unchanged, as git's index does.
    """
    root = Path(project_dir)
    known = _load_cache(cache)
    fresh: dict[str, list] = {}
    h = hashlib.sha256()
    for rel, st in iter_context(root, ignore_patterns):
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            kind, payload = "d", ""
        elif stat.S_ISLNK(st.st_mode):
            kind, payload = "l", os.readlink(root / rel)
        elif stat.S_ISREG(st.st_mode):
            kind = "f"
            signature = [st.st_size, st.st_mtime_ns, st.st_ino]
            hit = known.get(rel)
            payload = hit[1] if hit and hit[0] == signature else _file_sha256(root / rel)
            fresh[rel] = [signature, payload]
        else:  # sockets, fifos: BuildKit skips them too
            continue
        h.update(f"{kind}\0{rel}\0{mode:o}\0{payload}\n".encode())
    if cache is not None and fresh != known:
        _save_cache(cache, fresh)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_cache(cache: Path | None) -> dict[str, list]:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(cache: Path, entries: dict[str, list]) -> None:
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, separators=(",", ":")))
        os.replace(tmp, cache)
    except OSError:
        pass  # the cache only saves time


def _clean(pattern: str) -> str:
    """Docker cleans patterns like filepath.Clean and drops a leading slash: '/a//b/./' -> 'a/b'."""
    parts: list[str] = []
    for part in pattern.strip().split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts and parts[-1] != "..":
            parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


def _pattern_regex(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):  # "**/" : zero or more whole segments
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("^"):
                    body = "!" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _self_and_parents(relpath: str) -> list[str]:
    parts = relpath.split("/")
    return ["/".join(parts[: k + 1]) for k in range(len(parts))]

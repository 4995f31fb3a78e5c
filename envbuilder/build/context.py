"""The build context: which project files reach the image, and a digest of them.

The context is the project folder itself (BuildKit sends only what changed since its last transfer).
Its ignore rules are envbuilder's defaults (render.dockerfile.DEFAULT_IGNORES, their one owner) followed by
the project's own `.dockerignore`, written together as `Dockerfile.dockerignore` next to the rendered Dockerfile, which
BuildKit prefers over the context's `.dockerignore`. Matching follows Docker's rules: patterns are
slash-separated and anchored at the context root, `*` and `?` stay within one path segment, `**` spans any
number, a leading `!` re-includes, the last matching pattern wins, and a pattern that matches a folder excludes
everything below it. That is gitignore's wildcard language with every pattern anchored, so each cleaned
pattern is compiled by `pathspec` with a leading `/` rather than by code of our own (the regexes are cached
with the digests, so a no-op build does not import it).

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


def parse_ignore(text: str) -> list[str]:
    """The patterns of a .dockerignore file: comments and blank lines dropped, whitespace trimmed."""
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def project_ignores(project_dir: Path) -> tuple[str, ...]:
    path = Path(project_dir) / PROJECT_IGNORE_FILE
    try:
        return tuple(parse_ignore(path.read_text(encoding="utf-8", errors="replace")))
    except FileNotFoundError:
        return ()


def ignore_patterns(project_dir: Path, defaults: Sequence[str]) -> tuple[str, ...]:
    """envbuilder's defaults (render.dockerfile.default_ignores) first, then the project's .dockerignore,
    so the project can re-include with `!`."""
    return tuple(defaults) + project_ignores(project_dir)


def ignore_file_text(patterns: Iterable[str]) -> str:
    return "# written by envbuilder: its defaults, then the project's .dockerignore\n" + "".join(
        f"{p}\n" for p in patterns
    )


@dataclass(frozen=True)
class IgnoreSpec:
    """Compiled ignore patterns, in order: (regex over a relative path, True to exclude / False to re-include)."""

    rules: tuple[tuple[re.Pattern[str], bool], ...]

    @property
    def negates(self) -> bool:
        """Some pattern re-includes with "!", so an ignored folder may still hold context files."""
        return any(not exclude for _, exclude in self.rules)


def ignore_spec(patterns: Iterable[str], *, cache: Path | None = None) -> IgnoreSpec:
    """The patterns, cleaned as Docker cleans them and compiled by pathspec's gitignore wildcards.

    cache: a file keeping the compiled regexes for these patterns, so an unchanged project's no-op build
    need not import pathspec at all."""
    lines = []
    for raw in patterns:
        negate = raw.startswith("!")
        body = _clean(raw[1:] if negate else raw)
        if body:
            body = body.replace("[^", "[!")  # Go's filepath.Match also spells a negated class [^...]
            lines.append(("!" if negate else "") + "/" + body)
    compiled = _load_json(cache).get("\n".join(lines)) if cache is not None else None
    if compiled is None:
        from pathspec.patterns.gitwildmatch import GitWildMatchPattern

        compiled = [list(GitWildMatchPattern.pattern_to_regex(line)) for line in lines]
        compiled = [[regex, exclude] for regex, exclude in compiled if exclude is not None]
        if cache is not None:
            _save_json(cache, {"\n".join(lines): compiled})
    return IgnoreSpec(tuple((re.compile(regex), bool(exclude)) for regex, exclude in compiled))


def is_ignored(relpath: str, rules: IgnoreSpec) -> bool:
    """Whether a slash-separated path relative to the context root is left out of the context: the last
    pattern that matches it decides, and a pattern matching a folder matches everything below it."""
    ignored = False
    for regex, exclude in rules.rules:
        if regex.match(relpath):
            ignored = exclude
    return ignored


def iter_context(project_dir: Path, patterns: Sequence[str], *,
                 rules_cache: Path | None = None) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every file, link and folder the context holds, in a stable order."""
    root = Path(project_dir)
    rules = ignore_spec(patterns, cache=rules_cache)
    # With no `!` rule nothing under an ignored folder can come back, so the walk skips it (as Docker does).
    can_prune = not rules.negates

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
    known = _load_json(cache)
    fresh: dict[str, list] = {}
    h = hashlib.sha256()
    rules_cache = cache.with_name(cache.stem + "-ignore.json") if cache is not None else None
    for rel, st in iter_context(root, ignore_patterns, rules_cache=rules_cache):
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
        _save_json(cache, fresh)
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_json(cache: Path | None) -> dict[str, list]:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_json(cache: Path, entries: dict[str, list]) -> None:
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

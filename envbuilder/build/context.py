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
build key changes exactly when the image's COPY layers could. The same walk (`survey_context`) sizes the
context by top-level entry and names the files that look like secrets, for `context_notices`: a `.env` that a
project's `!` pattern brought back, a 2 GB `data/` about to become an image layer. Must not import docker or the CLI.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuilder.build.memo import stat_signature
from envbuilder.notices import Notice
from envbuilder.quantities import human_size
from envbuilder.render.dockerfile import SECRET_FILES, SECRET_PATHS, SECRET_TEMPLATES

PROJECT_IGNORE_FILE = ".dockerignore"
LARGE_CONTEXT_BYTES = 200 * 1000 * 1000  # BuildKit sends it all on a first build, and COPY makes it a layer
# Names that look like secrets beyond the default ignores (which hold the common ones): warned about, not ignored,
# as a project may mean them (a test fixture's key, a template).
SECRET_LOOKING = (*SECRET_FILES, "secrets.*", ".secrets", "*.secret", "client_secret*.json", "credentials",
                  "credentials.*", "service-account*.json", "*.keystore", "*.jks", "*.ppk", "*.kdbx", ".htpasswd")
_TEMPLATE_SUFFIXES = (".example", ".sample", ".template", ".dist", ".pub")


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
    negations: tuple[str, ...] = ()  # the "!" patterns, cleaned, without the "!"

    @property
    def negates(self) -> bool:
        """Some pattern re-includes with "!", so an ignored folder may still hold context files."""
        return any(not exclude for _, exclude in self.rules)

    def may_reinclude_below(self, folder: str) -> bool:
        """Whether some "!" pattern could match this folder, one above it or a path below it, so that the ignored
        folder must still be walked. Moby's walker asks the same with a prefix test; this follows wildcards,
        segment by segment, and answers yes when unsure (`**`)."""
        parts = folder.split("/")
        return any(_may_match_below(parts, pattern.split("/")) for pattern in self.negations)


def _may_match_below(folder: list[str], pattern: list[str]) -> bool:
    for depth, name in enumerate(folder):
        if depth >= len(pattern) or pattern[depth] == "**":
            return True  # the pattern names a folder at or above this one, or any depth from here
        if not fnmatch.fnmatchcase(name, pattern[depth]):
            return False
    return True


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
        compiled = [list(_gitignore_pattern().pattern_to_regex(line)) for line in lines]
        compiled = [[regex, exclude] for regex, exclude in compiled if exclude is not None]
        if cache is not None:
            _save_json(cache, {"\n".join(lines): compiled})
    negations = tuple(line[2:] for line in lines if line.startswith("!"))
    return IgnoreSpec(tuple((re.compile(regex), bool(exclude)) for regex, exclude in compiled), negations)


def _gitignore_pattern():
    """pathspec's gitignore wildcards: GitIgnoreBasicPattern since pathspec 1.0, which deprecates the older name."""
    try:
        from pathspec.patterns.gitignore.basic import GitIgnoreBasicPattern
    except ImportError:  # pathspec 0.12
        from pathspec.patterns.gitwildmatch import GitWildMatchPattern

        return GitWildMatchPattern
    return GitIgnoreBasicPattern


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
                # Nothing under an ignored folder can come back unless a `!` rule reaches into it: skip it (as
                # Docker does), which keeps a .venv or .git of 100,000 files out of the walk.
                if ignored and not rules.may_reinclude_below(rel):
                    continue
                if not ignored:
                    yield rel, st
                yield from walk(Path(entry.path), rel + "/")
            elif not ignored:
                yield rel, st

    yield from walk(root, "")


@dataclass(frozen=True)
class ContextSurvey:
    """What one walk of the context found: its digest, its size, where the size is, what looks like a secret."""

    digest: str  # context_digest's answer
    size: int  # bytes of the regular files BuildKit would send
    entries: tuple[tuple[str, int], ...]  # (top-level file or folder, bytes under it), biggest first
    secrets: tuple[str, ...]  # relative paths of included files whose names look like secrets
    # (relative path, build.memo.stat_signature) of every entry, as stat'ed before its contents were hashed
    signatures: tuple[tuple[str, tuple[int, ...]], ...] = ()


def context_digest(project_dir: Path, ignore_patterns: Sequence[str], *, cache: Path | None = None) -> str:
    """sha256 (hex) over the included files' relative paths, types, modes and contents (survey_context's digest)."""
    return survey_context(project_dir, ignore_patterns, cache=cache).digest


def survey_context(project_dir: Path, ignore_patterns: Sequence[str], *, cache: Path | None = None) -> ContextSurvey:
    """Walk the context once: its digest (relative paths, types, modes, contents), size per top-level entry, and
    the included files that look like secrets.

    With `cache`, file hashes are reused while a file's (size, mtime, inode) is unchanged, as git's index does.
    """
    root = Path(project_dir)
    known = _load_json(cache)
    fresh: dict[str, list] = {}
    sizes: dict[str, int] = {}
    secrets: list[str] = []
    signatures: list[tuple[str, tuple[int, ...]]] = []
    h = hashlib.sha256()
    rules_cache = cache.with_name(cache.stem + "-ignore.json") if cache is not None else None
    for rel, st in iter_context(root, ignore_patterns, rules_cache=rules_cache):
        mode = stat.S_IMODE(st.st_mode)
        signatures.append((rel, stat_signature(st)))
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
            top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
            sizes[top] = sizes.get(top, 0) + st.st_size
            if looks_secret(rel):
                secrets.append(rel)
        else:  # sockets, fifos: BuildKit skips them too
            continue
        h.update(f"{kind}\0{rel}\0{mode:o}\0{payload}\n".encode())
    if cache is not None and fresh != known:
        _save_json(cache, fresh)
    entries = tuple(sorted(sizes.items(), key=lambda item: (-item[1], item[0])))
    return ContextSurvey(h.hexdigest(), sum(sizes.values()), entries, tuple(secrets), tuple(signatures))


def looks_secret(relpath: str) -> bool:
    """Whether a context path's name looks like a secret: a key, a .env file, a cloud tool's credentials. Templates
    (`.env.example`, `*.sample`) and public keys (`*.pub`) do not."""
    name = relpath.rsplit("/", 1)[-1]
    if name in SECRET_TEMPLATES or name.lower().endswith(_TEMPLATE_SUFFIXES):
        return False
    if any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in SECRET_LOOKING):
        return True
    wrapped = f"/{relpath}/"
    return any(f"/{path}/" in wrapped for path in SECRET_PATHS)


def context_notices(survey: ContextSurvey, *, large: int = LARGE_CONTEXT_BYTES) -> tuple[Notice, ...]:
    """What a build should say about its context: files that look like secrets (`secret-in-context`) and a
    context over `large` bytes (`large-context`), naming its biggest entries."""
    notices = []
    if survey.secrets:
        shown = ", ".join(survey.secrets[:5]) + (f" and {len(survey.secrets) - 5} more" if len(survey.secrets) > 5 else "")
        notices.append(Notice(
            "secret-in-context", f"the build context holds files that look like secrets, which the image would "
            f"keep: {shown}", "add them to the project's .dockerignore (and remove any `!` line that brings them "
            "back); pass secrets at run time (`run --env-file`) instead"))
    if survey.size > large:
        biggest = ", ".join(f"{name} {human_size(size)}" for name, size in survey.entries[:3])
        notices.append(Notice(
            "large-context", f"the build context is {human_size(survey.size)} (over {human_size(large)}), and "
            f"becomes an image layer: {biggest}", "list data, checkpoints and outputs in the project's "
            ".dockerignore, and mount them at run time (a job's `mounts`, or `run --mount SRC:DST`)"))
    return tuple(notices)


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

"""What an unchanged `envbuilder build` answered, and everything that answer depended on (a build memo).

A no-op build reads the project, resolves, renders, hashes the context and asks the engine for the key's image:
about 0.3 s, most of it Python importing the resolver and the readers. When nothing that answer depended on has
changed, the memo gives the same answer from a few stat calls and one engine lookup per image, the way make
trusts a target newer than its prerequisites and git trusts its index's stat data.

A memo is written by the CLI's `build` after a build that found or made its image (no registry involved, no
context notices, the target declared, not probed), with the answer a later identical build would give (the image
found, `cached`), and read back before anything is imported.
It is keyed by the exact command line, the working directory and the environment (less the variables a shell
changes on its own); it holds:
- the stat signatures (mode, size, mtime, ctime, inode, device) of every path the command line or the
  environment names, the user config, the installed matrix, the build logs folder (the answer names the newest
  log), the project folder and its top-level entries, the files the readers read, every entry of the build
  context, and envbuilder's own code;
- the image ID each reference had: the content-addressed tag, the other tags, and the base images;
- the answer itself (the JSON `build --json` printed, less its timing).
It is trusted for MEMO_TTL_S at most: a torch mirror may gain a release, and installability verdicts expire; after
that the full path runs again and writes a new memo. A memo is never written while an input is too fresh for
its timestamp to tell a later edit apart (git's "racily clean" entries), nor read when any signature, image ID
or environment variable differs: a miss costs only the full path. Failing to write one never fails a build.

Stdlib only, and nothing of ours but settings: reading a memo is on the no-op path, whose point is importing
nothing. Must not import the resolver, pydantic, the CLI or docker (the caller passes the image lookup).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envbuilder.settings import PRIVATE_FILE_MODE, Settings

MEMO_FORMAT = 1  # bump when what a memo holds or means changes: older memos are then ignored
MEMO_TTL_S = 600.0
MEMOS_KEPT = 64  # one per distinct command line; the oldest go when a new one is written
# An input modified this recently may be modified again within the same timestamp tick without its signature
# changing, so no memo is written then. Whole-second timestamps (FAT ticks in 2 s, ext3 and HFS+ in 1 s) get the
# wide window; nanosecond ones come from the kernel's coarse clock, which ticks every 1-10 ms (1/HZ).
RACY_WINDOW_S = 2.0
FINE_RACY_WINDOW_S = 0.05
# Variables a shell or terminal changes between two identical commands; every other variable is part of the key.
VOLATILE_ENV = frozenset({
    "_", "OLDPWD", "PWD", "SHLVL", "COLUMNS", "LINES", "HISTCMD", "TERM_SESSION_ID", "WINDOWID", "SECONDS",
    "RANDOM", "LINENO", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "XDG_SESSION_ID", "TMUX_PANE", "PROMPT_COMMAND",
})
_PACKAGE = Path(__file__).resolve().parents[1]

Signature = tuple[int, ...] | None  # None: the path does not exist


def memo_key(argv: Sequence[str], cwd: str, environ: Mapping[str, str]) -> str:
    """The memo's name: a digest of the command line, the working directory and the environment."""
    env = sorted((k, v) for k, v in environ.items() if k not in VOLATILE_ENV)
    text = json.dumps([MEMO_FORMAT, list(argv), cwd, env, os.geteuid() if hasattr(os, "geteuid") else 0])
    return hashlib.sha256(text.encode()).hexdigest()


def signature(path: str | os.PathLike[str], *, follow: bool = True) -> Signature:
    try:
        return stat_signature(os.stat(path, follow_symlinks=follow))
    except (FileNotFoundError, NotADirectoryError):
        return None


def stat_signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def code_signature() -> str:
    """A digest of envbuilder's own files (names, sizes, mtimes): another envbuilder may answer differently."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(_PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".json", ".toml")):
                st = os.stat(os.path.join(root, name))
                h.update(f"{os.path.relpath(os.path.join(root, name), _PACKAGE)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Observed:
    """Signatures taken before the build read anything: what its answer may depend on, as it was then."""

    key: str
    started: float  # time.time() before the first signature
    code: str
    paths: tuple[tuple[str, Signature], ...]


def observe_before(argv: Sequence[str], cwd: str, environ: Mapping[str, str], settings: Settings,
                   project_dir: Path) -> Observed:
    """Signatures of every path the build may read, taken before it reads any (so a change made while it runs
    shows up as a difference, never as part of the answer)."""
    started = time.time()
    data_dir = os.path.realpath(settings.data_dir)
    # The data dir itself changes with every run (the database's journal); what in it matters is named below.
    named = [p for v in _path_values(argv) if os.path.realpath(p := os.path.join(cwd, v)) != data_dir]
    # Files only: a folder a variable names (TMPDIR, HOME) changes all the time and is not read as such.
    named += [v for v in environ.values() if v.startswith("/") and os.pathsep not in v and os.path.isfile(v)]
    named += [str(p) for p in settings.config_paths(environ)]
    named += [str(settings.matrix_override), str(settings.logs_dir), environ.get("NETRC") or os.path.expanduser("~/.netrc")]
    project_dir = Path(project_dir).resolve()
    named.append(str(project_dir))
    try:
        # Not .git: every git command touches it (status writes index.lock), and the answer never reads it (the
        # context leaves it out; the revision label is set only when an image is built).
        named += [entry.path for entry in os.scandir(project_dir) if entry.name != ".git"]
    except OSError:
        pass
    paths = {p: signature(p) for p in named if p}
    return Observed(memo_key(argv, cwd, environ), started, code_signature(), tuple(sorted(paths.items())))


def _path_values(argv: Sequence[str]) -> Iterable[str]:
    for token in argv:
        value = token.split("=", 1)[1] if token.startswith("--") and "=" in token else token
        if value and not value.startswith("-") and "://" not in value and os.path.lexists(value):
            yield value


@dataclass(frozen=True)
class BuildMemo:
    key: str
    expires: float
    code: str
    paths: tuple[tuple[str, Signature], ...]  # followed links (what a reader opens)
    context: tuple[tuple[str, Signature], ...]  # the build context's entries, not followed (as BuildKit sends them)
    images: tuple[tuple[str, str], ...]  # reference -> image ID
    answer: dict

    def to_json(self) -> dict:
        return {"format": MEMO_FORMAT, "key": self.key, "expires": self.expires, "code": self.code,
                "paths": [[p, s] for p, s in self.paths], "context": [[p, s] for p, s in self.context],
                "images": [list(i) for i in self.images], "answer": self.answer}


def remember(settings: Settings, observed: Observed, *, context: Iterable[tuple[str, Signature]],
             read_after: Iterable[str], images: Mapping[str, str], answer: Mapping, written: Iterable[str] = (),
             keep: int = MEMOS_KEPT, now: Callable[[], float] = time.time) -> Path | None:
    """Write the memo of a build that found or made its image; None when an input is too fresh to trust its
    signature (or the memo cannot be written: it is only ever a shortcut).

    context: (absolute path, lstat signature) of every context entry, as the build's own walk saw them before
    hashing; read_after: more files the build read, signed now; images: reference -> the ID it has now;
    written: observed paths the build itself changed (the logs folder, by a build's new log), signed again now;
    keep: how many memos stay (the newest; one per distinct command line, environment or folder)."""
    paths = dict(observed.paths)
    for path in read_after:
        paths.setdefault(path, signature(path))
    context = tuple(context)
    if any(_racy(s[2], observed.started) for _, s in (*paths.items(), *context) if s is not None):
        return None
    paths.update((path, signature(path)) for path in written)  # ours, just now: not an edit racing the build
    memo = BuildMemo(observed.key, now() + MEMO_TTL_S, observed.code, tuple(sorted(paths.items())), context,
                     tuple(sorted(images.items())), dict(answer))
    target = memo_path(settings, observed.key)
    try:
        settings.private_dir(target.parent)
        partial = target.with_name(f".{target.name}.{os.getpid()}")
        with open(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE), "w") as f:
            json.dump(memo.to_json(), f)
        os.replace(partial, target)
    except OSError:
        return None
    _forget_oldest(target.parent, keep)
    return target


def _forget_oldest(folder: Path, keep: int) -> None:
    """Remove all but the newest `keep` memos. Best effort: the memo just written stands whatever happens here
    (another build may be pruning the same folder at the same time)."""
    try:
        memos = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for stale in memos[keep:]:
            stale.unlink(missing_ok=True)
    except OSError:
        pass


def _racy(mtime_ns: int, started: float) -> bool:
    window = RACY_WINDOW_S if mtime_ns % 1_000_000_000 == 0 else FINE_RACY_WINDOW_S
    return mtime_ns / 1e9 >= started - window


def memo_path(settings: Settings, key: str) -> Path:
    return settings.data_dir / "cache" / "build-memo" / f"{key[:32]}.json"


def recall(settings: Settings, key: str, image_id: Callable[[str], str | None], *,
           now: Callable[[], float] = time.time) -> dict | None:
    """The memo's answer when nothing it depended on has changed; else None (run the full build).

    image_id: reference -> the ID the engine has for it now (None: missing)."""
    try:
        with open(memo_path(settings, key), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != MEMO_FORMAT or record.get("key") != key:
        return None
    if now() >= record["expires"] or record["code"] != code_signature():
        return None
    if any(_differs(signature(p), s) for p, s in record["paths"]):
        return None
    if any(_differs(signature(p, follow=False), s) for p, s in record["context"]):
        return None
    if any(image_id(ref) != wanted for ref, wanted in record["images"]):
        return None
    return record["answer"]


def _differs(now: Signature, then: list[int] | None) -> bool:
    return (now is None) != (then is None) or (now is not None and list(now) != then)


__all__ = [
    "MEMO_TTL_S",
    "BuildMemo",
    "Observed",
    "code_signature",
    "memo_key",
    "memo_path",
    "observe_before",
    "recall",
    "remember",
    "signature",
    "stat_signature",
]

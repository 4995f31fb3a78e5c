"""Projects from git URLs: a cache of bare repositories, ref resolution, commit-addressed checkouts, URL/ref safety.

Layout under Settings.git_cache:
    repos/<sha256 of the URL>.git          bare clone, fetched (--prune) on later use
    checkouts/<first 16 hex>/<commit>/     the tree at that commit (`git archive`, no .git inside), never changed

A URL and a ref are user input that ends up on git's command line, so both are checked before anything runs
(`ext::` and `fd::` transports run commands; a leading `-` becomes an option). Git itself runs with
`protocol.allow=never` plus an allowlist, no terminal prompt and a timeout.
A token or password in an http(s) URL never reaches the cache: git is given the URL without it, and the
credentials as an Authorization header scoped to that host, through its environment (GIT_CONFIG_COUNT, not
`-c`, which other users can read in the process list). The cache is keyed by the URL without credentials, so a
new token reuses the clone. Must not import docker, nor pydantic at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from envbuilder.redact import redact_url, split_credentials
from envbuilder.errors import ProjectError
from envbuilder.settings import private_dir

# The values (pydantic) and the readers are imported where a project is fetched or read: `run --image` asks
# looks_like_git_url of a local folder and must not load them (tests/test_execute_docker.py); nor git's process
# helper, hashlib or shutil (about 8 ms of a run's start), which only fetching needs.
if TYPE_CHECKING:
    import tarfile

    from envbuilder.proc import CommandResult
    from envbuilder.project.spec import ProjectSource, ProjectSpec

_SCHEMES = ("https", "http", "ssh", "git", "file")
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._~+-]+)@(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<path>[^/].*|/.*)$")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Git's own allowlist; anything not named (ext, fd, transport helpers) is refused by git as well as by us.
_GIT_CONFIG = ("protocol.allow=never", "protocol.https.allow=always", "protocol.http.allow=always",
               "protocol.ssh.allow=always", "protocol.git.allow=always", "protocol.file.allow=always",
               "protocol.ext.allow=never")
CLONE_TIMEOUT = 900.0
GIT_TIMEOUT = 120.0


def looks_like_git_url(text: str) -> bool:
    """True for URL forms git clones (scheme://, user@host:path); False for plain local paths."""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) or _SCP_LIKE.match(text) or "::" in text)


def check_git_url(url: str) -> str:
    """Return url unchanged if git may be pointed at it; raise ProjectError("unsafe-git-url") otherwise."""

    def refuse(why: str) -> ProjectError:
        return ProjectError("unsafe-git-url", f"refusing git URL {redact(url)!r}: {why}",
                            "use an https://, ssh://, git://, file:// URL, user@host:path, or a local path",
                            context={"url": redact(url)})

    if not url or url.startswith("-"):
        raise refuse("it is empty or starts with '-' (git would read it as an option)")
    if _CONTROL.search(url):
        raise refuse("it contains whitespace or control characters")
    if "::" in url.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        raise refuse("transport helpers (`ext::`, `fd::`, `<helper>::`) can run commands")
    scheme_match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme_match:
        scheme = scheme_match.group(1).lower()
        if scheme not in _SCHEMES:
            raise refuse(f"unknown transport {scheme!r}")
        parts = urlsplit(url)
        if scheme != "file" and not parts.hostname:
            raise refuse("it names no host")
        if (parts.hostname or "").startswith("-") or (parts.username or "").startswith("-"):
            raise refuse("its host or user starts with '-' (ssh would read it as an option)")
        return url
    scp = _SCP_LIKE.match(url)
    if scp:
        if scp.group("user").startswith("-") or scp.group("host").startswith("-"):
            raise refuse("its host or user starts with '-' (ssh would read it as an option)")
        return url
    if ":" in url.split("/", 1)[0] and not re.match(r"^[A-Za-z]:[\\/]", url):
        raise refuse("it is neither a URL git supports nor a local path")
    return url


def check_git_ref(ref: str) -> str:
    """Return ref if it is a safe branch, tag or commit name (git check-ref-format rules); else ProjectError."""

    def refuse(why: str) -> ProjectError:
        return ProjectError("unsafe-git-ref", f"refusing git ref {ref!r}: {why}",
                            "pass a branch, a tag or a full commit hash", context={"ref": ref})

    if _FULL_COMMIT.match(ref):
        return ref
    if not ref or ref.startswith("-"):
        raise refuse("it is empty or starts with '-'")
    if _CONTROL.search(ref) or re.search(r"[~^:?*\[\\]", ref):
        raise refuse("it contains a space, a control character or one of ~ ^ : ? * [ \\")
    if ".." in ref or "@{" in ref or ref == "@" or "//" in ref:
        raise refuse("it contains '..', '@{' or '//', or is '@'")
    if ref.startswith("/") or ref.endswith(("/", ".", ".lock")):
        raise refuse("it starts with '/' or ends with '/', '.' or '.lock'")
    if any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        raise refuse("a component starts with '.' or ends with '.lock'")
    return ref


def redact(url: str) -> str:
    """The URL with any password or token replaced, for messages and records."""
    return redact_url(url)


def repo_dir(url: str, settings) -> Path:
    """Where the bare clone of `url` lives in the cache (the same for any credentials in the URL)."""
    return settings.git_cache / "repos" / f"{_url_key(url)}.git"


def fetch_project(url: str, ref: str | None, settings, *, update: bool = True) -> ProjectSource:
    """Clone or fetch url into the cache, resolve ref (None: the default branch) and export that commit's tree.

    The checkout folder is keyed by commit, so a second call for the same commit reuses it untouched.
    With update=False an existing clone is used as it is (offline); a full commit hash already present
    never needs a fetch.
    """
    remote = _Remote.of(_canonical(check_git_url(url)))
    url = remote.url
    if ref is not None:
        check_git_ref(ref)
    git_dir = repo_dir(url, settings)
    have_commit = ref is not None and _FULL_COMMIT.match(ref) and git_dir.exists() and _resolve(git_dir, ref)
    git_dir = _ensure_repo(remote, settings, update=update and not have_commit)
    commit = _resolve(git_dir, ref or "HEAD")
    if commit is None and ref is not None and re.match(r"^[0-9a-f]{7,64}$", ref):
        # A commit no branch or tag reaches (a pull request head): servers often serve it by hash.
        _git(["fetch", "--quiet", "origin", ref], git_dir=git_dir, timeout=CLONE_TIMEOUT, remote=remote)
        commit = _resolve(git_dir, ref)
    if commit is None:
        known = _known_refs(git_dir)
        shown = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "")
        raise ProjectError("unknown-git-ref", f"{redact(url)} has no branch, tag or commit {ref or 'HEAD'!r}",
                           f"available refs: {shown}" if known else "the repository has no branches or tags",
                           context={"url": redact(url), "ref": ref, "available": known[:50]})
    checkout = _export(git_dir, commit, settings.git_cache / "checkouts" / _url_key(url)[:16] / commit,
                       root=settings.data_dir)
    from envbuilder.project.spec import ProjectSource

    # The record (and so plans, image labels, run records) never keeps a token from the URL.
    return ProjectSource(path=str(checkout), git_url=redact(url), ref=ref, commit=commit)


def inspect_source(path_or_url: str, ref: str | None, settings) -> ProjectSpec:
    """A local folder or a git URL, read into a ProjectSpec whose source says where it came from.

    A local folder with --ref is read from its git history at that ref (through the cache), not its work tree.
    """
    from envbuilder.project.inspect import inspect_project

    local = Path(path_or_url).expanduser()
    if looks_like_git_url(path_or_url) or (ref is not None and local.is_dir()):
        url = path_or_url if looks_like_git_url(path_or_url) else str(local.resolve())
        source = fetch_project(url, ref, settings)
        spec = inspect_project(Path(source.path))
        return spec.model_copy(update={"source": source})
    return inspect_project(local)


# --------------------------------------------------------------------------------------------------------------


def _canonical(url: str) -> str:
    """Local paths as absolute paths, so that the cache key does not depend on the working directory."""
    return url if looks_like_git_url(url) else str(Path(url).expanduser().resolve())


def _url_key(url: str) -> str:
    import hashlib

    return hashlib.sha256(split_credentials(url)[0].encode()).hexdigest()


class _Remote:
    """A repository URL split into what git and the cache may see (url) and the credentials (env only)."""

    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url, self.env = url, env

    @classmethod
    def of(cls, url: str) -> "_Remote":
        clean, user, password = split_credentials(url)
        if user is None and password is None:
            return cls(url, {})
        import base64

        token = base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()
        parts = urlsplit(clean)
        # Scoped to scheme://host[:port]/: a redirect to another host never gets the header.
        scope = f"{parts.scheme}://{parts.netloc}/"
        first = int(os.environ.get("GIT_CONFIG_COUNT", "0") or 0)  # the caller's own entries come first
        return cls(clean, {"GIT_CONFIG_COUNT": str(first + 1), f"GIT_CONFIG_KEY_{first}": f"http.{scope}.extraHeader",
                           f"GIT_CONFIG_VALUE_{first}": f"Authorization: Basic {token}"})


def _git(args: list[str], *, git_dir: Path | None = None, timeout: float = GIT_TIMEOUT, cwd: Path | None = None,
         remote: _Remote | None = None) -> CommandResult:
    argv = ["git"]
    for item in _GIT_CONFIG:
        argv += ["-c", item]
    if git_dir is not None:
        argv += ["--git-dir", str(git_dir)]
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "GCM_INTERACTIVE": "never"}
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"  # ssh must fail, not ask for a password or a host key
    if remote is not None:
        env.update(remote.env)
    from envbuilder.proc import run_command

    result = run_command([*argv, *args], timeout=timeout, env=env, cwd=cwd)
    if result.missing:
        raise ProjectError("git-missing", "git is not installed or not on PATH", "install git to read projects from git URLs")
    if result.timed_out:
        raise ProjectError("git-timeout", f"git {args[0]} did not finish within {timeout:.0f}s",
                           "check the network and the URL, then retry")
    return result


def _ensure_repo(remote: _Remote, settings, *, update: bool) -> Path:
    url = remote.url
    git_dir = repo_dir(url, settings)
    if git_dir.exists():
        _forget_credentials(git_dir, url)
        if update:
            result = _git(["fetch", "--quiet", "--prune", "origin",
                           "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"], git_dir=git_dir,
                          timeout=CLONE_TIMEOUT, remote=remote)
            if not result.ok:
                raise ProjectError("git-fetch-failed", f"git fetch {redact(url)} failed: {_last_line(result)}",
                                   "check the URL and your access; pass a full commit hash to use the cache as it is",
                                   context={"url": redact(url), "output": result.tail(10)})
        return git_dir
    private_dir(git_dir.parent, root=settings.data_dir)
    # Clone beside the final name and rename: a concurrent run sees either nothing or a complete clone.
    import shutil
    import tempfile  # only when fetching: `run PATH` asks looks_like_git_url on every run

    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=git_dir.parent))
    try:
        result = _git(["clone", "--bare", "--quiet", "--", url, str(tmp / "repo.git")], timeout=CLONE_TIMEOUT,
                      remote=remote)
        if not result.ok:
            raise ProjectError("git-clone-failed", f"git clone {redact(url)} failed: {_last_line(result)}",
                               "check the URL and that you can read the repository (ssh keys, tokens)",
                               context={"url": redact(url), "output": result.tail(10)})
        _move_into_place(tmp / "repo.git", git_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return git_dir


def _forget_credentials(git_dir: Path, url: str) -> None:
    """A clone made by an envbuilder that kept the token in `remote.origin.url`: put the clean URL there."""
    config = git_dir / "config"
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if "@" in text and re.search(r"url\s*=\s*[A-Za-z][A-Za-z0-9+.-]*://[^/\s@]+:?[^/\s@]*@", text):
        _git(["config", "remote.origin.url", url], git_dir=git_dir)


def _resolve(git_dir: Path, ref: str) -> str | None:
    candidates = [ref] if ref == "HEAD" or _FULL_COMMIT.match(ref) else [f"refs/heads/{ref}", f"refs/tags/{ref}", ref]
    for name in candidates:
        result = _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"], git_dir=git_dir)
        if result.ok and result.stdout.strip():
            return result.stdout.strip()
    return None


def _known_refs(git_dir: Path) -> list[str]:
    """The cached repository's branches, then its tags: what an unknown ref's error offers instead."""
    result = _git(["for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags"], git_dir=git_dir)
    names = result.stdout.split() if result.ok else []
    return [n.removeprefix("refs/heads/") for n in names if n.startswith("refs/heads/")] + \
        [n.removeprefix("refs/tags/") for n in names if n.startswith("refs/tags/")]


def _export(git_dir: Path, commit: str, dest: Path, *, root: Path) -> Path:
    """The tree at commit, unpacked into dest (once; later calls reuse it)."""
    if dest.is_dir():
        return dest
    private_dir(dest.parent, root=root)
    import shutil
    import tempfile  # only when fetching: `run PATH` asks looks_like_git_url on every run

    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        archive = tmp / "tree.tar"
        result = _git(["archive", "--format=tar", "-o", str(archive), commit], git_dir=git_dir, timeout=CLONE_TIMEOUT)
        if not result.ok:
            raise ProjectError("git-checkout-failed", f"git archive {commit[:12]} failed: {_last_line(result)}",
                               "the cache may be damaged; delete it and retry", context={"git_dir": str(git_dir)})
        tree = tmp / "tree"
        tree.mkdir()
        import tarfile

        with tarfile.open(archive) as tar:
            # The data filter refuses absolute paths, `..` and links out of the tree: the repository is untrusted.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tree, filter="data")
            else:  # pragma: no cover - Python without the extraction filters
                _check_members(tar, tree)
                tar.extractall(tree)
        _move_into_place(tree, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _move_into_place(made: Path, dest: Path) -> None:
    """Rename a clone or tree made in a temporary folder to its cache path in one step, so a reader never sees
    half of one; when a concurrent envbuilder got there first, its copy (of the same thing) stays."""
    try:
        os.rename(made, dest)
    except OSError:
        if not dest.is_dir():
            raise


def _check_members(tar: "tarfile.TarFile", root: Path) -> None:  # pragma: no cover
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not target.is_relative_to(root.resolve()) or member.isdev():
            raise ProjectError("git-checkout-failed", f"archive member {member.name!r} leaves the tree")
        if (member.issym() or member.islnk()) and (os.path.isabs(member.linkname) or ".." in Path(member.linkname).parts):
            raise ProjectError("git-checkout-failed", f"archive link {member.name!r} points out of the tree")


def _last_line(result: CommandResult) -> str:
    lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
    return redact(lines[-1])[:300] if lines else f"exit status {result.returncode}"

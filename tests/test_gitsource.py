"""Git sources on real local repositories (file:// URLs in tmp_path); git itself is faked only at PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from envbuilder.errors import ProjectError
from envbuilder.project.gitsource import (
    check_git_ref,
    check_git_url,
    fetch_project,
    inspect_source,
    list_refs,
    redact,
    repo_dir,
)
from envbuilder.settings import Settings

GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([GIT, *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout.strip()


def commit_file(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path) -> dict:
    """A repository with two commits on main, a tag v1.0 on the first, and a branch `cuda` with a third."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit_file(repo, "pyproject.toml", '[project]\nname = "demo"\ndependencies = ["torch>=2.0"]\n', "first")
    git(repo, "tag", "v1.0")
    second = commit_file(repo, "pyproject.toml", '[project]\nname = "demo"\ndependencies = ["torch>=2.4"]\n', "second")
    git(repo, "checkout", "-q", "-b", "cuda")
    cuda = commit_file(repo, "requirements.txt", "--index-url https://download.pytorch.org/whl/cu128\n", "cuda")
    git(repo, "checkout", "-q", "main")
    return {"path": repo, "url": f"file://{repo}", "first": first, "second": second, "cuda": cuda}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "home")


@pytest.fixture
def git_log(tmp_path, monkeypatch) -> Path:
    """Put a logging wrapper named git first on PATH: it records each invocation and runs the real git."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git.log"
    shim = bindir / "git"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{GIT}" "$@"\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    log.write_text("")
    return log


@pytest.fixture
def tripwire(tmp_path, monkeypatch) -> Path:
    """A git on PATH that only leaves a mark: hostile input must be refused before any git runs."""
    bindir = tmp_path / "tripwire"
    bindir.mkdir()
    mark = tmp_path / "git-ran"
    shim = bindir / "git"
    shim.write_text(f'#!/bin/sh\ntouch "{mark}"\nexit 1\n')
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return mark


def test_fetch_default_branch(origin, settings):
    source = fetch_project(origin["url"], None, settings)
    assert source.commit == origin["second"] and source.git_url == origin["url"] and source.ref is None
    checkout = Path(source.path)
    assert checkout.is_relative_to(settings.git_cache / "checkouts")
    assert checkout.name == origin["second"]
    assert "torch>=2.4" in (checkout / "pyproject.toml").read_text()
    assert not (checkout / ".git").exists()


@pytest.mark.parametrize("ref, key", [("v1.0", "first"), ("cuda", "cuda"), ("main", "second")])
def test_fetch_branch_and_tag(origin, settings, ref, key):
    source = fetch_project(origin["url"], ref, settings)
    assert source.commit == origin[key] and source.ref == ref


def test_fetch_full_commit(origin, settings):
    source = fetch_project(origin["url"], origin["first"], settings)
    assert source.commit == origin["first"]
    assert "torch>=2.0" in (Path(source.path) / "pyproject.toml").read_text()


def test_second_fetch_reuses_the_cache(origin, settings, git_log):
    fetch_project(origin["url"], "main", settings)
    first_run = git_log.read_text()
    assert "clone --bare" in first_run
    git_log.write_text("")
    bare = repo_dir(origin["url"], settings)
    inode = bare.stat().st_ino

    new = commit_file(origin["path"], "README.md", "hello\n", "third")
    source = fetch_project(origin["url"], "main", settings)
    second_run = git_log.read_text()
    assert "clone" not in second_run
    assert "fetch --quiet --prune origin +refs/heads/*:refs/heads/* +refs/tags/*:refs/tags/*" in second_run
    assert bare.stat().st_ino == inode
    assert source.commit == new  # the fetch brought the new commit


def test_known_commit_needs_no_fetch(origin, settings, git_log):
    fetch_project(origin["url"], None, settings)
    git_log.write_text("")
    source = fetch_project(origin["url"], origin["first"], settings)
    assert source.commit == origin["first"]
    assert "fetch" not in git_log.read_text()


def test_every_git_call_is_hardened(origin, settings, git_log):
    fetch_project(origin["url"], "v1.0", settings)
    calls = [line for line in git_log.read_text().splitlines() if line]
    assert calls and all("-c protocol.ext.allow=never" in c and "-c protocol.allow=never" in c for c in calls)


def test_list_refs(origin, settings):
    refs = list_refs(origin["url"], settings)
    assert set(refs.branches) == {"main", "cuda"} and refs.tags == ("v1.0",) and refs.head == "main"


def test_unknown_ref_lists_available_refs(origin, settings):
    with pytest.raises(ProjectError) as err:
        fetch_project(origin["url"], "no-such-branch", settings)
    assert err.value.code == "unknown-git-ref"
    assert "cuda" in err.value.hint and "main" in err.value.hint and "v1.0" in err.value.hint


def test_clone_failure_is_an_error(tmp_path, settings):
    with pytest.raises(ProjectError) as err:
        fetch_project(f"file://{tmp_path / 'missing'}", None, settings)
    assert err.value.code == "git-clone-failed"
    assert not list((settings.git_cache / "repos").glob("*.git"))


def test_inspect_source_git_url(origin, settings):
    spec = inspect_source(origin["url"], "cuda", settings)
    assert spec.source.git_url == origin["url"] and spec.source.commit == origin["cuda"] and spec.source.ref == "cuda"
    assert spec.formats == ("pep621", "requirements")
    assert spec.indexes[0].url == "https://download.pytorch.org/whl/cu128"


def test_inspect_source_local_folder_and_local_ref(origin, settings):
    local = inspect_source(str(origin["path"]), None, settings)
    assert local.source.git_url is None and local.source.path == str(origin["path"].resolve())
    at_tag = inspect_source(str(origin["path"]), "v1.0", settings)
    assert at_tag.source.commit == origin["first"] and at_tag.requirements == ("torch>=2.0",)


HOSTILE_URLS = [
    "ext::sh -c touch% /tmp/pwned",
    "ext::sh",
    "fd::17",
    "-uploadpack=touch /tmp/pwned",
    "--upload-pack=touch /tmp/pwned",
    "ssh://-oProxyCommand=touch%20/tmp/pwned/x",
    "git@-oProxyCommand=sh:repo",
    "-oProxyCommand=x@host:repo",
    "gopher://example.org/repo",
    "https://example.org/repo\n--upload-pack=x",
    "foo:bar",
    "",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_refused_before_git_runs(url, settings, tripwire):
    with pytest.raises(ProjectError) as err:
        fetch_project(url, None, settings)
    assert err.value.code == "unsafe-git-url"
    assert not tripwire.exists()
    assert not settings.git_cache.exists()


HOSTILE_REFS = ["--output=/tmp/pwned", "-b", "main..evil", "a b", "HEAD@{1}", "a:b", "x\x01y", ".hidden",
                "x.lock", "main~1", "main^", "feature//x", "/abs", "end/", "end.", "@", "a*b", "a?b", "a[b", "a\\b"]


@pytest.mark.parametrize("ref", HOSTILE_REFS)
def test_hostile_refs_are_refused_before_git_runs(ref, settings, tripwire):
    with pytest.raises(ProjectError) as err:
        fetch_project("https://example.org/repo.git", ref, settings)
    assert err.value.code == "unsafe-git-ref"
    assert not tripwire.exists()


@pytest.mark.parametrize("url", [
    "https://github.com/org/repo.git", "http://host/repo", "ssh://git@host:22/org/repo.git", "git://host/repo",
    "file:///srv/repo", "git@github.com:org/repo.git", "/srv/repos/demo", "./demo", "../demo",
])
def test_safe_urls_pass(url):
    assert check_git_url(url) == url


@pytest.mark.parametrize("ref", ["main", "v1.0", "feature/cu128", "release-2.7", "a" * 40, "abc1234"])
def test_safe_refs_pass(ref):
    assert check_git_ref(ref) == ref


def test_redact_hides_tokens():
    assert redact("https://user:s3cret@example.org/r.git") == "https://***@example.org/r.git"
    assert redact("https://ghp_token@example.org/r.git") == "https://***@example.org/r.git"  # a token alone
    assert redact("https://example.org/r.git") == "https://example.org/r.git"

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


def test_unknown_ref_lists_available_refs(origin, settings):
    with pytest.raises(ProjectError) as err:
        fetch_project(origin["url"], "no-such-branch", settings)
    assert err.value.code == "unknown-git-ref"
    assert "cuda" in err.value.hint and "main" in err.value.hint and "v1.0" in err.value.hint
    assert sorted(err.value.context["available"][:2]) == ["cuda", "main"] and err.value.context["available"][2] == "v1.0"


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


# --- credentials in the URL never reach the cache ---------------------------------------------------------


@pytest.fixture
def private_server(origin, tmp_path):
    """The origin as a private repository behind git smart HTTP on loopback (Basic auth required)."""
    from support.git_server import GitHttpServer, http_backend

    if http_backend() is None:
        pytest.skip("git http-backend is not installed")
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run([GIT, "clone", "-q", "--bare", str(origin["path"]), str(served / "demo.git")], check=True,
                   env=GIT_ENV)
    with GitHttpServer(served, user="ci", password="tok-3f9a1c") as server:
        yield server


def _files_mentioning(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_a_token_in_the_url_is_used_but_never_written_to_the_cache(private_server, origin, settings):
    url = private_server.url("demo.git", auth=True)
    source = fetch_project(url, None, settings)
    assert source.commit == origin["second"]
    assert "tok-3f9a1c" not in source.git_url
    commit_file(origin["path"], "NEW.txt", "x", "third")  # a later fetch needs the credentials again
    subprocess.run([GIT, "-C", str(origin["path"]), "push", "-q", str(private_server.root / "demo.git"), "main"],
                   check=True, env=GIT_ENV)
    assert fetch_project(url, "main", settings).commit != origin["second"]
    assert _files_mentioning(settings.data_dir, "tok-3f9a1c") == []
    config = (repo_dir(url, settings) / "config").read_text()
    assert f"url = {private_server.url('demo.git')}" in config
    # git sent the credentials (the server refuses requests without them), as a header it was given.
    assert any(a and a.startswith("Basic ") for a in private_server.authorizations)


def test_without_the_token_the_private_repository_is_refused(private_server, settings):
    with pytest.raises(ProjectError) as caught:
        fetch_project(private_server.url("demo.git"), None, settings)
    assert caught.value.code == "git-clone-failed"


def test_a_new_token_reuses_the_clone_and_an_old_clone_is_cleaned(private_server, settings):
    url = private_server.url("demo.git", auth=True)
    fetch_project(url, None, settings)
    git_dir = repo_dir(url, settings)
    assert git_dir == repo_dir(private_server.url("demo.git"), settings)  # keyed without the credentials
    # An older envbuilder left the token in the clone's config: the next use puts the clean URL there.
    git(git_dir, "config", "remote.origin.url", url)
    fetch_project(url, None, settings)
    assert "tok-3f9a1c" not in (git_dir / "config").read_text()


def test_the_cache_and_the_data_dir_are_private(origin, settings):
    fetch_project(origin["url"], None, settings)
    for folder in (settings.data_dir, settings.git_cache, settings.git_cache / "repos", settings.git_cache / "checkouts"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder


def test_the_data_dir_folders_of_runs_and_build_logs_are_private_too(tmp_path):
    from envbuilder.run.store import RunStore

    settings = Settings(data_dir=tmp_path / "home")
    settings.data_dir.mkdir(mode=0o755)
    settings.logs_dir.mkdir(mode=0o755)  # as an older envbuilder left them
    store = RunStore.from_settings(settings)
    store.start_run("p", ["true"])
    settings.private_dir(settings.logs_dir)
    for folder in (settings.data_dir, settings.runs_dir, settings.logs_dir):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert settings.runs_db.stat().st_mode & 0o777 == 0o600


def test_redaction_applies_to_any_message():
    from envbuilder.redact import redact_text

    text = "git clone https://ci:tok3n@host/r.git failed; mirror http://u:p@10.0.0.1/simple and ssh://git:pw@h/x"
    assert redact_text(text) == ("git clone https://***@host/r.git failed; mirror http://***@10.0.0.1/simple "
                                 "and ssh://git:***@h/x")
    assert redact_text("git@github.com:org/repo.git and user@example.org") == \
        "git@github.com:org/repo.git and user@example.org"


def test_the_cli_redacts_credentials_in_every_error_line(cli, tmp_path):
    result = cli("run", "https://ci:tok3n@127.0.0.1:1/nothing.git", "job", "--image", "x", "--json")
    assert result.exit_code != 0
    assert "tok3n" not in result.stderr and "tok3n" not in result.stdout

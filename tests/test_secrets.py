"""Secrets (issue #9): credentialed index URLs work and never show; secrets and bulk data stay out of images.

What the user does, end to end: `resolve`, `render` and `build` with `--torch-index-url http://user:pass@...`
(and every other URL option) against a loopback PEP 503 index that requires Basic auth (support/auth_index.py).
Builds run against the fake engine here (the docker boundary; tests/test_secrets_docker.py builds for real):
the netrc secret the build gets is read while the build runs. The context checks walk real folders, with a
sparse 300 MB file for the size warning.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from support.auth_index import AuthIndex, torch_stand_in
from support.fake_engine import FakeEngine, install_engine

from envbuilder.build.context import (
    context_notices,
    ignore_patterns,
    ignore_spec,
    iter_context,
    looks_secret,
    survey_context,
)
from envbuilder.redact import netrc_text, url_credentials
from envbuilder.render.dockerfile import DEFAULT_IGNORES

PASSWORD = "s3cret-Pa55"
BASE = "envbuilder/base-python:3.11-bookworm"
TARGET = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64", "--python", "3.11")


@pytest.fixture(scope="module")
def auth_index(tmp_path_factory):
    with AuthIndex([torch_stand_in(tmp_path_factory.mktemp("wheels"))], user="ci", password=PASSWORD) as index:
        yield index


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\ndependencies = ["torch==2.13.0", "tqdm"]\n')
    (root / "train.py").write_text("print('hi')\n")
    return root


class NetrcReadingEngine(FakeEngine):
    """The fake engine, reading the netrc secret while the build runs (the docker CLI reads it then too)."""

    netrc: str | None = None
    netrc_mode: int | None = None
    netrc_path: Path | None = None

    def build(self, request, *, on_line, timeout=None):
        path = request.secrets.get("netrc")
        if path is not None:
            self.netrc_path, self.netrc = Path(path), Path(path).read_text()
            self.netrc_mode = stat.S_IMODE(os.stat(path).st_mode)
        return super().build(request, on_line=on_line, timeout=timeout)


@pytest.fixture
def engine(monkeypatch) -> NetrcReadingEngine:
    docker = install_engine(monkeypatch, NetrcReadingEngine())
    docker.add_image(BASE, "sha256:base", labels={"org.envbuilder.python": "3.11"})
    return docker


def assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text, text[-2000:]


# --- the netrc of URL credentials (pure) -----------------------------------------------------------------------
def test_url_credentials_become_one_netrc_line_per_host():
    found = url_credentials(["https://alice:p%40ss@Mirror.example/simple", None, "https://pypi.org/simple",
                             "http://TOKEN@other.example:8080/simple", "https://alice:p%40ss@mirror.example/extra"])
    assert found == {"mirror.example": ("alice", "p@ss"), "other.example": ("TOKEN", None)}
    assert netrc_text(found) == ("machine mirror.example login alice password p@ss\n"
                                 "machine other.example login TOKEN\n")


@pytest.mark.parametrize("urls, words", [
    (["https://a:1@host/simple", "https://b:2@host/other"], "different credentials for host"),
    (["https://a:has%20space@host/simple"], "a .netrc file cannot carry"),
])
def test_url_credentials_refuse_what_a_netrc_cannot_hold(urls, words):
    with pytest.raises(ValueError, match=words) as err:
        url_credentials(urls)
    assert "has space" not in str(err.value) and ":1@" not in str(err.value)


def test_index_requests_keep_credentials_off_redirects():
    from envbuilder.index.snapshot import index_request

    request = index_request("https://mirror.example/simple/torch/", "text/html", "ci", PASSWORD)
    # urllib copies `headers` onto a redirected request, but never the unredirected ones.
    assert "Authorization" not in request.headers and "Authorization" in request.unredirected_hdrs


# --- resolve and render ------------------------------------------------------------------------------------------
def test_resolve_reads_a_credentialed_mirror_and_shows_no_password(cli, project, auth_index):
    auth_index.authorized.clear()
    result = cli("resolve", str(project), *TARGET, "--torch-index-url", auth_index.secret_url, "--json")
    assert result.exit_code == 0, result.stderr
    assert_no_password(result.stdout, result.stderr)
    plan = json.loads(result.stdout)
    assert plan["torch"]["index_url"] == auth_index.url and plan["torch"]["local"] == "2.13.0+cpu"
    assert "mirror-unread" not in {w["code"] for w in plan["warnings"]}  # read, with the credentials
    assert "/simple/torch/" in auth_index.authorized


def test_a_bare_mirror_url_is_read_with_the_netrc_login(cli, project, auth_index, monkeypatch, tmp_path):
    """What uv and pip do inside the build (~/.netrc, or $NETRC) is what the resolver's read of the mirror does."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login ci password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    result = cli("resolve", str(project), *TARGET, "--torch-index-url", auth_index.url, "--json")
    assert result.exit_code == 0, result.stderr
    assert "mirror-unread" not in {w["code"] for w in json.loads(result.stdout)["warnings"]}


def test_a_refused_password_is_reported_without_it(cli, project, auth_index, engine):
    wrong = auth_index.secret_url.replace(PASSWORD, "wr0ng-Pa55")
    resolved = cli("resolve", str(project), *TARGET, "--torch-index-url", wrong)
    assert resolved.exit_code == 0 and "HTTP 401" in resolved.stdout + resolved.stderr
    built = cli("build", str(project), *TARGET, "--base-image", BASE, "--torch-index-url", wrong)
    assert built.exit_code == 1 and "index-unreachable" in built.stderr and "HTTP 401" in built.stderr
    assert "Traceback" not in built.stderr and len(built.stderr.strip().splitlines()) == 1
    for result in (resolved, built):
        assert "wr0ng-Pa55" not in result.stdout + result.stderr and "ci:" not in result.stdout + result.stderr


@pytest.mark.parametrize("fmt", ["dockerfile", "bash", "powershell", "lock"])
def test_render_keeps_credentials_out_of_every_format(cli, project, fmt):
    # https and unreachable: the case that used to crash `render`; render reads the mirror but does not need it.
    url = f"https://ci:{PASSWORD}@127.0.0.1:9/simple"
    result = cli("render", str(project), *TARGET, "--torch-index-url", url, "--format", fmt)
    assert result.exit_code == 0, result.stderr
    assert_no_password(result.stdout, result.stderr)
    assert "https://127.0.0.1:9/simple" in result.stdout
    if fmt == "dockerfile":  # the build reads them from the netrc secret
        assert "--mount=type=secret,id=netrc,target=/root/.netrc" in result.stdout


@pytest.mark.parametrize("option", ["--index-url", "--extra-index-url", "--find-links", "$ENVBUILDER_TORCH_INDEX_URL"])
def test_every_url_option_gets_the_same_treatment(cli, project, monkeypatch, option):
    url = f"https://ci:{PASSWORD}@mirror.invalid/simple"
    if option.startswith("$"):
        monkeypatch.setenv(option[1:], url)
        args: tuple[str, ...] = ()
    else:
        args = (option, url)
    result = cli("render", str(project), *TARGET, *args)
    assert result.exit_code == 0, result.stderr
    assert_no_password(result.stdout, result.stderr)
    assert "https://mirror.invalid/simple" in result.stdout and "id=netrc" in result.stdout


def test_credentials_that_a_netrc_cannot_hold_are_one_clear_line(cli, project):
    result = cli("render", str(project), *TARGET, "--index-url", f"https://a:{PASSWORD}@host.invalid/simple",
                 "--extra-index-url", "https://b:other@host.invalid/extra")
    assert result.exit_code == 2 and "credentials-unusable" in result.stderr and "Hint:" in result.stderr
    assert_no_password(result.stderr)
    assert "other" not in result.stderr


# --- build --------------------------------------------------------------------------------------------------------
def test_build_gets_the_credentials_as_a_temporary_netrc_secret(cli, project, auth_index, engine, tmp_path):
    result = cli("build", str(project), *TARGET, "--base-image", BASE, "--torch-index-url", auth_index.secret_url,
                 "--json")
    assert result.exit_code == 0, result.stderr
    assert engine.netrc == f"machine 127.0.0.1 login ci password {PASSWORD}\n" and engine.netrc_mode == 0o600
    assert not engine.netrc_path.exists(), "the netrc file outlives the build"
    request = engine.builds[0]
    dockerfile = Path(request.dockerfile).read_text()
    assert "id=netrc" in dockerfile and auth_index.url in dockerfile
    built = json.loads(result.stdout)
    logs = [p.read_text() for p in (tmp_path / "envbuilder-home").rglob("*.log")]
    assert_no_password(dockerfile, json.dumps(request.labels), json.dumps(request.build_args), result.stdout,
                       result.stderr, *logs)
    # The credentials are no input of the image: the same build with them in a --netrc file is the same image.
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login ci password {PASSWORD}\n")
    again = cli("build", str(project), *TARGET, "--base-image", BASE, "--torch-index-url", auth_index.url,
                "--netrc", str(netrc), "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["build_key"] == built["build_key"] and json.loads(again.stdout)["cached"]


def test_credentials_in_a_url_and_in_the_netrc_file_for_one_host_are_refused(cli, project, auth_index, engine,
                                                                             tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login other password other\n")
    result = cli("build", str(project), *TARGET, "--base-image", BASE, "--torch-index-url", auth_index.secret_url,
                 "--netrc", str(netrc))
    assert result.exit_code == 2 and "credentials-unusable" in result.stderr and not engine.builds
    assert_no_password(result.stderr)


def test_a_netrc_file_and_url_credentials_for_other_hosts_are_merged(tmp_path):
    from envbuilder.build.image import credentials_netrc

    given = tmp_path / "netrc"
    given.write_text("machine pypi.corp login bob password b0b\n")
    with credentials_netrc({"mirror.corp": ("ci", "t0ken")}, given) as path:
        assert path.read_text() == "machine mirror.corp login ci password t0ken\nmachine pypi.corp login bob password b0b\n"
    assert not path.exists()
    with credentials_netrc({}, given) as path:
        assert path == given  # nothing to add: the user's file as it is


# --- secrets in the context ---------------------------------------------------------------------------------------
SECRET_TREE = [".env", ".env.local", ".envrc", "config/.env.production", "id_rsa", "keys/server.pem", "tls.key",
               ".netrc", ".pypirc", ".aws/credentials", ".config/gcloud/application_default_credentials.json",
               ".azure/accessTokens.json", "credentials.json", "cert.p12", ".docker/config.json", ".kube/config"]
KEPT_TREE = [".env.example", "deploy_key.pub", "train.py", "data/labels.csv", ".aws/config"]


def _tree(root: Path, names) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x\n")


def test_secrets_stay_out_of_the_context_by_default(tmp_path):
    _tree(tmp_path, SECRET_TREE + KEPT_TREE)
    included = {rel for rel, st in iter_context(tmp_path, DEFAULT_IGNORES) if stat.S_ISREG(st.st_mode)}
    assert included == set(KEPT_TREE)
    survey = survey_context(tmp_path, DEFAULT_IGNORES)
    assert survey.secrets == () and context_notices(survey) == ()


def test_the_secret_exception_does_not_make_ignored_folders_walked():
    rules = ignore_spec(DEFAULT_IGNORES)
    assert rules.negates
    assert not any(rules.may_reinclude_below(folder) for folder in (".git", ".venv", "node_modules", "a/b/.venv"))
    assert ignore_spec(["data", "!data/keep/*.csv"]).may_reinclude_below("data")
    assert ignore_spec(["data", "!**/keep.csv"]).may_reinclude_below("data")
    assert not ignore_spec(["data", "!other/*.csv"]).may_reinclude_below("data")


@pytest.mark.parametrize("name, secret", [
    ("secrets.yaml", True), ("deploy/client_secret_123.json", True), ("app.keystore", True), (".htpasswd", True),
    ("service-account-prod.json", True), ("credentials", True), (".env.sample", False), ("id_ed25519.pub", False),
    ("secret_sauce.py", False), ("keyboard.py", False), ("data/credentials.csv.example", False),
])
def test_what_looks_like_a_secret(name, secret):
    assert looks_secret(name) is secret


def test_a_build_warns_about_secrets_the_project_brings_back(cli, project, engine):
    _tree(project, [".env", "deploy/secrets.yaml", ".env.example"])
    (project / ".dockerignore").write_text("!.env\n")
    result = cli("build", str(project), *TARGET, "--base-image", BASE, "--json")
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "secret" in line)
    assert "warning" in warning and ".env" in warning and "deploy/secrets.yaml" in warning
    assert ".env.example" not in warning and ".dockerignore" in warning
    notices = json.loads(result.stdout)["notices"]
    assert [n["code"] for n in notices] == ["secret-in-context"]
    cached = cli("build", str(project), *TARGET, "--base-image", BASE, "--json")
    assert json.loads(cached.stdout)["cached"] and "secret-in-context" in cached.stdout  # still in the image


# --- a large context ----------------------------------------------------------------------------------------------
def test_a_large_context_is_named_with_its_biggest_folders(cli, project, engine):
    (project / "data").mkdir()
    subprocess.run(["truncate", "-s", "300MB", str(project / "data" / "train.bin")], check=True)  # sparse: fast
    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "last.pt").write_bytes(b"\0" * 2_000_000)
    result = cli("build", str(project), *TARGET, "--base-image", BASE, "--json")
    assert result.exit_code == 0, result.stderr
    warning = next(line for line in result.stderr.splitlines() if "build context is" in line)
    assert "302 MB (over 200 MB)" in warning and "data/ 300 MB, checkpoints/ 2.0 MB" in warning
    assert ".dockerignore" in warning and "mount" in warning
    assert [n["code"] for n in json.loads(result.stdout)["notices"]] == ["large-context"]
    # Ignored, it is neither sent nor counted.
    (project / ".dockerignore").write_text("data\n")
    survey = survey_context(project, ignore_patterns(project, DEFAULT_IGNORES))
    assert survey.size < 3_000_000 and context_notices(survey) == ()


# --- uv: the installability probe and `lock` ------------------------------------------------------------------
def test_the_installability_probe_gives_uv_the_credentials_through_netrc(auth_index, tmp_path, monkeypatch):
    from support.local_index import _wheel

    from envbuilder.index import installability
    from envbuilder.resolve.python_fit import InstallRequest
    from envbuilder.settings import Settings

    _wheel(tmp_path, {"name": "tqdm", "version": "4.0.0"}, "py3-none-any")
    seen: list[list[str]] = []
    real = installability.run_command

    def spy(argv, **kwargs):  # the real uv runs; the test keeps its command line
        seen.append(list(argv))
        return real(argv, **kwargs)

    monkeypatch.setattr(installability, "run_command", spy)
    with AuthIndex([tmp_path / "tqdm-4.0.0-py3-none-any.whl"], user="ci", password=PASSWORD) as index:
        request = InstallRequest(("tqdm",), ("3.11",), index_url=index.secret_url)
        report = installability.check_installability(request, Settings(tmp_path / "home"))
        authorized = list(index.authorized)
    assert report.checked and report.probes[0].installs, report
    assert "/simple/tqdm/" in authorized and seen
    assert_no_password(*(" ".join(argv) for argv in seen))


def test_lock_resolves_through_a_credentialed_mirror(cli, auth_index, tmp_path):
    project = tmp_path / "lockproj"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "lockproj"\nversion = "0"\ndependencies = ["torch==2.13.0"]\n')
    result = cli("lock", str(project), *TARGET, "--index-url", auth_index.secret_url, "--torch-index-url",
                 auth_index.secret_url, "--format", "requirements")
    assert result.exit_code == 0, result.stderr
    assert "torch==2.13.0+cpu" in result.stdout and "--hash=sha256:" in result.stdout
    assert_no_password(result.stdout, result.stderr)


def test_an_index_a_project_file_declares_with_credentials_is_never_printed(cli, project):
    with open(project / "pyproject.toml", "a") as f:
        f.write(f'\n[[tool.uv.index]]\nname = "corp"\nurl = "https://u:{PASSWORD}@corp.invalid/simple"\n')
    for args in (("inspect",), ("inspect", "--json"), ("resolve", *TARGET), ("resolve", *TARGET, "--json")):
        result = cli(*args[:1], str(project), *args[1:])
        assert result.exit_code == 0, result.stderr
        assert_no_password(result.stdout, result.stderr)
        if args[-1] == "--json" or args == ("inspect",):  # the human plan does not list the project's indexes
            assert "https://***@corp.invalid/simple" in result.stdout
    rendered = cli("render", str(project), *TARGET)  # a Dockerfile would keep it: refused, in one line
    assert rendered.exit_code == 2 and "credentials-in-url" in rendered.stderr
    assert_no_password(rendered.stdout, rendered.stderr)

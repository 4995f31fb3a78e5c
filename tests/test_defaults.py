"""Layered build and network defaults (envbuilder.defaults): the project's [tool.envbuilder.defaults], the user
config's [defaults], ENVBUILDER_* variables, then flags; `envbuilder config show`; and commands that, given the
same layers, plan the same thing without repeating a flag."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from envbuilder.defaults import (
    Layer,
    Setting,
    env_layer,
    flag_layer,
    merge,
    table_issues,
    user_layer,
)
from envbuilder.errors import ProjectError, UsageError

LINUX_CPU = ("--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none", "--python", "3.11")
BASE = "envbuilder/base-python:3.11-bookworm"


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "demo"
    root.mkdir()
    (root / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "demo"
        version = "0.1"
        requires-python = ">=3.10"
        dependencies = ["torch>=2.5", "numpy>=1.26"]
    """))
    return root


@pytest.fixture
def user_config(tmp_path, monkeypatch):
    """Writes ~/.config/envbuilder/config.toml (through XDG_CONFIG_HOME) with the given text."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    path = home / "envbuilder" / "config.toml"
    path.parent.mkdir(parents=True)

    def write(text: str) -> Path:
        path.write_text(textwrap.dedent(text))
        return path

    return write


def _layer(name: str, **values) -> Layer:
    return Layer(name, {k.replace("_", "-"): Setting(k.replace("_", "-"), v, name, f"<{name}>") for k, v in values.items()})


# --- the merge ------------------------------------------------------------------------------------------------


def test_a_later_layer_wins_and_says_where_it_came_from():
    merged = merge([
        _layer("project", base_image="from-project", index_url="https://project/simple"),
        _layer("user", base_image="from-user", network="host", extra_index_url=("https://a/s", "https://b/s")),
        _layer("env", network="none"),
        _layer("flag", extra_index_url=("https://c/s",)),
    ])
    assert merged.value("base-image") == "from-user" and merged.settings["base-image"].layer == "user"
    assert merged.value("index-url") == "https://project/simple"
    assert merged.value("network") == "none" and merged.settings["network"].origin == "<env>"
    assert merged.value("extra-index-url") == ("https://c/s",)  # a list is replaced whole, never concatenated
    assert merged.fields() == {"base_image": "from-user", "index_url": "https://project/simple", "network": "none",
                               "extra_index_urls": ("https://c/s",)}


def test_a_flag_that_clears_the_ca_overrides_the_user_config():
    merged = merge([_layer("user", ca_cert="/etc/ca.pem"), flag_layer({}, cleared=("ca-cert",))])
    assert merged.value("ca-cert") is None and merged.settings["ca-cert"].origin == "--no-host-ca"
    assert "ca_cert" not in merged.fields()


# --- checking tables --------------------------------------------------------------------------------------------


def test_every_problem_of_a_table_is_listed_with_its_key():
    issues = dict(table_issues({"base-imgae": "x", "index-url": "mirror.example", "network": "bridge",
                                "extra-index-url": ["https://ok/simple", 3], "host-ca": True, "ca-cert": "ca.pem"},
                               project=False))
    assert issues["base-imgae"] == "unknown key (did you mean 'base-image'?)"
    assert issues["index-url"].startswith("must be a URL")
    assert issues["network"].startswith("must be one of default, host, none")
    assert "non-empty string" in issues["extra-index-url"]
    assert issues["host-ca"] == "ca-cert and host-ca are alternatives; keep one"


@pytest.mark.parametrize("key", ["network", "host-ca", "ca-cert", "http-proxy", "https_proxy", "no-proxy"])
def test_a_project_cannot_set_what_describes_this_machines_network(key):
    value = True if key == "host-ca" else "host" if key == "network" else "http://proxy:3128"
    [(name, message)] = table_issues({key: value}, project=True)
    assert name == key and "cannot set the network, CA trust or proxies" in message


def test_the_project_table_is_checked_with_its_full_field_path(project):
    from envbuilder.project.config import load_config

    with open(project / "pyproject.toml", "a") as f:
        f.write('[tool.envbuilder.defaults]\nnetwork = "host"\nbase-image = ""\n')
    with pytest.raises(ProjectError) as caught:
        load_config(project)
    assert caught.value.code == "config-invalid"
    assert "tool.envbuilder.defaults.network: a project's config cannot set" in caught.value.message
    assert "tool.envbuilder.defaults.base-image: must be a non-empty string" in caught.value.message


def test_a_projects_find_links_folder_must_be_inside_it(project, tmp_path):
    from envbuilder.defaults import project_layer

    outside = tmp_path / "host-wheels"
    outside.mkdir()
    (project / "wheels").mkdir()
    (project / "escape").symlink_to(outside)
    layer = project_layer({"find-links": ["wheels", "https://x.example/links"]}, project, "p")
    assert layer.settings["find-links"].value == (str((project / "wheels").resolve()), "https://x.example/links")
    with pytest.raises(ProjectError, match="find-links: escape is outside the project"):
        project_layer({"find-links": "escape"}, project, "p")


# --- the user config and the environment --------------------------------------------------------------------


def test_the_user_config_is_the_first_file_found_and_paths_are_relative_to_it(tmp_path):
    first, second = tmp_path / "a" / "config.toml", tmp_path / "b" / "config.toml"
    second.parent.mkdir()
    second.write_text('[defaults]\nca-cert = "corp.pem"\nfind-links = "wheels"\n')
    (second.parent / "corp.pem").write_text("pem")
    (second.parent / "wheels").mkdir()
    layer = user_layer([first, second], environ={})
    assert layer.settings["ca-cert"].value == str(second.parent / "corp.pem")
    assert layer.settings["ca-cert"].origin == str(second)
    assert layer.settings["find-links"].value == (str(second.parent / "wheels"),)
    assert user_layer([first], environ={}) is None


def test_host_ca_in_the_user_config_takes_this_machines_bundle(tmp_path):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("pem")
    path = tmp_path / "config.toml"
    path.write_text("[defaults]\nhost-ca = true\n")
    layer = user_layer([path], environ={"SSL_CERT_FILE": str(bundle)})
    assert layer.settings["ca-cert"].value == str(bundle) and layer.settings["ca-cert"].origin.endswith("(host-ca)")


def test_a_broken_user_config_names_the_file_and_every_bad_key(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[defaults]\nnetwork = "bridge"\ntorch-index = "x"\n')
    with pytest.raises(UsageError) as caught:
        user_layer([path], environ={})
    assert caught.value.code == "defaults-invalid" and str(path) in caught.value.message
    assert "defaults.network: must be one of" in caught.value.message
    assert "defaults.torch-index: unknown key (did you mean 'torch-index-url'?)" in caught.value.message
    path.write_text("[defaults\n")
    with pytest.raises(UsageError, match="cannot be read as TOML"):
        user_layer([path], environ={})


def test_environment_variables_are_a_layer(tmp_path):
    layer = env_layer({"ENVBUILDER_EXTRA_INDEX_URL": "https://a/s  https://b/s", "ENVBUILDER_NETWORK": "host",
                       "HTTPS_PROXY": "http://proxy:3128", "ENVBUILDER_HOST_CA": "0", "ENVBUILDER_BASE_IMAGE": ""})
    assert layer.settings["extra-index-url"].value == ("https://a/s", "https://b/s")
    assert layer.settings["network"].origin == "$ENVBUILDER_NETWORK"
    assert layer.settings["https-proxy"].origin == "$HTTPS_PROXY"
    assert layer.settings["ca-cert"].value is None  # =0: no extra CA, whatever the user config says
    assert "base-image" not in layer.settings  # empty is unset
    with pytest.raises(UsageError, match=r"\$ENVBUILDER_NETWORK: must be one of"):
        env_layer({"ENVBUILDER_NETWORK": "bridge"})
    with pytest.raises(UsageError, match="no such file"):
        env_layer({"ENVBUILDER_CA_CERT": str(tmp_path / "missing.pem")})


def test_urls_and_proxies_are_checked_alike_in_every_layer(cli, project):
    """One check each (envbuilder.defaults.url_problem, proxy_problem) for flags, variables and config tables:
    HOST:PORT is an http proxy to pip, uv and curl, so HTTP_PROXY=proxy:3128 is taken from the environment as
    it is from --http-proxy; an ftp:// index is refused by both."""
    assert env_layer({"HTTP_PROXY": "proxy:3128"}).settings["http-proxy"].value == "proxy:3128"
    assert cli("config", "show", str(project), "--http-proxy", "proxy:3128").exit_code == 0
    with pytest.raises(UsageError, match="must be a proxy URL"):
        env_layer({"HTTPS_PROXY": "gopher://proxy:70"})
    assert cli("config", "show", str(project), "--https-proxy", "gopher://proxy:70").exit_code == 2
    with pytest.raises(UsageError, match="must be a URL"):
        env_layer({"ENVBUILDER_INDEX_URL": "ftp://mirror/simple"})
    refused = cli("config", "show", str(project), "--index-url", "ftp://mirror/simple")
    assert refused.exit_code == 2 and "ftp:// is not supported" in refused.stderr


# --- the commands -------------------------------------------------------------------------------------------


def test_config_show_names_each_values_layer(cli, project, user_config, monkeypatch):
    with open(project / "pyproject.toml", "a") as f:
        f.write('[tool.envbuilder.defaults]\nbase-image = "from-project"\nindex-url = "https://project.example/simple"\n')
    path = user_config(f'[defaults]\nbase-image = "{BASE}"\nnetwork = "host"\n'
                       'torch-index-url = "https://user:s3cret@mirror.example/torch"\n')
    monkeypatch.setenv("ENVBUILDER_NETWORK", "none")
    result = cli("config", "show", str(project), "--extra-index-url", "https://flag.example/simple")
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[3:] if line.strip()}
    assert lines["base-image"].endswith(f"(user config {path})") and BASE in lines["base-image"]
    assert "https://project.example/simple" in lines["index-url"] and "[tool.envbuilder.defaults]" in lines["index-url"]
    assert lines["network"].split()[1] == "none" and lines["network"].endswith("($ENVBUILDER_NETWORK)")
    assert lines["extra-index-url"].endswith("(--extra-index-url)")
    assert "s3cret" not in result.stdout and "https://***@mirror.example/torch" in lines["torch-index-url"]
    assert lines["find-links"].endswith("(built-in)")
    assert result.stdout.splitlines()[1] == f"user config:    {path}"

    shown = json.loads(cli("config", "show", str(project), "--json").stdout)
    values = {item["key"]: item for item in shown["values"]}
    assert values["base-image"] == {"key": "base-image", "value": BASE, "layer": "user", "origin": str(path)}
    assert values["index-url"]["layer"] == "project" and values["network"]["origin"] == "$ENVBUILDER_NETWORK"
    assert shown["user_config"] == str(path) and "find-links" in shown["unset"]
    assert "s3cret" not in json.dumps(shown)


def test_config_show_without_any_config_says_where_it_looked(cli, project):
    result = cli("config", "show", str(project))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == "project config: none"
    assert result.stdout.splitlines()[1].startswith("user config:    none (looked for ")
    assert "base-image       -  (built-in: python:X.Y-slim-bookworm" in result.stdout


def test_a_broken_user_config_is_one_line_and_exit_2(cli, project, user_config):
    user_config('[defaults]\nnetwork = "bridge"\n')
    for command in (("config", "show", str(project)), ("render", str(project), *LINUX_CPU)):
        result = cli(*command)
        assert result.exit_code == 2
        assert result.stderr.startswith("envbuilder: defaults-invalid: ") and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_render_without_flags_uses_the_user_config_and_matches_the_flags(cli, project, user_config, tmp_path):
    """Say it once: the same Dockerfile from the flags, or from the user config with no flag at all."""
    from support.certs import pem_certificates

    ca = tmp_path / "ca.pem"
    ca.write_text(pem_certificates(1)[0])
    flags = ("--base-image", BASE, "--torch-index-url", "http://127.0.0.1:9/whl/cpu", "--ca-cert", str(ca),
             "--network", "host")
    with_flags = cli("render", str(project), *LINUX_CPU, *flags)
    assert with_flags.exit_code == 0, with_flags.stderr
    user_config(f'[defaults]\nbase-image = "{BASE}"\ntorch-index-url = "http://127.0.0.1:9/whl/cpu"\n'
                f'ca-cert = "{ca}"\nnetwork = "host"\n')
    said_once = cli("render", str(project), *LINUX_CPU)
    assert said_once.exit_code == 0, said_once.stderr
    assert said_once.stdout == with_flags.stdout
    assert f"FROM {BASE} AS base" in said_once.stdout and "http://127.0.0.1:9/whl/cpu" in said_once.stdout
    overridden = cli("render", str(project), *LINUX_CPU, "--base-image", "python:3.11-slim-bookworm")
    assert "FROM python:3.11-slim-bookworm AS base" in overridden.stdout


def test_the_projects_defaults_fill_what_no_other_layer_sets(cli, project, user_config):
    with open(project / "pyproject.toml", "a") as f:
        f.write('[tool.envbuilder.defaults]\nbase-image = "from/project:1"\n'
                'extra-index-url = "https://project.example/simple"\n')
    result = cli("render", str(project), *LINUX_CPU)
    assert result.exit_code == 0, result.stderr
    assert "FROM from/project:1 AS base" in result.stdout and "https://project.example/simple" in result.stdout
    user_config(f'[defaults]\nbase-image = "{BASE}"\n')
    result = cli("render", str(project), *LINUX_CPU)
    assert f"FROM {BASE} AS base" in result.stdout and "https://project.example/simple" in result.stdout
    lock = cli("lock", str(project), *LINUX_CPU, "--no-resolve")
    assert lock.exit_code == 0, lock.stderr
    assert "https://project.example/simple" in lock.stdout


def test_run_takes_the_network_from_the_user_config(cli, project, user_config, monkeypatch):
    """`run --image` builds nothing, but its container joins the network the layers say."""
    from envbuilder import api

    seen = {}

    def fake_run_project(source, what, **kwargs):
        seen.update(network=kwargs["options"].network)
        raise UsageError("usage", "stop here")

    monkeypatch.setattr(api, "run_project", fake_run_project)
    user_config('[defaults]\nnetwork = "host"\n')
    cli("run", str(project), "--image", "some:image", "--", "true")
    assert seen["network"] == "host"
    monkeypatch.setenv("ENVBUILDER_NETWORK", "default")
    cli("run", str(project), "--image", "some:image", "--", "true")
    assert seen["network"] is None  # default: Docker's bridge


def _git_project(folder: Path, defaults: str) -> str:
    import subprocess

    folder.mkdir()
    (folder / "pyproject.toml").write_text('[project]\nname = "g"\nversion = "0"\ndependencies = ["torch>=2.5"]\n'
                                           "[tool.envbuilder.defaults]\n" + defaults)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(folder)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], check=True)
    return f"file://{folder}"


def test_a_git_url_projects_defaults_count_but_cannot_reach_outside(cli, tmp_path):
    """A remote project is untrusted (docs/security.md): its base image and indexes are its own business, but
    the network, CA trust and proxies are refused, never honoured."""
    url = _git_project(tmp_path / "remote", 'base-image = "from/git:1"\n')
    shown = json.loads(cli("config", "show", url, "--json").stdout)
    assert {v["key"]: v["layer"] for v in shown["values"]} == {"base-image": "project"}
    rendered = cli("render", url, *LINUX_CPU)
    assert rendered.exit_code == 0, rendered.stderr
    assert "FROM from/git:1 AS base" in rendered.stdout

    hostile = _git_project(tmp_path / "hostile", 'network = "host"\nhttps-proxy = "http://evil.example:3128"\n')
    refused = cli("render", hostile, *LINUX_CPU)
    assert refused.exit_code == 1 and "config-invalid" in refused.stderr
    assert "defaults.network: a project's config cannot set the network" in refused.stderr
    assert "defaults.https-proxy" in refused.stderr and "Traceback" not in refused.stderr

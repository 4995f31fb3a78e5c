"""The trust boundary: a project from a git URL may not reach outside its container unless the user grants it.

Unit tests check the rules (envbuilder.run.trust) on real folders, sockets and symlinks; the docker-marked tests
serve a real repository over git smart HTTP on loopback and run `envbuilder run URL JOB` for real.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError, UsageError
from envbuilder.project.config import load_config
from envbuilder.project.jobs import Job
from envbuilder.run.trust import Trust, check_jobs, engine_sockets, parse_trust

REMOTE = Trust(remote=True)
LOCAL = Trust(remote=False)


def job(**fields) -> Job:
    return Job.model_validate({"command": "python train.py", **fields})


@pytest.fixture
def checkout(tmp_path) -> Path:
    root = tmp_path / "checkout"
    (root / "data").mkdir(parents=True)
    return root


def refused(jobs, checkout, trust=REMOTE, environ=None) -> EnvbuilderError:
    with pytest.raises(EnvbuilderError) as caught:
        check_jobs(jobs, checkout, trust, source="https://example.org/p.git", environ=environ or {})
    assert caught.value.code == "untrusted-config" and caught.value.exit_code == 2
    return caught.value


def test_a_remote_project_may_not_mount_the_hosts_root(checkout):
    error = refused({"train": job(mounts=["/:/hostroot:rw"])}, checkout)
    assert "job 'train' mounts /:/hostroot" in error.message
    assert "--trust docker-socket,mounts" in error.hint  # / holds the engine's socket too
    assert error.context["grants_needed"] == ["docker-socket", "mounts"]


def test_a_remote_project_may_not_mount_a_host_folder_outside_its_checkout(checkout, tmp_path):
    (tmp_path / "secrets").mkdir()
    error = refused({"train": job(mounts=[f"{tmp_path / 'secrets'}:/s"])}, checkout)
    assert error.hint.endswith("pass --allow-mounts")
    assert check_jobs({"train": job(mounts=[f"{tmp_path / 'secrets'}:/s"])}, checkout,
                      Trust(remote=True, grants=parse_trust([], allow_mounts=True)), source="x", environ={}) == []


def test_a_symlink_in_the_checkout_does_not_lead_out_of_it(checkout, tmp_path):
    (tmp_path / "home").mkdir()
    (checkout / "innocent").symlink_to(tmp_path / "home")
    refused({"train": job(mounts=["innocent:/data"])}, checkout)


def test_mounts_inside_the_checkout_need_no_grant(checkout):
    assert check_jobs({"train": job(mounts=["data:/data:rw", "./data:/data2"])}, checkout, REMOTE, source="x",
                      environ={}) == []


@pytest.mark.parametrize("source", ["/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run"])
def test_the_engine_socket_or_a_folder_holding_it_needs_its_own_grant(checkout, source):
    error = refused({"ci": job(mounts=[f"{source}:/var/run/docker.sock"])}, checkout,
                    Trust(remote=True, grants=frozenset({"mounts"})))
    assert "docker-socket" in error.hint and "engine socket" in error.message


def test_an_unknown_socket_is_caught_by_what_it_is(checkout, tmp_path):
    path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        refused({"ci": job(mounts=[f"{path}:/agent.sock"])}, checkout, Trust(remote=True, grants=frozenset({"mounts"})))
    finally:
        server.close()


def test_docker_host_in_the_environment_points_the_engine_socket_list(tmp_path):
    assert Path("/srv/engine.sock") in engine_sockets({"DOCKER_HOST": "unix:///srv/engine.sock"})
    assert Path("/run/user/1000/docker.sock") in engine_sockets({"XDG_RUNTIME_DIR": "/run/user/1000"})


@pytest.mark.parametrize("env", [{"DOCKER_HOST": "tcp://172.17.0.1:2375"}, {"SSH_AUTH_SOCK": "/tmp/agent"},
                                 {"SOCK": "/var/run/docker.sock"}])
def test_variables_that_point_at_host_services_need_the_env_grant(checkout, env):
    error = refused({"train": job(env=env)}, checkout)
    assert "--trust env" in error.hint
    assert check_jobs({"train": job(env=env)}, checkout, Trust(remote=True, grants=frozenset({"env"})), source="x",
                      environ={}) == []


def test_every_refusal_is_named_at_once(checkout):
    error = refused({"a": job(mounts=["/etc:/etc2"]), "b": job(env={"DOCKER_HOST": "tcp://h:2375"})}, checkout)
    assert "job 'a' mounts /etc:/etc2" in error.message and "job 'b' sets DOCKER_HOST" in error.message
    assert "--trust env,mounts" in error.hint


def test_a_local_project_keeps_its_powers_but_is_warned_about_the_socket_and_root(checkout):
    warnings = check_jobs({"ci": job(mounts=["/var/run/docker.sock:/var/run/docker.sock"]),
                           "backup": job(mounts=["/:/host:rw"]), "ok": job(mounts=["/etc:/etc2"])},
                          checkout, LOCAL, source=".", environ={})
    assert any("job 'ci'" in w and "full control of this machine" in w for w in warnings)
    assert any("job 'backup'" in w and "root folder" in w and "writable" in w for w in warnings)
    assert not any("'ok'" in w for w in warnings)


@pytest.mark.parametrize("values, allow, expected", [
    (["mounts"], False, {"mounts"}),
    (["mounts,env", "docker-socket"], False, {"mounts", "env", "docker-socket"}),
    (["all"], False, {"mounts", "env", "docker-socket"}),
    ([], True, {"mounts"}),
    ([" Mounts , "], False, {"mounts"}),
])
def test_trust_names(values, allow, expected):
    assert parse_trust(values, allow_mounts=allow) == frozenset(expected)


@pytest.mark.parametrize("value, says", [("network", "--network host"), ("privileged", "never starts one"),
                                         ("everything", "not something a project can be granted")])
def test_what_cannot_be_granted_is_explained(value, says):
    with pytest.raises(UsageError) as caught:
        parse_trust([value])
    assert says in caught.value.message


@pytest.mark.parametrize("key, value", [("privileged", "true"), ("network", '"host"'), ("devices", '["/dev/sda"]'),
                                        ("cap-add", '["SYS_ADMIN"]'), ("pid", '"host"'), ("ipc", '"host"')])
def test_the_config_has_no_key_for_host_namespaces_or_privileges(tmp_path, key, value):
    (tmp_path / "envbuilder.toml").write_text(f'[jobs.train]\ncommand = "python t.py"\n{key} = {value}\n')
    with pytest.raises(EnvbuilderError) as caught:
        load_config(tmp_path)
    assert caught.value.code == "config-invalid" and key in caught.value.message


# --- for real: a repository served over git smart HTTP on loopback, `envbuilder run URL JOB` ---------------


def _serve(tmp_path, jobs_toml: str):
    from support.git_server import GitHttpServer, http_backend

    if http_backend() is None or shutil.which("git") is None:
        pytest.skip("git and its http-backend are needed to serve a repository")
    work = tmp_path / "work"
    work.mkdir()
    (work / "pyproject.toml").write_text('[project]\nname = "hostile"\nversion = "0"\n' + textwrap.dedent(jobs_toml))
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    git = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", "-C", str(work)]
    for argv in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-qm", "one"]):
        subprocess.run([*git, *argv], check=True, env=env)
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "hostile.git")], check=True, env=env)
    return GitHttpServer(served)


@pytest.mark.docker
def test_run_url_refuses_a_root_mount_before_anything_runs(base_image, cli, tmp_path, docker_engine):
    marker = tmp_path / "pwned"
    with _serve(tmp_path, f"""
        [tool.envbuilder.jobs.evil]
        command = "sh -c 'touch /hostroot{marker}'"
        mounts = ["/:/hostroot:rw"]
        gpus = "none"
    """) as server:
        result = cli("run", server.url("hostile.git"), "evil", "--image", base_image, "--json")
    assert result.exit_code == 2, result.stderr
    assert json.loads(result.stdout)["code"] == "untrusted-config"
    assert "--trust docker-socket,mounts" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert cli("runs", "list", "--json").stdout.strip() == "[]"  # nothing ran, nothing was recorded


@pytest.mark.docker
def test_run_url_with_allow_mounts_runs_the_granted_mount(base_image, cli, tmp_path, docker_engine):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note.txt").write_text("granted")
    with _serve(tmp_path, f"""
        [tool.envbuilder.jobs.read]
        command = "cat /shared/note.txt"
        mounts = ["{shared}:/shared:ro"]
        gpus = "none"
    """) as server:
        url = server.url("hostile.git")
        assert cli("run", url, "read", "--image", base_image).exit_code == 2
        granted = cli("run", url, "read", "--image", base_image, "--allow-mounts")
    assert granted.exit_code == 0, granted.stderr
    assert "granted" in granted.stdout


@pytest.mark.docker
def test_a_local_job_mounting_the_docker_socket_runs_with_a_warning(base_image, cli, tmp_path, docker_engine):
    project = tmp_path / "local"
    project.mkdir()
    (project / "envbuilder.toml").write_text(textwrap.dedent("""
        [jobs.ci]
        command = "test -S /var/run/docker.sock"
        mounts = ["/var/run/docker.sock:/var/run/docker.sock"]
        gpus = "none"
    """))
    result = cli("run", str(project), "ci", "--image", base_image)
    assert result.exit_code == 0, result.stderr
    assert "envbuilder: warning: job 'ci' mounts /var/run/docker.sock" in result.stderr

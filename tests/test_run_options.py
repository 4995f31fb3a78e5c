"""The usual container options of `run` and `shell` (#10): --publish, --cpus, --memory, --env-file, --detach,
-it, `run --image` pulling, the run id printed first, the build display, and progress bars redrawn with
carriage returns. Over the shared FakeEngine and the CLI in-process; the real engine is tests/test_run_options_docker.py.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

from envbuilder.docker.sdk_engine import _port_bindings
from envbuilder.docker.socket_engine import _add_ports_and_limits, _create_body
from envbuilder.docker.streams import split_lines
from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import LABEL_RUN_ID
from envbuilder.run.container import execute_run
from envbuilder.run.detach import spec_from_json, spec_to_json
from envbuilder.run.flags import (
    PublishedPort,
    load_env_files,
    parse_cpus,
    parse_env_file,
    parse_memory,
    parse_publish_arg,
)
from envbuilder.run.interactive import docker_cli_argv
from envbuilder.run.spec import RunOptions, run_spec
from envbuilder.run.store import RunStore

IMAGE = "envbuilder/base-python:3.11-bookworm"


def no_gpu() -> bool:
    return False


@pytest.fixture
def engine(fake_engine):
    """The engine the CLI opens, with the base image in it."""
    fake_engine.add_image(IMAGE)
    return fake_engine


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    return folder


# --- the flags, parsed ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("8080:80", PublishedPort(8080, 80)),
    ("127.0.0.1:6006:6006", PublishedPort(6006, 6006, "tcp", "127.0.0.1")),
    ("[::1]:8888:8888/udp", PublishedPort(8888, 8888, "udp", "::1")),
    ("9000:9000/TCP", PublishedPort(9000, 9000)),
])
def test_publish_reads_docker_run_p_forms(text, expected):
    assert parse_publish_arg(text) == expected


@pytest.mark.parametrize("text", ["80", "0:80", "70000:80", "a:80", "8000-8010:8000-8010", "8080:80/sctp",
                                  "host:8080:80", "1.2.3.4:5:6:7", "[::1:80:80"])
def test_a_bad_publish_names_the_syntax(text):
    with pytest.raises(EnvbuilderError) as err:
        parse_publish_arg(text)
    assert err.value.code == "bad-publish" and "[IP:]HOST:CONTAINER" in err.value.message


def test_one_host_port_published_twice_is_refused(project):
    twice = RunOptions(publish=(parse_publish_arg("8080:80"), parse_publish_arg("8080:81")))
    with pytest.raises(EnvbuilderError, match="published twice"):
        run_spec(IMAGE, project, command=["true"], options=twice, has_nvidia=no_gpu)


@pytest.mark.parametrize("parse, text, ok", [
    (parse_cpus, "2", 2.0), (parse_cpus, "0.5", 0.5), (parse_cpus, "0", None), (parse_cpus, "-1", None),
    (parse_cpus, "two", None), (parse_cpus, "nan", None), (parse_cpus, "inf", None),
    (parse_memory, "8g", "8g"), (parse_memory, "512M", "512m"), (parse_memory, "6m", "6m"), (parse_memory, "1m", None),
    (parse_memory, "lots", None),
])
def test_cpus_and_memory(parse, text, ok):
    if ok is None:
        with pytest.raises(EnvbuilderError) as err:
            parse(text)
        assert err.value.code == {parse_cpus: "bad-cpus", parse_memory: "bad-memory"}[parse]
    else:
        assert parse(text) == ok


def test_env_file_reads_docker_env_file_syntax():
    text = "\ufeff# a comment\nA=1\n\n  B = spaced\nC=\"quoted\"\nFROM_HOST\nUNSET_HERE\nD=x=y\nE=\n"
    env, bad = parse_env_file(text.lstrip("\ufeff"), {"FROM_HOST": "h"})
    # a value is taken as written, quotes included, as `docker run --env-file` takes it
    assert env == {"A": "1", "C": '"quoted"', "FROM_HOST": "h", "D": "x=y", "E": ""}
    assert bad == [(4, "'B ' is not a variable name")]


def test_bad_env_file_lines_are_refused_with_their_line_numbers_and_no_values(tmp_path):
    env_file = tmp_path / "job.env"
    env_file.write_text("OK=1\nexport TOKEN=s3cret\n1ST=x\njust words here\n")
    with pytest.raises(EnvbuilderError) as err:
        load_env_files([env_file])
    message = err.value.message
    assert err.value.code == "bad-env-file"
    assert f"{env_file}:2:" in message and f"{env_file}:3:" in message and f"{env_file}:4:" in message
    assert "s3cret" not in message  # a value may be a secret: never echoed


def test_a_missing_env_file_is_one_clear_error(tmp_path):
    with pytest.raises(EnvbuilderError) as err:
        load_env_files([tmp_path / "nope.env"])
    assert err.value.code == "env-file-unreadable"


# --- what reaches the engine --------------------------------------------------------------------------


def test_publish_cpus_memory_and_env_file_reach_the_engine_and_the_record(cli, tmp_path, engine, project):
    (tmp_path / "a.env").write_text("X=from-a\nY=from-a\n")
    result = cli("run", str(project), "--image", IMAGE, "-p", "127.0.0.1:8080:80", "--publish", "9000:9000/udp",
                 "--cpus", "1.5", "--memory", "512m", "--env-file", str(tmp_path / "a.env"), "--env", "Y=flag",
                 "--json", "--", "python", "serve.py")
    assert result.exit_code == 0, result.stderr
    options = engine.started[0].options  # kept after the run removed its container
    assert options["ports"] == [("127.0.0.1", 8080, 80, "tcp"), ("", 9000, 9000, "udp")]
    assert options["cpus"] == 1.5 and options["memory"] == "512m"
    assert options["env"]["X"] == "from-a" and options["env"]["Y"] == "flag"
    run_id = json.loads(result.stdout)["run_id"]
    record = cli("runs", "show", run_id, "--json")
    args = json.loads(record.stdout)["args"]
    assert args["publish"] == ["127.0.0.1:8080:80/tcp", "9000:9000/udp"]
    assert args["cpus"] == 1.5 and args["memory"] == "512m"


def test_the_socket_engine_sends_what_docker_run_sends():
    body = _create_body(IMAGE, ["true"], mounts=(), env=None, user=None, workdir=None, gpus=None, shm_size=None,
                        labels=None, network=None, attach=False)
    _add_ports_and_limits(body, [("127.0.0.1", 8080, 80, "tcp"), ("", 8081, 80, "tcp")], 0.5, "1g")
    assert body["ExposedPorts"] == {"80/tcp": {}}
    assert body["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"},
                                                             {"HostIp": "", "HostPort": "8081"}]}
    assert body["HostConfig"]["NanoCpus"] == 500_000_000 and body["HostConfig"]["Memory"] == 1024**3


def test_the_sdk_engine_gets_the_same_bindings():
    assert _port_bindings([("127.0.0.1", 8080, 80, "tcp"), ("", 53, 53, "udp")]) == {
        "80/tcp": [("127.0.0.1", 8080)], "53/udp": [("", 53)]}


@pytest.mark.parametrize("flag", ["publish", "cpus", "memory", "env-file"])
def test_a_project_config_cannot_set_the_container_flags(tmp_path, flag):
    """They are flags only: a project (from a git URL, untrusted) cannot publish ports or lift limits."""
    from envbuilder.project.config import load_config

    (tmp_path / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "p"
        version = "0"
        [tool.envbuilder.jobs.train]
        command = ["python", "train.py"]
        {flag} = "8080:80"
    """))
    with pytest.raises(EnvbuilderError) as err:
        load_config(tmp_path)
    assert flag in str(err.value)


def test_a_bad_flag_fails_before_anything_is_built_in_one_line(cli, engine, project, tmp_path):
    (tmp_path / "bad.env").write_text("GOOD=1\nnot a line\n")
    for args, code in ((["--publish", "80"], "bad-publish"), (["--cpus", "0"], "bad-cpus"),
                       (["--memory", "1k"], "bad-memory"), (["--env-file", str(tmp_path / "bad.env")], "bad-env-file")):
        result = cli("run", str(project), *args, "--", "true")
        assert result.exit_code == 1, (args, result.stderr)
        assert result.stderr.startswith(f"envbuilder: {code}:") and result.stderr.count("\n") == 1, result.stderr
    assert not engine.builds and not [c for c in engine.calls if c[0] == "run_detached"]


def test_detach_and_interactive_exclude_each_other(cli, project):
    result = cli("run", str(project), "-d", "-it", "--", "bash")
    assert result.exit_code == 2 and "--detach and -i/-t" in result.stderr


# --- the run id first, pulls, the build display --------------------------------------------------------


def test_the_run_id_is_printed_when_the_run_starts(cli, engine, project):
    engine.script(["job says hi"])
    result = cli("run", str(project), "--image", IMAGE, "--", "python", "x.py")
    assert result.exit_code == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("run r-") and "started" in first and "log:" in first
    run_id = first.split()[1]
    assert f"completed run {run_id}" in result.stderr  # and again in the summary at the end


def test_run_image_pulls_an_image_that_is_not_here_and_says_so(cli, fake_engine, project):
    engine = fake_engine
    engine.registry["registry.example:5000/team/train:v1"] = {"Id": "sha256:" + "1" * 64,
                                                              "Config": {"Labels": {}, "Env": []}}
    result = cli("run", str(project), "--image", "registry.example:5000/team/train:v1", "--", "true")
    assert result.exit_code == 0, result.stderr
    assert "envbuilder: pulling registry.example:5000/team/train:v1 (not here yet)" in result.stderr.splitlines()
    assert ("pull", "registry.example:5000/team/train:v1") in engine.calls


def test_a_failed_pull_is_the_diagnosed_error(cli, fake_engine, project):
    result = cli("run", str(project), "--image", "nobody/nothing:1", "--", "true")
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].startswith(
        "envbuilder: image-not-found: pulling nobody/nothing:1 (not available locally) failed")
    assert "Hint:" in result.stderr and "Traceback" not in result.stderr


def test_run_shows_its_build_with_the_build_display(cli, fake_engine, project):
    """Off a terminal, `build`'s display prints the step headers; the job's output follows, below it."""
    engine = fake_engine
    engine.add_image(IMAGE, env=["PYTHON_VERSION=3.11.9"])  # the base image's Python, as the real one says it
    engine.build_lines = ["#5 [torch 1/1] RUN uv pip install torch", "#5 0.512 Downloading torch", "#5 DONE 1.2s"]
    engine.script(["from the job"])
    (project / "pyproject.toml").write_text('[project]\nname = "proj"\nversion = "0"\ndependencies = []\n')
    result = cli("run", str(project), "--base-image", IMAGE, "--", "python", "x.py")
    assert result.exit_code == 0, result.stderr
    assert "#5 [torch 1/1] RUN uv pip install torch" in result.stderr
    assert "#5 0.512 Downloading torch" not in result.stderr  # a step's own output is for -v
    assert result.stdout == "from the job\n"


# --- progress bars redrawn with carriage returns --------------------------------------------------------


def test_a_redrawn_line_is_one_line_in_its_last_state_and_each_state_is_shown_live():
    live: list[str] = []
    frames = [(1, b"epoch 1\r\n"), (1, b"\r  0%|          | 0/3"), (1, b"\r 33%|###       | 1/3"),
              (2, b"a warning\n"), (1, b"\r 66%|######    | 2"), (1, b"/3\r100%|##########| 3/3"), (1, b"\n")]
    assert list(split_lines(frames, live.append)) == ["epoch 1", "a warning", "100%|##########| 3/3"]
    assert live == ["  0%|          | 0/3", " 33%|###       | 1/3", " 66%|######    | 2", "100%|##########| 3/3"]


def test_a_bar_redrawn_for_ever_keeps_one_state_in_memory():
    def frames():
        for i in range(100_000):
            yield 1, f"\r{i:>6} batches".encode()
        yield 1, b"\n"

    assert list(split_lines(frames())) == [" 99999 batches"]


def test_the_log_keeps_the_last_state_and_the_live_display_sees_each(tmp_path, project):
    engine = FakeEngine()
    engine.add_image(IMAGE)
    engine.script(["start", "\r 10%|#    \r 50%|##### \r100%|##########| loss=0.3", "done"])
    store = RunStore(tmp_path / "runs.db", tmp_path / "runs")
    live: list[str] = []
    lines: list[str] = []
    spec = run_spec(IMAGE, project, command=["python", "train.py"], options=RunOptions(artifacts_dir=tmp_path / "a"),
                    has_nvidia=no_gpu)
    result = execute_run(spec, docker=engine, store=store, on_line=lines.append, on_progress=live.append)
    assert Path(result.log_path).read_text() == "start\n100%|##########| loss=0.3\ndone\n"
    assert lines == ["start", "100%|##########| loss=0.3", "done"]
    assert live == [" 10%|#    ", " 50%|##### "]
    assert result.metrics == {"loss": 0.3}


# --- detached runs: what the watcher is told ------------------------------------------------------------


def test_the_watcher_is_told_the_spec_without_its_environment(tmp_path, project):
    spec = run_spec(IMAGE, project, command=["python", "train.py"],
                    options=RunOptions(env={"API_TOKEN": "s3cret"}, artifacts_dir=tmp_path / "a", memory="1g",
                                       stop_on_nan=True, mode="detached"), has_nvidia=no_gpu)
    sent = json.dumps(spec_to_json(spec))
    assert "s3cret" not in sent and "API_TOKEN" not in sent
    back = spec_from_json(json.loads(sent))
    assert (back.image, back.argv, back.artifacts_dir, back.memory, back.stop_on_nan, back.user) == (
        spec.image, spec.argv, spec.artifacts_dir, spec.memory, spec.stop_on_nan, spec.user)


def test_the_watcher_records_a_detached_run_as_an_attached_one_would_be(tmp_path, project):
    from envbuilder.run.container import start_container
    from envbuilder.run.watcher import watch

    engine = FakeEngine()
    engine.add_image(IMAGE)
    engine.script(["step 1 loss=0.5", "step 2 loss=0.25"])
    store = RunStore(tmp_path / "runs.db", tmp_path / "runs")
    spec = run_spec(IMAGE, project, command=["python", "train.py"],
                    options=RunOptions(artifacts_dir=tmp_path / "a", mode="detached"),
                    has_nvidia=no_gpu)._replace(run_id="r-20260101-000000-abcd")
    record, container = start_container(spec, engine, store, attach=False)
    payload = json.loads(json.dumps({"run_id": record.id, "container": container, "store": str(store.path),
                                     "runs_dir": str(store.runs_dir), "spec": spec_to_json(spec)}))
    result = watch(payload, docker=engine, store=store)
    assert result.status == "completed" and result.metrics == {"loss": 0.25}
    assert store.get(record.id).status == "completed"
    assert Path(record.log_path).read_text() == "step 1 loss=0.5\nstep 2 loss=0.25\n"
    assert ("remove_container", container) in engine.calls


# --- interactive runs: the docker CLI command line ------------------------------------------------------


def test_an_interactive_run_is_the_same_container_through_the_docker_cli(tmp_path, project):
    data = tmp_path / "data, with a comma"
    data.mkdir()
    spec = run_spec(IMAGE, project, command=["bash"],
                    options=RunOptions(mounts=(f"{data}:/data",), env={"API_TOKEN": "s3cret", "HOME": "/tmp"},
                                       artifacts_dir=tmp_path / "a", publish=(parse_publish_arg("8888:8888"),),
                                       cpus=2.0, memory="4g", mode="interactive"), has_nvidia=no_gpu)
    argv, env = docker_cli_argv(spec, "r-1", docker="/usr/bin/docker", tty=True)
    assert argv[:6] == ["/usr/bin/docker", "run", "--rm", "-i", "-t", "--init"]
    assert argv[-2:] == [IMAGE, "bash"]
    joined = " ".join(argv)
    assert "s3cret" not in joined and env["API_TOKEN"] == "s3cret"  # the value through the CLI's environment
    assert "HOME" not in env
    assert "--env API_TOKEN" in joined and "--env HOME=/tmp" in joined  # HOME would move the CLI's own config
    assert f"type=bind,source={project},target=/workspace/project,readonly" in argv
    assert f'type=bind,"source={data}",target=/data,readonly' in argv  # --mount is CSV: a comma is quoted
    assert f"type=bind,source={tmp_path / 'a'},target=/artifacts" in argv
    for flag, value in (("--user", spec.user), ("--workdir", "/workspace/project"), ("--publish", "8888:8888/tcp"),
                        ("--cpus", "2"), ("--memory", "4g"), ("--label", f"{LABEL_RUN_ID}=r-1")):
        assert value in [argv[i + 1] for i, arg in enumerate(argv) if arg == flag], (flag, value)
    assert "-t" not in docker_cli_argv(spec, "r-1", docker="docker", tty=False)[0]  # stdin a pipe: no TTY


def test_shell_without_a_docker_cli_says_so(cli, engine, project, monkeypatch):
    monkeypatch.setenv("PATH", str(project))  # no docker here
    result = cli("shell", str(project), "--image", IMAGE)
    assert result.exit_code == 4
    assert result.stderr.splitlines()[-1].startswith("envbuilder: docker-cli-missing:")


def test_on_a_terminal_a_redrawn_bar_is_rewritten_in_place(monkeypatch):
    import io

    from envbuilder.cli.run_flow import JobOutput

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr("sys.stdout", screen)
    output = JobOutput(err=False)
    output.REDRAW_S = 0.0
    assert output.live
    output.line("epoch 1")
    output.progress(" 50%|#####")
    output.progress("100%|##########")
    output.line("100%|########## done")
    assert screen.getvalue() == ("epoch 1\n\r\x1b[K 50%|#####\r\x1b[K100%|##########"
                                 "\r\x1b[K100%|########## done\n")

"""execute_run (the RunSpec executor), stop_run and reconcile_runs against a real Docker engine.

The image is the bootstrapped Debian base (Python, no torch), so these run in seconds: the jobs are small
Python programs that print metric lines, sleep, trap SIGTERM or exit non-zero. The torch example runs in
tests/test_example_e2e.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import json
import textwrap
import threading
import time
from pathlib import Path

import pytest

from envbuilder.project.config import Job
from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import LABEL_RUN_ID
from envbuilder.run.container import execute_run, reconcile_runs, stop_run
from envbuilder.run.spec import RunOptions, run_spec
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

pytestmark = pytest.mark.docker

JOBS = {
    "metrics.py": """
        import sys
        for epoch in range(1, 4):
            print(f"epoch {epoch}/3 loss={1.0 / epoch:.3f} val_loss={1.2 / epoch:.3f} lr=1e-3", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
    """,
    "fail.py": """
        print("about to fail", flush=True)
        raise SystemExit(3)
    """,
    "slow.py": """
        import signal, sys, time
        stop = []
        signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
        for step in range(1, 600):
            time.sleep(0.1)  # one "step"; SIGTERM lets it finish
            print(f"step={step} loss={1.0 / step:.4f}", flush=True)
            if stop:
                print("SIGTERM: finished the step, checkpointing", flush=True)
                open("/artifacts/checkpoint.txt", "w").write(str(step))
                sys.exit(143)
    """,
    "workers.py": """
        import multiprocessing as mp, os
        ctx = mp.get_context("fork")  # DataLoader workers: forked processes, SemLock on /dev/shm
        barrier = ctx.Barrier(2)
        def meet(x):
            barrier.wait(timeout=20)  # both workers must be alive at once
            return x * x, os.getpid()
        if __name__ == "__main__":
            st = os.statvfs("/dev/shm")
            print(f"shm_bytes={st.f_frsize * st.f_blocks}", flush=True)
            with ctx.Pool(2) as pool:
                results = pool.map(meet, range(2), chunksize=1)
            print(f"workers={len({pid for _, pid in results})} total={sum(v for v, _ in results)}", flush=True)
    """,
    "files.py": """
        import os, sys
        open("/artifacts/out.txt", "w").write("hello")
        try:
            open("/workspace/project/written.txt", "w").write("x")
            print("project writable", flush=True)
        except OSError:
            print("project read-only", flush=True)
        print("uid", os.getuid(), "home", os.environ["HOME"], "argv", sys.argv[1:], flush=True)
    """,
}


@pytest.fixture(scope="module")
def docker_client():
    from envbuilder.docker.engine import Docker

    return Docker()


@pytest.fixture(scope="module")
def image(docker_client):
    from envbuilder.build.base import bootstrap_base

    return bootstrap_base(docker_client).name


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    for name, body in JOBS.items():
        (root / name).write_text(textwrap.dedent(body))
    return root


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(tmp_path / "home")


@pytest.fixture
def store(settings) -> RunStore:
    return RunStore.from_settings(settings)


def job(command: str, **extra) -> Job:
    return Job.model_validate({"command": command, "gpus": "none", **extra})


def containers_of(docker_client, run_id: str) -> list:
    return docker_client.client.containers.list(all=True, filters={"label": f"{LABEL_RUN_ID}={run_id}"})


def run(image, project, settings, docker_client, store, the_job, *, job_name="test", on_line=None, user=None,
        grace_s=None, command=(), args=(), **options):
    spec = run_spec(image, project, job=the_job, job_name=job_name, command=command,
                    options=RunOptions(args=tuple(args), **options), has_nvidia=lambda: False)
    # The spec is a value: a test runs it as another user, or with a shorter grace, by replacing a field.
    spec = spec._replace(**{k: v for k, v in (("user", user), ("grace_s", grace_s)) if v is not None})
    return execute_run(spec, docker=docker_client, store=store, on_line=on_line)


def test_completed_run_records_metrics_and_log(image, project, settings, docker_client, store):
    lines: list[str] = []
    result = run(image, project, settings, docker_client, store, job("python metrics.py"), on_line=lines.append)
    assert (result.status, result.exit_code) == ("completed", 0)
    assert result.metrics == {"epoch": 3.0, "loss": pytest.approx(0.333), "val_loss": pytest.approx(0.4), "lr": 1e-3}
    record = store.get(result.run_id)
    assert record.status == "completed" and record.exit_code == 0 and record.container_id
    series = store.metric_series(result.run_id)
    assert series["loss"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(0.333))]
    # Docker keeps stdout and stderr apart: their lines interleave in no guaranteed order.
    assert "to stderr" in lines and [ln for ln in lines if ln.startswith("epoch")][0].startswith("epoch 1/3")
    assert result.log_path.read_text().splitlines() == lines
    assert containers_of(docker_client, result.run_id) == []


def test_failing_job_records_its_exit_code(image, project, settings, docker_client, store):
    result = run(image, project, settings, docker_client, store, job("python fail.py"))
    assert (result.status, result.exit_code) == ("failed", 3)
    record = store.get(result.run_id)
    assert (record.status, record.exit_code) == ("failed", 3)
    assert "exited with 3" in record.error
    assert containers_of(docker_client, result.run_id) == []


def _wait_for_container(store, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [r for r in store.list_runs(status="running") if r.container_id]
        if running:
            return running[0]
        time.sleep(0.05)
    raise AssertionError("the run never got a container")


def test_stop_mid_run_lets_the_step_finish_and_leaves_no_container(image, project, settings, docker_client, store):
    outcome: dict = {}
    lines: list[str] = []
    worker = threading.Thread(target=lambda: outcome.update(result=run(
        image, project, settings, docker_client, store, job("python slow.py"), on_line=lines.append)))
    worker.start()
    record = _wait_for_container(store)
    while not any(line.startswith("step=") for line in lines):
        time.sleep(0.05)
    stopped = stop_run(store, record.id, grace_s=10, settings=settings, docker=docker_client)
    worker.join(30)
    result = outcome["result"]
    assert stopped.status == "stopped" and result.status == "stopped"
    assert result.exit_code == 143  # the job's own exit after its SIGTERM handler, not a SIGKILL
    assert "SIGTERM: finished the step, checkpointing" in lines
    assert (result.artifacts_dir / "checkpoint.txt").read_text().isdigit()
    assert store.get(record.id).stop_requested_at is not None
    assert containers_of(docker_client, record.id) == []


def test_ctrl_c_stops_records_and_removes_the_container(image, project, settings, docker_client, store):
    seen: list[str] = []

    def interrupt_on_first_step(line: str) -> None:
        seen.append(line)
        if line.startswith("step="):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(image, project, settings, docker_client, store, job("python slow.py"), on_line=interrupt_on_first_step,
            grace_s=5)
    [record] = store.list_runs()
    assert record.status == "stopped" and record.exit_code == 143
    assert containers_of(docker_client, record.id) == []


def test_killed_run_is_reconciled_to_failed(image, project, settings, docker_client, store):
    # A runner process that dies (host crash) and a container killed behind its back (`docker kill`).
    runner = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from envbuilder.project.config import Job
        from envbuilder.docker.engine import Docker
        from envbuilder.run.container import execute_run
        from envbuilder.run.spec import run_spec
        from envbuilder.run.store import RunStore
        from envbuilder.settings import Settings
        settings = Settings(Path({str(settings.data_dir)!r}))
        spec = run_spec({image!r}, Path({str(project)!r}), job=Job(command=["python", "slow.py"], gpus="none"),
                        job_name="victim", has_nvidia=lambda: False)
        execute_run(spec, docker=Docker(), store=RunStore.from_settings(settings))
    """)])
    try:
        record = _wait_for_container(store)
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        assert reconcile_runs(store, settings, docker_client) == []  # the container still runs: not ours to judge
        logged_by_runner = len(Path(record.log_path).read_text().splitlines())
        time.sleep(1.0)  # the job goes on printing steps that no runner sees
        docker_client.client.api.kill(record.container_id)
        assert reconcile_runs(store, settings, docker_client) == [record.id]
        reconciled = store.get(record.id)
        assert (reconciled.status, reconciled.exit_code) == ("failed", 137)
        assert "no envbuilder process was watching" in reconciled.error
        log = Path(record.log_path).read_text().splitlines()
        assert len(log) > logged_by_runner and log[-1].startswith("step=")  # the unwatched steps were salvaged
        assert store.metric_series(record.id)["loss"][-1][0] == int(log[-1].split()[0].split("=")[1])
        assert containers_of(docker_client, record.id) == []  # and the container is gone
    finally:
        if runner.poll() is None:
            runner.kill()
        for container in containers_of(docker_client, store.list_runs()[0].id):
            container.remove(force=True)


def test_a_job_past_its_timeout_is_stopped_and_failed(image, project, settings, docker_client, store):
    result = run(image, project, settings, docker_client, store, job("python slow.py", timeout=1))
    assert (result.status, result.exit_code) == ("failed", 143)
    assert result.message == "ran past its timeout of 1 s and was stopped"
    assert 1 <= result.duration_s < 10
    assert containers_of(docker_client, result.run_id) == []


def test_dataloader_style_workers_and_shm(image, project, settings, docker_client, store):
    lines: list[str] = []
    result = run(image, project, settings, docker_client, store, job("python workers.py", **{"shm-size": "256m"}),
                 on_line=lines.append)
    assert result.status == "completed", lines
    assert f"shm_bytes={256 * 1024 * 1024}" in lines
    assert "workers=2 total=1" in lines


def test_artifacts_belong_to_the_caller_and_the_project_is_read_only(image, project, settings, docker_client, store, tmp_path):
    artifacts = tmp_path / "artifacts-1234"
    artifacts.mkdir()
    os.chown(artifacts, 1234, 1234)
    lines: list[str] = []
    result = run(image, project, settings, docker_client, store, job("python files.py"), artifacts_dir=artifacts,
                 user="1234:1234", on_line=lines.append, resume_from=None, args=["--flag", "x"])
    assert result.status == "completed", lines
    assert (artifacts / "out.txt").stat().st_uid == 1234
    assert "project read-only" in lines
    assert "uid 1234 home /tmp argv ['--flag', 'x']" in lines

    lines.clear()
    result = run(image, project, settings, docker_client, store, job("python files.py", **{"resume-arg": "--resume {checkpoint}"}),
                 read_only_project=False, on_line=lines.append, resume_from=str(project / "metrics.py"))
    assert "project writable" in lines
    assert (project / "written.txt").stat().st_uid == os.getuid()
    assert (result.artifacts_dir / "out.txt").stat().st_uid == os.getuid()
    assert "argv ['--resume', '/workspace/project/metrics.py']" in lines[-1]
    assert store.get(result.run_id).args["args"] == ["--resume", "/workspace/project/metrics.py"]


def test_command_run_without_a_job(image, project, settings, docker_client, store):
    result = run(image, project, settings, docker_client, store, None, job_name=None,
                 command=["python", "-c", "print('loss=0.25')"], gpus="none")
    assert result.status == "completed" and result.metrics == {"loss": 0.25} and result.artifacts_dir is None


def test_gpus_without_the_nvidia_runtime_is_a_clear_error(image, project, settings, docker_client, store):
    with pytest.raises(EnvbuilderError) as err:
        run(image, project, settings, docker_client, store, job("python metrics.py"), gpus="all")
    assert err.value.code == "nvidia-runtime-missing"
    [record] = store.list_runs()
    assert record.status == "failed" and "nvidia-runtime-missing" in record.error
    assert containers_of(docker_client, record.id) == []  # the engine created it, then refused to start it


def test_run_with_an_image_records_the_run_without_importing_pydantic(image, project, settings):
    # `run --image` is the hot path: no plan, so no pydantic models (~0.1 s of start-up); the run is still recorded.
    probe = ("import sys\nfrom envbuilder.cli import main\n"
             f"rc = main(['--data-dir', {str(settings.data_dir)!r}, 'run', {str(project)!r}, '--image', {image!r},"
             " '--', 'python', '-c', 'print(\"loss=0.5\")'])\n"
             "print(rc, sorted(m for m in ('pydantic', 'envbuilder.resolve.plan', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []", out
    [record] = RunStore.from_settings(settings).list_runs()
    assert record.status == "completed" and record.exit_code == 0 and record.container_id
    assert "loss=0.5" in Path(record.log_path).read_text()
    assert [value for _, value in RunStore.from_settings(settings).metric_series(record.id)["loss"]] == [0.5]


def test_run_with_an_image_on_the_local_engine_never_imports_the_docker_sdk(image, project, settings):
    # The SDK's import (requests, urllib3: ~0.1-0.15 s) alone exceeds the run path's budget; a local engine is
    # reached over its socket with the standard library (envbuilder.docker.engine.EngineSocket).
    probe = ("import sys\nfrom envbuilder.cli import main\n"
             f"rc = main(['--data-dir', {str(settings.data_dir)!r}, 'run', {str(project)!r}, '--image', {image!r},"
             " '--', 'true'])\n"
             "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('docker', 'requests', 'urllib3')))")
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "0 []", out
    [record] = RunStore.from_settings(settings).list_runs()
    assert record.status == "completed" and record.exit_code == 0 and record.container_id


@pytest.mark.parametrize("transport", ["socket", "sdk"])
def test_no_line_is_lost_even_when_the_log_follow_drops_some(image, project, settings, store, monkeypatch, transport):
    """A loaded engine can end a logs follow before the last lines (moby/moby#43860): make it happen on purpose.
    The socket transport attaches before start and never follows logs; the SDK one reads the output again."""
    from envbuilder.docker.engine import Docker

    docker_client = Docker(transport=transport)
    real_stream_logs = docker_client.stream_logs

    def lossy_stream_logs(container_id, on_line):
        lines: list[str] = []
        real_stream_logs(container_id, lines.append)
        for line in lines[:1200]:
            on_line(line)

    monkeypatch.setattr(docker_client, "stream_logs", lossy_stream_logs)
    script = "for i in range(3000): print(f'step {i} loss={1 / (i + 1):.6f}')\nprint('done: val_loss=0.125')"
    result = run(image, project, settings, docker_client, store, None, job_name=None, command=["python", "-c", script],
                 gpus="none")
    assert result.status == "completed"
    lines = result.log_path.read_text().splitlines()
    assert len(lines) == 3001 and lines[-1] == "done: val_loss=0.125"
    series = store.metric_series(result.run_id)
    assert series["val_loss"][-1][1] == 0.125 and len(series["loss"]) == 3000


def test_sigterm_to_envbuilder_stops_the_job_and_records_it(image, project, settings, docker_client, store):
    """CI cancelling a job, `timeout`, systemd: SIGTERM to envbuilder itself takes Ctrl-C's clean path."""
    runner = subprocess.Popen([sys.executable, "-m", "envbuilder", "--data-dir", str(settings.data_dir), "run", str(project),
                               "--image", image, "--gpus", "none", "--artifacts", str(project / "artifacts"),
                               "--", "python", "slow.py"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        record = _wait_for_container(store)
        deadline = time.monotonic() + 30
        while "step=" not in Path(record.log_path).read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # the job has installed its SIGTERM handler once it prints steps
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    final = store.get(record.id)
    assert final.status == "stopped" and final.exit_code == 143  # the job finished its step on SIGTERM
    assert "SIGTERM: finished the step" in Path(final.log_path).read_text()
    assert containers_of(docker_client, record.id) == []


def test_run_and_pipeline_take_a_git_url_and_ref(image, cli, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "fromgit"
        version = "0"
        [tool.envbuilder.jobs.hello]
        command = "python -c 'print(\\"loss=0.5 from git\\")'"
        gpus = "none"
    """))
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    for argv in (["init", "-q"], ["add", "."], ["commit", "-qm", "one"], ["tag", "v1"]):
        subprocess.run([*git, *argv], check=True)
    result = cli("run", f"file://{repo}", "hello", "--ref", "v1", "--image", image, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    piped = cli("pipeline", f"file://{repo}", "--ref", "v1", "--image", image, "--json")
    assert piped.exit_code == 0, piped.stderr
    assert [r["status"] for r in json.loads(piped.stdout)["runs"]] == ["completed"]

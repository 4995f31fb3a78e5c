"""Faults under a run, with real components: a damaged runs.sqlite3, a full file system (tmpfs), an engine that
dies (a private Docker engine in its own network namespace), a runner killed or interrupted twice.

Nothing here touches the shared engine's daemon: the engine-death tests start their own (tests/support/
private_engine.py). The tmpfs and private-engine tests need root and are skipped with that reason otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.run.container import execute_run, reconcile_runs, stop_run
from envbuilder.run.faults import database_problem, describe, is_disk_full
from envbuilder.run.hints import job_hint
from envbuilder.run.spec import run_spec
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings
from support.fake_engine import FakeEngine

DATA = Path(__file__).parent / "data" / "faults"
IMAGE = "envbuilder/base-python:3.11-bookworm"
DEAD_PID = 2**22 + 1  # above Linux's pid_max default: no such process


def spec_for(project: Path, command: tuple[str, ...] = ("python", "train.py")):
    return run_spec("img", project, command=command, has_nvidia=lambda: False)


def settle_as_crashed(store: RunStore, run_id: str) -> None:
    """Make the run's owner a process that no longer exists (its runner was SIGKILLed)."""
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET owner_pid = ? WHERE id = ?", (DEAD_PID, run_id))


# --- a damaged run database ---------------------------------------------------------------------------------


def _healthy_store(home: Path) -> bytes:
    store = RunStore.from_settings(Settings(home))
    record = store.start_run("p", ["true"])
    store.finish_run(record.id, "completed", 0)
    store.close()
    return (home / "runs.sqlite3").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "folder", "cut-header"])
def test_a_damaged_database_is_moved_aside_and_a_new_one_started(cli, tmp_path, damage):
    home = tmp_path / "envbuilder-home"
    good = _healthy_store(home)
    db = home / "runs.sqlite3"
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    if damage == "truncated":
        original = good[: len(good) // 2]
        db.write_bytes(original)  # the header claims more pages than the file holds
    elif damage == "garbage":
        original = os.urandom(8192)
        db.write_bytes(original)
    elif damage == "cut-header":
        original = good[:60]
        db.write_bytes(original)
    else:
        db.unlink()
        db.mkdir()
        (db / "inside.txt").write_text("keep me")
        original = None
    result = cli("runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert f"the run database {db} was damaged" in result.stderr and "internal error" not in result.stderr
    [backup] = [p for p in home.iterdir() if p.name.startswith("runs.sqlite3.damaged-")]
    assert str(backup) in result.stderr
    if original is None:
        assert (backup / "inside.txt").read_text() == "keep me"
    else:
        assert backup.read_bytes() == original  # never silently lost
    store = RunStore.from_settings(Settings(home))  # the new store works
    assert store.get(store.start_run("p", ["true"]).id).status == "running"


def test_a_truncated_file_is_told_from_a_healthy_one(tmp_path):
    good = _healthy_store(tmp_path)
    db = tmp_path / "runs.sqlite3"
    assert database_problem(db) is None
    db.write_bytes(good[: len(good) - 4096])
    assert "cut short" in database_problem(db)


def test_damage_found_while_reading_is_recovered_too(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path))
    for _ in range(30):
        record = store.start_run("p", ["x" * 2000])  # several pages of rows
    store.close()
    for side in ("-wal", "-shm"):
        Path(f"{store.path}{side}").unlink(missing_ok=True)
    data = bytearray(store.path.read_bytes())
    page = 4096
    data[page:] = b"\xff" * (len(data) - page)  # every b-tree page overwritten; the header stays valid
    store.path.write_bytes(bytes(data))
    notices: list[str] = []
    fresh = RunStore.from_settings(Settings(tmp_path), on_notice=notices.append)
    assert fresh.list_runs() == []
    assert notices and "was damaged" in notices[0] and "malformed" in notices[0]
    assert record.id  # the old runs are in the backup, not here


# --- the run is recorded before its container starts -----------------------------------------------------------


def test_the_run_is_recorded_and_announced_before_its_container_starts(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    engine.script(["step=1 loss=0.5"])
    project = tmp_path / "p"
    project.mkdir()
    seen = []

    def on_start(record) -> None:
        seen.append((store.get(record.id).status, list(engine.started)))

    result = execute_run(spec_for(project), docker=engine, store=store, on_start=on_start)
    assert seen == [("running", [])]  # recorded, and nothing had started yet
    assert result.status == "completed" and store.get(result.run_id).container_id == engine.started[0].id


def test_a_run_that_cannot_be_recorded_starts_no_container(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    taken = store.start_run("p", ["true"])
    engine = FakeEngine()
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(EnvbuilderError) as caught:
        execute_run(spec_for(project)._replace(run_id=taken.id), docker=engine, store=store)
    assert caught.value.code == "run-id-exhausted"
    assert engine.started == [] and engine.containers == {}
    assert [r.id for r in store.list_runs()] == [taken.id] and store.get(taken.id).status == "running"


# --- the engine goes away, the runner is interrupted or killed -----------------------------------------------


def test_engine_death_leaves_a_note_and_reconcile_records_the_real_end(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    # the engine stops answering after two lines, as the socket engine's follow fails when it dies
    engine.script(["step=1 loss=0.9", "step=2 loss=0.8", "step=3 loss=0.7", "step=4 loss=0.6"], exit_code=137,
                  break_after=2, break_with=DockerError("docker-not-running", "waiting for a container failed: "
                                                        "Cannot connect to the Docker daemon"))
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(DockerError) as caught:
        execute_run(spec_for(project), docker=engine, store=store)
    assert caught.value.code == "docker-not-running" and "runs list" in caught.value.hint
    [record] = store.list_runs()
    assert record.status == "running" and "lost contact with the Docker engine" in record.error
    assert record.container_id in engine.containers  # left for reconcile: its exit and log are still there
    settle_as_crashed(store, record.id)
    engine.containers[record.container_id].status = "exited"
    assert reconcile_runs(store, docker=engine) == [record.id]
    final = store.get(record.id)
    assert (final.status, final.exit_code) == ("failed", 137)
    assert final.error == "exited with 137 after envbuilder lost contact with the Docker engine while watching"
    assert "Error(" not in final.error and "no envbuilder process was watching" not in final.error
    assert Path(final.log_path).read_text().splitlines()[-1] == "step=4 loss=0.6"  # backfilled
    assert record.container_id not in engine.containers


def test_a_second_ctrl_c_kills_at_once_and_the_run_is_still_recorded(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    # Ctrl-C while following; a second Ctrl-C during the grace period of the stop
    engine.script(["step=1 loss=0.5"], break_after=1, break_with=KeyboardInterrupt())
    engine.fail_next("stop", KeyboardInterrupt())
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(KeyboardInterrupt):
        execute_run(spec_for(project), docker=engine, store=store)
    [record] = store.list_runs()
    assert any(call[0] == "kill" for call in engine.calls)
    assert (record.status, record.exit_code, record.error) == ("stopped", 137, "interrupted (Ctrl-C)")
    assert engine.containers == {}


def test_an_interrupted_watcher_is_not_reported_as_no_watcher(tmp_path):
    # The interrupt's cleanup never got to record the end (the process died during the grace period).
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    record = store.start_run("p", ["python", "train.py"])
    store.set_container(record.id, "c1")
    store.note_watch(record.id, "envbuilder was interrupted (Ctrl-C) while watching")
    settle_as_crashed(store, record.id)
    store.reconcile(lambda _: {"Status": "exited", "ExitCode": 143})
    assert store.get(record.id).error == "exited with 143 after envbuilder was interrupted (Ctrl-C) while watching"


def test_runs_stop_of_a_run_whose_runner_was_killed_backfills_its_log(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    engine.script([f"step={i} loss={1 / i:.3f}" for i in range(1, 8)])
    container = engine.run_detached("img", ["python", "train.py"])
    record = store.start_run("p", ["python", "train.py"])
    store.set_container(record.id, container)
    Path(record.log_path).write_text("step=1 loss=1.000\nstep=2 loss=0.500\n")  # what the runner saw
    settle_as_crashed(store, record.id)
    started = time.monotonic()
    stopped = stop_run(store, record.id, grace_s=0, docker=engine)
    assert time.monotonic() - started < 2  # no runner to wait for
    assert stopped.status == "stopped"
    assert Path(record.log_path).read_text().splitlines()[-1] == "step=7 loss=0.143"
    assert store.metric_series(record.id)["loss"][-1] == (7, pytest.approx(0.143))
    assert container not in engine.containers


def test_a_line_cut_in_half_by_a_dying_engine_is_taken_whole(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    engine.script(["step=1 loss=1.0", "step=2 loss=0.5", "step=3 loss=0.25"], exit_code=0)
    container = engine.run_detached("img", ["x"])
    record = store.start_run("p", ["x"])
    store.set_container(record.id, container)
    Path(record.log_path).write_text("step=1 loss=1.0\nstep=2 lo\n")
    settle_as_crashed(store, record.id)
    engine.containers[container].status = "exited"
    reconcile_runs(store, docker=engine)
    assert Path(record.log_path).read_text() == "step=1 loss=1.0\nstep=2 loss=0.5\nstep=3 loss=0.25\n"


def test_describe_never_gives_a_python_repr():
    assert describe(DockerError("docker-not-running", "gone", "start it")) == "docker-not-running: gone. Hint: start it"
    assert describe(OSError(28, "No space left on device", "/x/log.txt")) == "No space left on device: /x/log.txt"
    assert describe(ValueError("bad")) == "ValueError: bad"


def test_disk_full_is_recognised_in_each_form(tmp_path):
    assert is_disk_full(OSError(28, "No space left on device"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(sqlite3.OperationalError("disk I/O error"), tmp_path)  # this disk has room


# --- hints from a failed job's output -------------------------------------------------------------------------


@pytest.mark.parametrize("line, package", [
    ("ModuleNotFoundError: No module named 'einops'", "einops"),
    ("ModuleNotFoundError: No module named 'cv2'", "opencv-python-headless"),
    ("ModuleNotFoundError: No module named 'sklearn.metrics'", "scikit-learn"),
    ("ImportError: No module named 'yaml'", "pyyaml"),
    ("ModuleNotFoundError: No module named 'my_utils'", "my-utils"),
])
def test_a_missing_module_names_the_package_to_add(line, package):
    assert job_hint(["Traceback (most recent call last):", '  File "train.py", line 1', line]).endswith(
        f"or rerun with --with {package}")


def test_a_failed_run_carries_the_hint_and_the_cli_prints_it(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path / "home"))
    engine = FakeEngine()
    engine.script(["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'einops'"], exit_code=1)
    project = tmp_path / "p"
    project.mkdir()
    result = execute_run(spec_for(project), docker=engine, store=store)
    assert result.status == "failed" and "--with einops" in result.hint
    assert result.to_json()["hint"] == result.hint
    from envbuilder.cli.run_flow import exit_with as _exit_with
    from envbuilder.errors import JobEnded

    with pytest.raises(JobEnded) as caught:
        _exit_with(result, f"run {result.run_id}")
    assert "--with einops" in str(caught.value) and caught.value.exit_code == 1


def test_engine_death_during_a_build_is_docker_not_running():
    from envbuilder.docker.diagnose import diagnose_docker

    # Captured from `docker build` (BuildKit) against a private engine SIGKILLed during a RUN step.
    error = diagnose_docker((DATA / "build-engine-killed.txt").read_text(), what="docker build")
    assert error.code == "docker-not-running"
    assert diagnose_docker("#5 0.3 curl: (18) unexpected EOF\nERROR: failed to solve: exit code 18").code != \
        "docker-not-running"  # a step's own EOF is the step's failure


# --- a full disk under the data dir (a real 2 MiB tmpfs) -----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a data dir that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Fill the file system under folder, leaving about `leave` bytes."""
    with (folder / "filler.bin").open("wb") as handle:
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave + 4096:
                handle.write(b"\0" * 4096)
                handle.flush()
        except OSError:
            pass


def test_metrics_on_a_full_disk_are_disk_full_with_a_hint(small_disk, tmp_path):
    # The database fills the disk (its log lives elsewhere): not `internal error: OperationalError`.
    store = RunStore(small_disk / "runs.sqlite3", tmp_path / "runs")
    engine = FakeEngine()
    engine.script([f"step={i} loss={1 / i:.6f} acc={i / 1e6:.6f} lr=1e-3 grad_norm={i % 7}" for i in range(1, 60_000)],
                  exit_code=0)
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(DockerError) as caught:
        execute_run(spec_for(project), docker=engine, store=store)
    assert caught.value.code == "disk-full" and "free space" in caught.value.hint
    assert str(small_disk) in caught.value.message
    assert engine.containers == {} or all(c.status == "exited" for c in engine.containers.values())


def test_runs_list_works_read_only_on_a_full_disk(small_disk, cli):
    home = small_disk / "home"
    store = RunStore.from_settings(Settings(home))
    done = store.start_run("p", ["python", "a.py"])
    store.finish_run(done.id, "completed", 0)
    vanished = store.start_run("p", ["python", "b.py"])
    store.set_container(vanished.id, "0" * 64)  # a container no engine has: reconcile would write
    settle_as_crashed(store, vanished.id)
    store.close()  # the last connection: SQLite folds the WAL in and deletes it and the shared-memory file
    fill(small_disk)
    result = cli("--data-dir", str(home), "runs", "list", "--json")
    assert result.exit_code == 0, result.stderr
    assert {r["id"] for r in json.loads(result.stdout)} == {done.id, vanished.id}
    assert "disk is full" in result.stderr or "the disk holding" in result.stderr
    assert "internal error" not in result.stderr
    shown = cli("--data-dir", str(home), "runs", "show", done.id)
    assert shown.exit_code == 0 and "completed" in shown.stdout


def test_a_read_only_store_reads_and_refuses_writes_as_disk_full(tmp_path):
    store = RunStore.from_settings(Settings(tmp_path))
    record = store.start_run("p", ["true"])
    store.close()
    for side in ("-wal", "-shm"):
        assert not Path(f"{store.path}{side}").exists()
    reader = RunStore.from_settings(Settings(tmp_path))
    reader.read_only = True  # what _open falls back to when the disk refuses even a reader's files
    assert [r.id for r in reader.list_runs()] == [record.id]
    with pytest.raises(DockerError) as caught:
        reader.finish_run(record.id, "completed", 0)
    assert caught.value.code == "disk-full"
    assert not Path(f"{store.path}-shm").exists()  # immutable: the reader made no file


@pytest.mark.docker
def test_a_chatty_job_on_a_full_disk_fails_cleanly(small_disk, tmp_path, base_image, docker_engine):
    project = tmp_path / "chatty"
    project.mkdir()
    (project / "spam.py").write_text("for i in range(10**7):\n    print('line', i, 'x' * 80, flush=False)\n")
    home = small_disk / "home"
    started = time.monotonic()
    runner = subprocess.run([sys.executable, "-m", "envbuilder", "--data-dir", str(home), "run", str(project),
                             "--image", base_image, "--gpus", "none", "--", "python", "spam.py"],
                            capture_output=True, text=True, timeout=120)
    assert runner.returncode == 4, runner.stderr[-2000:]
    assert "envbuilder: disk-full: no space left" in runner.stderr and "Traceback" not in runner.stderr
    assert "internal error" not in runner.stderr
    assert time.monotonic() - started < 60
    listed = subprocess.run([sys.executable, "-m", "envbuilder", "--data-dir", str(home), "runs", "list", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    [record] = json.loads(listed.stdout)
    # The store's reserve made room for the last word: the run says why it ended, and nothing is left behind.
    assert record["status"] == "failed" and record["exit_code"] in (137, 143)
    assert record["error"] == "the disk holding its log or the run database is full: envbuilder stopped the job"
    from envbuilder.imagelayout import LABEL_RUN_ID

    assert docker_engine.containers_labelled(LABEL_RUN_ID, record["id"]) == []


# --- the engine itself dies (a private engine in its own network namespace) ----------------------------------


@pytest.fixture(scope="module")
def private_engine(base_image):
    from support.private_engine import PrivateEngine, unavailable

    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with PrivateEngine() as engine:
        engine.load(base_image)
        yield engine


def _wait_for_lines(path: Path, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{path} never reached {count} lines")


@pytest.mark.docker
def test_engine_killed_during_a_run_is_reconciled_when_it_is_back(private_engine, base_image, tmp_path):
    project = tmp_path / "steady"
    project.mkdir()
    (project / "steps.py").write_text(textwrap.dedent("""
        import time
        for step in range(1, 3000):
            print(f"step={step} loss={1 / step:.5f}", flush=True)
            time.sleep(0.05)
    """))
    home = tmp_path / "home"
    env = private_engine.env()
    runner = subprocess.Popen([sys.executable, "-m", "envbuilder", "--data-dir", str(home), "run", str(project),
                               "--image", base_image, "--gpus", "none", "--", "python", "steps.py"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        store = RunStore.from_settings(Settings(home))
        deadline = time.monotonic() + 30
        while not store.list_runs() and time.monotonic() < deadline:
            time.sleep(0.1)
        [record] = store.list_runs()
        _wait_for_lines(Path(record.log_path), 10)
        private_engine.kill()
        stderr = runner.communicate(timeout=60)[1]
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 4, stderr
    assert "docker-not-running: the Docker engine stopped answering while run" in stderr and "Traceback" not in stderr
    watched = store.get(record.id)
    assert watched.status == "running" and "lost contact with the Docker engine" in watched.error
    seen_by_runner = len(Path(record.log_path).read_text().splitlines())
    time.sleep(1.0)  # the job goes on printing while the engine is down
    private_engine.start()
    listed = subprocess.run([sys.executable, "-m", "envbuilder", "--data-dir", str(home), "runs", "list", "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    final = store.get(record.id)
    assert final.status == "failed" and final.exit_code not in (None, 0)  # the engine's restart ended the job
    assert final.error == (f"exited with {final.exit_code} after envbuilder lost contact with the Docker engine "
                           "while watching")
    log = Path(record.log_path).read_text().splitlines()
    assert len(log) > seen_by_runner + 5 and log[-1].startswith("step=")  # the unwatched steps were salvaged
    assert final.container_id and final.container_id not in private_engine.docker("ps", "-aq", "--no-trunc").stdout


@pytest.mark.docker
def test_engine_killed_during_a_build_is_docker_not_running(private_engine, base_image, tmp_path, monkeypatch):
    import threading

    from envbuilder.docker.buildkit import BuildRequest
    from envbuilder.docker.engine import open_engine

    (tmp_path / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo building && sleep 30\n")
    monkeypatch.setenv("DOCKER_HOST", private_engine.host)
    engine = open_engine("/usr/bin/docker")
    lines: list[str] = []
    killer = threading.Thread(target=lambda: (_wait_until(lambda: any("building" in ln for ln in lines)),
                                              private_engine.kill()))
    killer.start()
    try:
        with pytest.raises(DockerError) as caught:
            engine.build(BuildRequest(dockerfile=tmp_path / "Dockerfile", context=tmp_path, tag="envbuilder-test/dies"),
                         on_line=lines.append, timeout=90)
    finally:
        killer.join(60)
        private_engine.start()
    assert caught.value.code == "docker-not-running", caught.value


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)

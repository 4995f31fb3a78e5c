"""Nothing a run writes is lost: each run's own artifacts folder, the `latest` link, `--resume last`, the
project's git commit and the parent run recorded, artifacts of git URL projects outside the cached checkout, and
the EROFS hint. Over the shared FakeEngine (the job's writes are done by the test, as the job would); the same
paths with real containers are tests/test_artifacts_docker.py."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from support.fake_engine import FakeEngine

from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import LABEL_PLAN_HASH, LABEL_PROJECT
from envbuilder.run.artifacts import find_checkpoint
from envbuilder.run.gitstate import git_state, parse_git_status
from envbuilder.run.hints import job_hint
from envbuilder.run.launch import RunRequest, run_project
from envbuilder.run.spec import RunOptions
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

IMAGE = "envbuilder/demo:0123456789abcdef"


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "demo"
        version = "0"
        [tool.envbuilder]
        pipeline = ["train", "export"]
        [tool.envbuilder.jobs.train]
        command = ["python", "train.py"]
        gpus = "none"
        resume-arg = "--resume {checkpoint}"
        [tool.envbuilder.jobs.export]
        command = ["python", "export.py"]
        gpus = "none"
        needs = ["train"]
    """))
    return folder


@pytest.fixture
def settings(tmp_path):
    return Settings(tmp_path / "home")


@pytest.fixture
def engine():
    engine = FakeEngine()
    engine.add_image(IMAGE, labels={LABEL_PLAN_HASH: "abc", LABEL_PROJECT: "demo"})
    return engine


def _run(project, settings, engine, job=None, command=(), **options):
    return run_project(str(project), RunRequest(job=job, command=command), settings=settings, image=IMAGE,
                       docker=engine, options=RunOptions(**options) if options else None).result


def _mounts(engine):
    return [container.options["mounts"] for container in engine.started]


def _argv(engine):
    return [c[2] for c in engine.calls if c[0] == "run_detached"]


def test_two_runs_of_a_job_keep_their_own_folders_and_latest_points_at_the_newest(project, settings, engine):
    first = _run(project, settings, engine, job="train")
    (first.artifacts_dir / "checkpoint.pt").write_text("one")  # what the job wrote to /artifacts
    second = _run(project, settings, engine, job="train")
    (second.artifacts_dir / "checkpoint.pt").write_text("two")
    job_dir = project.resolve() / "artifacts" / "train"
    assert first.artifacts_dir == job_dir / first.run_id and second.artifacts_dir == job_dir / second.run_id
    assert (first.artifacts_dir / "checkpoint.pt").read_text() == "one"  # the second run overwrote nothing
    assert (job_dir / "latest").is_symlink() and os.readlink(job_dir / "latest") == second.run_id
    assert (job_dir / "latest" / "checkpoint.pt").read_text() == "two"
    assert [m[-1] for m in _mounts(engine)] == [(str(first.artifacts_dir), "/artifacts", False),
                                                (str(second.artifacts_dir), "/artifacts", False)]
    store = RunStore.from_settings(settings)
    assert store.get(first.run_id).artifacts_dir == str(first.artifacts_dir)


def test_a_bare_command_gets_a_host_folder_too(project, settings, engine):
    result = _run(project, settings, engine, command=("python", "-c", "pass"))
    assert result.artifacts_dir == project.resolve() / "artifacts" / "cmd" / result.run_id
    assert result.artifacts_dir.is_dir()
    [options] = [container.options for container in engine.started]
    assert options["env"]["ENVBUILDER_ARTIFACTS"] == "/artifacts"


def test_artifacts_option_is_used_as_it_is(project, settings, engine, tmp_path):
    chosen = tmp_path / "mine"
    result = _run(project, settings, engine, job="train", artifacts_dir=chosen)
    assert result.artifacts_dir == chosen.resolve() and chosen.is_dir()
    assert not (project / "artifacts").exists()  # no per-run folder, no link


def test_resume_last_is_the_newest_checkpoint_of_the_newest_resumable_run(project, settings, engine):
    first = _run(project, settings, engine, job="train")
    (first.artifacts_dir / "old.pt").write_text("x")
    os.utime(first.artifacts_dir / "old.pt", (time.time() - 60, time.time() - 60))
    (first.artifacts_dir / "ckpts").mkdir()
    (first.artifacts_dir / "ckpts" / "epoch=3-step=300.ckpt").write_text("x")
    (first.artifacts_dir / "model.onnx").write_text("not a checkpoint")
    engine.script(["Traceback"], exit_code=1)
    failed = _run(project, settings, engine, job="train")  # failed runs are not resumed from
    (failed.artifacts_dir / "broken.pt").write_text("x")
    resumed = _run(project, settings, engine, job="train", resume_from="last")
    expected = f"/workspace/project/artifacts/train/{first.run_id}/ckpts/epoch=3-step=300.ckpt"
    assert _argv(engine)[-1] == ["python", "train.py", "--resume", expected]
    store = RunStore.from_settings(settings)
    record = store.get(resumed.run_id)
    assert record.parent_run == first.run_id and record.args["resume_from"].endswith("epoch=3-step=300.ckpt")
    assert resumed.artifacts_dir != first.artifacts_dir  # the resumed run writes its own folder


def test_resume_last_without_a_checkpoint_fails_before_anything_runs(project, settings, engine):
    _run(project, settings, engine, job="train")  # completed, wrote nothing
    before = len(engine.calls)
    with pytest.raises(EnvbuilderError) as caught:
        _run(project, settings, engine, job="train", resume_from="last")
    assert caught.value.code == "no-checkpoint" and "train" in caught.value.message
    assert [c for c in engine.calls[before:] if c[0] == "run_detached"] == []
    with pytest.raises(EnvbuilderError) as caught:
        _run(project, settings, engine, command=("true",), resume_from="last")
    assert caught.value.code == "resume-unsupported"


def test_resume_from_a_path_in_a_run_folder_records_that_run_as_parent(project, settings, engine):
    first = _run(project, settings, engine, job="train")
    checkpoint = first.artifacts_dir / "checkpoint.pt"
    checkpoint.write_text("x")
    resumed = _run(project, settings, engine, job="train", resume_from=str(checkpoint))
    assert RunStore.from_settings(settings).get(resumed.run_id).parent_run == first.run_id


def test_a_job_that_needs_another_works_in_its_folder(project, settings, engine):
    done = run_project(str(project), RunRequest(pipeline=True), settings=settings, image=IMAGE, docker=engine).result
    train, export = done.runs
    assert export.artifacts_dir == train.artifacts_dir == project.resolve() / "artifacts" / "train" / train.run_id
    assert (project / "artifacts" / "export" / "latest").resolve() == train.artifacts_dir
    alone = _run(project, settings, engine, job="export")  # on its own: the newest completed train run's folder
    assert alone.artifacts_dir == train.artifacts_dir


def _git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"})


def test_the_project_commit_and_dirty_flag_are_recorded(project, settings, engine):
    store = RunStore.from_settings(settings)
    plain = _run(project, settings, engine, command=("true",))
    assert (store.get(plain.run_id).git_commit, store.get(plain.run_id).git_dirty) == (None, None)  # not a repo
    _git(project, "init", "-q")
    _git(project, "add", "pyproject.toml")
    _git(project, "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    clean = _run(project, settings, engine, command=("true",))  # artifacts/ is untracked: still clean
    assert (store.get(clean.run_id).git_commit, store.get(clean.run_id).git_dirty) == (head, False)
    (project / "pyproject.toml").write_text((project / "pyproject.toml").read_text() + "\n# edited\n")
    dirty = _run(project, settings, engine, command=("true",))
    assert (store.get(dirty.run_id).git_commit, store.get(dirty.run_id).git_dirty) == (head, True)


def test_parse_git_status():
    assert parse_git_status("# branch.oid abc123\n# branch.head main\n") == ("abc123", False)
    assert parse_git_status("# branch.oid abc123\n1 .M N... 100644 100644 100644 a b f.py\n") == ("abc123", True)
    assert parse_git_status("# branch.oid (initial)\n# branch.head main\n") == (None, None)
    assert git_state(Path("/")) == (None, None)


def test_a_git_url_project_keeps_its_artifacts_outside_the_cached_checkout(project, settings, engine, tmp_path):
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", ".")
    _git(project, "commit", "-qm", "first")
    url = f"file://{project}"
    result = run_project(url, RunRequest(job="train"), settings=settings, image=IMAGE, docker=engine).result
    record = RunStore.from_settings(settings).get(result.run_id)
    checkout = Path(record.args["project_dir"])
    assert checkout.is_relative_to(settings.git_cache)
    assert not result.artifacts_dir.is_relative_to(checkout) and not (checkout / "artifacts").exists()
    assert result.artifacts_dir.is_relative_to(settings.data_dir / "artifacts")
    assert result.artifacts_dir.parent.name == "train" and result.artifacts_dir.name == result.run_id
    head = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert (record.git_commit, record.git_dirty) == (head, False)
    again = run_project(url, RunRequest(job="train"), settings=settings, image=IMAGE, docker=engine).result
    assert again.artifacts_dir.parent == result.artifacts_dir.parent  # one home per URL, across runs and refs


def test_find_checkpoint_takes_trainer_folders_and_skips_exports(tmp_path):
    assert find_checkpoint(tmp_path) is None
    (tmp_path / "model.onnx").write_text("x")
    (tmp_path / ".envbuilder").mkdir()
    (tmp_path / ".envbuilder" / "x.pt").write_text("x")
    assert find_checkpoint(tmp_path) is None
    (tmp_path / "out" / "checkpoint-500").mkdir(parents=True)
    assert find_checkpoint(tmp_path) == tmp_path / "out" / "checkpoint-500"


@pytest.mark.parametrize("line", [
    "OSError: [Errno 30] Read-only file system: 'outputs'",
    "mkdir: cannot create directory 'lightning_logs': Read-only file system",
])
def test_a_write_into_the_read_only_project_is_answered_with_rw_and_the_artifacts_folder(line):
    hint = job_hint(["Traceback (most recent call last):", line], read_only_project=True)
    assert "--rw" in hint and "$ENVBUILDER_ARTIFACTS" in hint
    assert job_hint([line], read_only_project=False) is None  # a :ro mount of the user's own: no such advice


def test_a_failed_run_that_hit_erofs_carries_the_hint(project, settings, engine):
    engine.script(["Traceback (most recent call last):", "OSError: [Errno 30] Read-only file system: 'outputs'"],
                  exit_code=1)
    result = _run(project, settings, engine, command=("python", "train.py"))
    assert result.status == "failed" and "--rw" in result.hint and "$ENVBUILDER_ARTIFACTS" in result.hint

"""run_project (envbuilder.run.launch) and the executor over the shared FakeEngine: what reaches the engine,
what the store records, and the order of checks (a wrong job fails before any build)."""

from __future__ import annotations

import textwrap

import pytest
from support.fake_engine import FakeEngine

from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import (
    LABEL_PLAN_HASH,
    LABEL_PROJECT,
    LABEL_PYTHON,
    LABEL_RUN_ID,
    LABEL_TORCH,
)
from envbuilder.run.launch import ProjectImage, RunRequest, run_project
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
        [tool.envbuilder.jobs.export]
        command = ["python", "export.py"]
        gpus = "none"
    """))
    return folder


@pytest.fixture
def settings(tmp_path):
    return Settings(tmp_path / "home")


@pytest.fixture
def engine():
    engine = FakeEngine()
    engine.add_image(IMAGE, labels={LABEL_PLAN_HASH: "abc", LABEL_PROJECT: "demo-project", LABEL_TORCH: "2.13.0+cpu",
                                    LABEL_PYTHON: "3.11"})
    return engine


def no_build(source, ref):
    raise AssertionError("nothing may be built here")


def test_a_job_in_a_given_image_is_run_recorded_and_removed(project, settings, engine):
    engine.script(["epoch 1 loss=0.5", "epoch 2 loss=0.25"], exit_code=0)
    seen, lines = [], []
    done = run_project(str(project), RunRequest(job="train"), settings=settings, image=IMAGE, build=no_build,
                       options=RunOptions(args=("--fast",)), docker=engine, on_image=seen.append, on_line=lines.append)
    result = done.result
    assert seen == [ProjectImage(IMAGE, {"torch": "2.13.0+cpu", "flavor": None, "python": "3.11", "plan_hash": "abc"},
                                 "demo-project")]
    assert (result.status, result.exit_code, result.job, result.metrics) == ("completed", 0, "train", {"epoch": 2.0, "loss": 0.25})
    assert lines == ["epoch 1 loss=0.5", "epoch 2 loss=0.25"]
    assert done.to_json()["image"] == IMAGE and done.to_json()["run_id"] == result.run_id
    [run] = [c for c in engine.calls if c[0] == "run_detached"]
    assert run[1:] == (IMAGE, ["python", "train.py", "--fast"])
    assert engine.containers == {}  # removed once recorded
    record = RunStore.from_settings(settings).get(result.run_id)
    assert (record.status, record.project, record.job, record.plan["plan_hash"]) == ("completed", "demo-project",
                                                                                      "train", "abc")
    assert record.container_id and record.args["args"] == ["--fast"]
    assert result.log_path.read_text().splitlines() == lines


def test_the_container_gets_the_spec(project, settings, engine):
    done = run_project(str(project), RunRequest(command=("true",)), settings=settings, image=IMAGE, docker=engine,
                       options=RunOptions(env={"A": "1"}, gpus="none", network="host"))
    [options] = [container.options for container in engine.started]
    assert options["labels"][LABEL_RUN_ID] == done.result.run_id and options["network"] == "host"
    assert options["env"]["A"] == "1" and options["gpus"] is None and options["workdir"] == "/workspace/project"
    # a bare command's files are kept too: its own folder under artifacts/cmd/
    run_folder = project.resolve() / "artifacts" / "cmd" / done.result.run_id
    assert options["mounts"] == [(str(project.resolve()), "/workspace/project", True),
                                 (str(run_folder), "/artifacts", False)]


def test_a_failing_job_is_recorded_failed_with_its_exit_code(project, settings, engine):
    engine.script(["Traceback"], exit_code=3)
    result = run_project(str(project), RunRequest(job="train"), settings=settings, image=IMAGE, docker=engine).result
    assert (result.status, result.exit_code, result.message) == ("failed", 3, "exited with 3")
    assert RunStore.from_settings(settings).get(result.run_id).status == "failed"


def test_ctrl_c_records_stopped_and_removes_the_container(project, settings, engine):
    engine.script(["step 1"], exit_code=0)

    def interrupt(_line):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_project(str(project), RunRequest(job="train"), settings=settings, image=IMAGE, docker=engine,
                    on_line=interrupt)
    [record] = RunStore.from_settings(settings).list_runs()
    assert (record.status, record.error) == ("stopped", "interrupted (Ctrl-C)")
    assert ("stop", record.container_id, 10.0) in engine.calls and engine.containers == {}


def test_an_unknown_job_fails_before_the_image_is_built(project, settings, engine):
    with pytest.raises(EnvbuilderError) as err:
        run_project(str(project), RunRequest(job="trian"), settings=settings, build=no_build, docker=engine)
    assert err.value.code == "job-not-found"


def test_the_build_step_gives_the_image(project, settings, engine):
    asked = []

    def build(source, ref):
        asked.append((source, ref))
        return ProjectImage(IMAGE, {"plan_hash": "built"}, "from-plan")

    result = run_project(str(project), RunRequest(job="train"), settings=settings, build=build, docker=engine).result
    assert asked == [(str(project), None)]
    record = RunStore.from_settings(settings).get(result.run_id)
    assert (record.project, record.plan) == ("from-plan", {"plan_hash": "built"})


def test_a_missing_image_is_an_error(project, settings):
    with pytest.raises(EnvbuilderError) as err:
        run_project(str(project), RunRequest(command=("true",)), settings=settings, image="nope:1", docker=FakeEngine())
    assert err.value.code == "image-not-found"


def test_pipeline_runs_in_order_and_stops_at_the_first_failure(project, settings, engine):
    engine.script(["loss=1.0"], exit_code=1)
    jobs = []
    done = run_project(str(project), RunRequest(pipeline=True), settings=settings, image=IMAGE, docker=engine,
                       on_job=jobs.append)
    assert jobs == ["train"] and not done.ok
    assert (done.result.not_run, [r.job for r in done.result.runs]) == (("export",), ["train"])

    done = run_project(str(project), RunRequest(pipeline=True, skip=("train",)), settings=settings, image=IMAGE,
                       docker=engine)
    assert done.ok and done.result.skipped == ("train",) and [r.job for r in done.result.runs] == ["export"]


def test_a_pipeline_needs_jobs(tmp_path, settings, engine):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\n')
    with pytest.raises(EnvbuilderError) as err:
        run_project(str(tmp_path), RunRequest(pipeline=True), settings=settings, image=IMAGE, docker=engine)
    assert err.value.code == "usage" and err.value.exit_code == 2 and "declares no jobs" in err.value.message


def test_api_run_project_runs_in_the_image_build_project_gives(project, settings, engine, monkeypatch):
    from types import SimpleNamespace

    import envbuilder.api as api

    asked = {}
    plan = SimpleNamespace(torch=SimpleNamespace(version="2.13.0", flavor="cpu", local="2.13.0+cpu"), python="3.12",
                           project_name="demo")
    made = SimpleNamespace(plan=plan, image=SimpleNamespace(image=IMAGE, plan_hash="feed"))

    def build_project(source, **kwargs):
        asked.update(kwargs, source=source)
        return made

    monkeypatch.setattr(api, "build_project", build_project)
    seen = []
    done = api.run_project(str(project), RunRequest(job="train"), settings=settings, engine=engine,
                           on_image=seen.append)
    assert asked["source"] == str(project) and asked["ref"] is None and asked["engine"] is engine
    assert seen == [ProjectImage(IMAGE, {"torch": "2.13.0", "flavor": "cpu", "python": "3.12", "plan_hash": "feed"},
                                 "demo", made)]
    assert done.ok and RunStore.from_settings(settings).get(done.result.run_id).plan["plan_hash"] == "feed"

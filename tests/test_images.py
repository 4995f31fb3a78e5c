"""Images per checkout: tags (build/key.py), `images` listing and `prune` (build/images.py, api), on the fake engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden.cases import cpu_plan
from support.fake_engine import FakeEngine

from envbuilder.api import list_project_images, prune_project_images
from envbuilder.build.images import list_images, project_checkout, prune_images
from envbuilder.build.key import checkout_digest, checkout_identity, image_repo
from envbuilder.build.spec import BuildRequestOptions, build_spec
from envbuilder.imagelayout import (
    LABEL_BUILD_KEY,
    LABEL_CHECKOUT,
    LABEL_FLAVOR,
    LABEL_PLAN_HASH,
    LABEL_PROJECT,
    LABEL_PYTHON,
    LABEL_TORCH,
)
from envbuilder.project.spec import ProjectSource
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings


def _spec(plan, context: Path):
    return build_spec(plan, dockerfile="FROM scratch\n", ignore_file="", context=context, context_digest="d",
                      base_ids={}, wheelhouses={}, request=BuildRequestOptions())


def test_two_checkouts_of_one_project_get_their_own_repository_and_latest(tmp_path):
    a, b = tmp_path / "a" / "demo", tmp_path / "b" / "demo"
    spec_a, spec_b = _spec(cpu_plan(), a), _spec(cpu_plan(), b)
    repo_a, repo_b = spec_a.image.split(":")[0], spec_b.image.split(":")[0]
    assert repo_a != repo_b and repo_a.startswith("envbuilder/demo-") and repo_b.startswith("envbuilder/demo-")
    assert spec_a.tags[1] == f"{repo_a}:latest" and spec_b.tags[1] == f"{repo_b}:latest"
    assert spec_a.key == spec_b.key  # the same content is the same build, wherever it lives
    assert spec_a.labels[LABEL_CHECKOUT] == checkout_digest(str(a)) and _spec(cpu_plan(), a).image == spec_a.image


def test_a_git_checkout_is_named_by_its_remote_not_its_cache_folder(tmp_path):
    source = ProjectSource(path=str(tmp_path / "cache" / "x"), git_url="https://git.example.com/team/demo.git")
    first = _spec(cpu_plan(project=source), tmp_path / "cache" / "x")
    second = _spec(cpu_plan(project=source), tmp_path / "cache" / "y")
    assert first.image.split(":")[0] == second.image.split(":")[0] == image_repo(
        "demo", checkout_digest(checkout_identity("", "https://git.example.com/team/demo.git")))


def _image(engine: FakeEngine, checkout: str, key: str, created: int, *, project: str = "demo", latest: bool = False,
           size: int = 1000) -> str:
    repo = image_repo(project, checkout)
    labels = {LABEL_BUILD_KEY: key * 4, LABEL_CHECKOUT: checkout, LABEL_PROJECT: project, LABEL_PLAN_HASH: key,
              LABEL_TORCH: "2.13.0+cpu", LABEL_FLAVOR: "cpu", LABEL_PYTHON: "3.11"}
    info = engine.add_image(f"{repo}:{key}", f"sha256:{key}", labels=labels, created=created, size=size)
    if latest:
        engine.images[f"{repo}:latest"] = info
    return info["Id"]


@pytest.fixture
def engine(tmp_path) -> FakeEngine:
    engine = FakeEngine()
    here = project_checkout(tmp_path)
    for n, key in enumerate(("1111aaaa", "2222bbbb", "3333cccc", "4444dddd")):
        _image(engine, here, key, created=100 + n, latest=key == "4444dddd")
    _image(engine, "0ther000", "9999ffff", created=50, project="other", latest=True)
    return engine


def test_images_lists_one_checkout_newest_first_with_its_plan(engine, tmp_path):
    found = list_images(engine, project_checkout(tmp_path))
    assert [e.plan_hash for e in found] == ["4444dddd", "3333cccc", "2222bbbb", "1111aaaa"]
    assert found[0].latest and found[0].torch == "2.13.0+cpu" and found[0].python == "3.11"
    assert found[0].to_json()["image"].endswith(":4444dddd") and found[0].to_json()["size"] == 1000
    assert len(list_images(engine)) == 5  # every checkout


def test_prune_keeps_the_newest_n_and_never_an_image_a_running_job_uses(engine, tmp_path):
    in_use = {"sha256:1111aaaa"}
    done = prune_images(engine, list_images(engine, project_checkout(tmp_path)), keep=2, in_use=in_use)
    assert {e.plan_hash for e in done.kept} == {"4444dddd", "3333cccc"}
    assert [e.plan_hash for e in done.removed] == ["2222bbbb"]
    assert [e.plan_hash for e in done.in_use] == ["1111aaaa"]
    assert not any(ref.endswith(":2222bbbb") for ref in engine.images)
    assert any(ref.endswith(":1111aaaa") for ref in engine.images)
    assert any(ref.startswith("envbuilder/other-") for ref in engine.images)  # another checkout: untouched


def test_prune_dry_run_removes_nothing_and_other_tags_are_left(engine, tmp_path):
    engine.images["mine/tagged:v1"] = engine.images[next(r for r in engine.images if r.endswith(":2222bbbb"))]
    entries = list_images(engine, project_checkout(tmp_path))
    assert next(e for e in entries if e.plan_hash == "2222bbbb").other_tags == ("mine/tagged:v1",)
    dry = prune_images(engine, entries, keep=1, in_use=set(), dry_run=True)
    assert len(dry.removed) == 3 and not any(call[0] == "remove_image" for call in engine.calls)
    prune_images(engine, entries, keep=1, in_use=set())
    assert "mine/tagged:v1" in engine.images  # the user's own tag is never removed
    assert [r for r in engine.images if r.startswith(image_repo("demo", project_checkout(tmp_path)))] == [
        f"{image_repo('demo', project_checkout(tmp_path))}:4444dddd", f"{image_repo('demo', project_checkout(tmp_path))}:latest"]


def test_prune_through_the_api_reads_running_jobs_from_the_run_store(engine, tmp_path):
    settings = Settings(tmp_path / "home")
    store = RunStore.from_settings(settings)
    repo = image_repo("demo", project_checkout(tmp_path))
    running = store.start_run("demo", ["python", "train.py"], image=f"{repo}:2222bbbb")
    finished = store.start_run("demo", ["python", "eval.py"], image=f"{repo}:3333cccc")
    store.finish_run(finished.id, "completed", 0)
    done = prune_project_images(str(tmp_path), keep=1, settings=settings, engine=engine)
    assert [e.plan_hash for e in done.in_use] == ["2222bbbb"] and running.running
    assert sorted(e.plan_hash for e in done.removed) == ["1111aaaa", "3333cccc"]
    assert [e.plan_hash for e in list_project_images(str(tmp_path), settings=settings, engine=engine)] == [
        "4444dddd", "2222bbbb"]


def test_prune_refuses_a_negative_keep_and_images_a_missing_folder(engine, tmp_path):
    from envbuilder.errors import ProjectError, UsageError

    with pytest.raises(UsageError):
        prune_images(engine, [], keep=-1, in_use=set())
    with pytest.raises(ProjectError):
        project_checkout(tmp_path / "missing")


def test_cli_images_and_prune_say_what_to_do_on_bad_input(cli, tmp_path):
    both = cli("prune", str(tmp_path), "--all")
    assert both.exit_code == 2 and "--all" in both.stderr and "Traceback" not in both.stderr
    missing = cli("images", str(tmp_path / "missing"))
    assert missing.exit_code == 1 and "is not a folder" in missing.stderr

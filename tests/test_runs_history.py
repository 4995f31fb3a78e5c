"""Run history that answers questions: `runs show last` and id prefixes, `runs rm`, `runs compare` (table and one
PNG with the runs' metrics overlaid), `runs list` as a table or TSV that never wraps, and the store's schema
step that adds a run's origin. In-process CLI against a store in a temporary data dir."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from envbuilder.run.artifacts import point_latest
from envbuilder.run.plot import plot_compare
from envbuilder.run.record import RunOrigin
from envbuilder.run.schema import _MIGRATIONS
from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def engine(fake_engine):
    """runs list/show/rm reconcile their runs with Docker: the shared FakeEngine, which has no containers."""
    return fake_engine


@pytest.fixture
def store(cli, tmp_path):
    return RunStore.from_settings(Settings.from_env(tmp_path / "envbuilder-home"))


def make_run(store, *, job="train", args=None, losses=(1.0, 0.5), status="completed", artifacts=None, origin=None,
             command=("python", "train.py")):
    record = store.start_run("cifar", list(command), job=job, image="envbuilder/cifar:1",
                             plan={"torch": "2.13.0+cpu", "flavor": "cpu", "python": "3.11", "plan_hash": "abc"},
                             args={"args": list(args or ()), "resume_from": None}, artifacts_dir=artifacts,
                             origin=origin)
    store.add_metrics(record.id, [(step + 1, "loss", value, 0.0) for step, value in enumerate(losses)])
    if status != "running":
        store.finish_run(record.id, status, 0 if status == "completed" else 1)
    return store.get(record.id)


def test_show_takes_last_and_a_prefix(cli, store):
    make_run(store)
    newest = make_run(store, origin=RunOrigin(git_commit="c0ffee" * 6 + "abcd", git_dirty=True, parent_run="r-x"))
    for name in ("last", newest.id[:-1]):
        result = cli("runs", "show", name)
        assert result.exit_code == 0, result.stderr
        assert newest.id in result.stdout and "c0ffee" in result.stdout and "tracked files changed" in result.stdout
        assert "r-x" in result.stdout and "plan hash abc" in result.stdout
    data = json.loads(cli("runs", "show", "last", "--json").stdout)
    assert (data["id"], data["git_dirty"], data["parent_run"]) == (newest.id, True, "r-x")


def test_show_last_with_no_runs_says_so(cli, store):
    result = cli("runs", "show", "last")
    assert result.exit_code == 1 and "no runs are recorded" in result.stderr and "Traceback" not in result.stderr


def test_rm_removes_the_record_and_log_and_keeps_artifacts(cli, store, tmp_path):
    folder = tmp_path / "proj" / "artifacts" / "train"
    first = make_run(store)
    kept = make_run(store)
    record = make_run(store)
    (folder / record.id).mkdir(parents=True)
    run_folder = Path(record.log_path).parent
    assert run_folder.is_dir()
    result = cli("runs", "rm", first.id, record.id)
    assert result.exit_code == 0, result.stderr
    assert f"removed {first.id}" in result.stdout and f"removed {record.id}" in result.stdout
    assert [r.id for r in store.list_runs()] == [kept.id]
    assert not run_folder.exists() and (folder / record.id).is_dir()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM metrics WHERE run_id = ?", (record.id,)).fetchone()[0] == 0
    assert cli("runs", "rm", record.id).exit_code == 1  # gone: run-not-found


def test_rm_artifacts_deletes_only_per_run_folders_and_moves_latest(cli, store, tmp_path):
    job_dir = tmp_path / "proj" / "artifacts" / "train"
    older = make_run(store)
    older = _with_folder(store, older, job_dir / older.id)
    newer = make_run(store)
    newer = _with_folder(store, newer, job_dir / newer.id)
    mine = tmp_path / "my-results"
    mine.mkdir()
    chosen = make_run(store, artifacts=mine)  # given with --artifacts: never deleted
    point_latest(job_dir / "latest", job_dir / newer.id)
    result = cli("runs", "rm", "--artifacts", newer.id, chosen.id)
    assert result.exit_code == 0, result.stderr
    assert not (job_dir / newer.id).exists() and (job_dir / older.id).is_dir() and mine.is_dir()
    assert f"kept {mine}" in result.stdout
    assert (job_dir / "latest").resolve() == (job_dir / older.id).resolve()


def _with_folder(store, record, folder):
    """A run whose artifacts folder is its own per-run folder (as envbuilder.run.artifacts names it)."""
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_text("x")
    with store._write() as conn:
        conn.execute("UPDATE runs SET artifacts_dir = ? WHERE id = ?", (str(folder), record.id))
    return store.get(record.id)


def test_rm_refuses_a_running_run_and_removes_nothing(cli, store):
    done = make_run(store)
    running = make_run(store, status="running")
    result = cli("runs", "rm", done.id, running.id)
    assert result.exit_code == 1 and "run-active" in result.stderr and "runs stop" in result.stderr
    assert {r.id for r in store.list_runs()} == {done.id, running.id}


def test_compare_prints_what_differs_and_writes_one_png(cli, store, tmp_path):
    a = make_run(store, args=["--lr", "0.1"], losses=(1.0, 0.6, 0.4))
    b = make_run(store, args=["--lr", "0.01"], losses=(1.0, 0.8, 0.7, 0.65))
    out = tmp_path / "cmp.png"
    result = cli("runs", "compare", a.id, b.id[:-1], "-o", str(out))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert a.id in lines[0] and b.id in lines[0]
    [args_row] = [line for line in lines if line.startswith("args")]
    assert "--lr 0.1" in args_row and "--lr 0.01" in args_row
    [loss_row] = [line for line in lines if line.startswith("loss")]
    assert "0.4" in loss_row and "0.65" in loss_row
    assert not any(line.startswith("plan torch") for line in lines)  # the same in both: shown with --all only
    assert any(line.startswith("plan torch") for line in cli("runs", "compare", a.id, b.id, "--all", "-o",
                                                             str(out)).stdout.splitlines())
    assert out.read_bytes().startswith(PNG_MAGIC) and out.stat().st_size > 5000
    data = json.loads(cli("runs", "compare", a.id, b.id, "--json", "-o", str(out)).stdout)
    assert data["runs"] == [a.id, b.id] and data["plot"] == str(out)
    assert {row["field"] for row in data["rows"] if row["differs"]} >= {"args", "loss", "duration"} - {"duration"}


def test_compare_needs_two_runs_and_says_when_there_is_nothing_to_plot(cli, store, tmp_path):
    a = make_run(store, losses=())
    assert cli("runs", "compare", a.id).exit_code == 2
    assert cli("runs", "compare", a.id, a.id).exit_code == 2
    b = make_run(store, losses=())
    result = cli("runs", "compare", a.id, b.id, "-o", str(tmp_path / "none.png"))
    assert result.exit_code == 0 and "no plot" in result.stderr and not (tmp_path / "none.png").exists()


def test_the_compare_png_draws_one_series_per_run(tmp_path):
    """Two runs, one panel: both of matplotlib's first two cycle colours (blue C0, orange C1) are drawn."""
    from matplotlib.image import imread

    out = plot_compare({"r-a": {"loss": [(1, 1.0), (2, 0.5), (3, 0.3)]}, "r-b": {"loss": [(1, 0.9), (2, 0.8)]}},
                       tmp_path / "c.png", axes_of={"r-a": "epoch", "r-b": "epoch"})
    pixels = imread(out)[..., :3]

    def has(rgb):
        return bool((abs(pixels - [c / 255 for c in rgb]).max(axis=-1) < 0.08).sum() > 50)

    assert has((0x1F, 0x77, 0xB4)) and has((0xFF, 0x7F, 0x0E))
    assert not has((0x2C, 0xA0, 0x2C))  # no third series (C2, green)


def test_list_tsv_is_parseable_with_project_and_last_metrics(cli, store):
    make_run(store, losses=(1.0, 0.25))
    make_run(store, command=("python", "-c", "print('a\tb')"), losses=())
    result = cli("runs", "list", "--format", "tsv")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout), delimiter="\t"))
    assert len(rows) == 2 and all(len(row) == 10 for row in rows)
    assert rows[1]["PROJECT"] == "cifar" and rows[1]["METRICS"] == "loss=0.25" and rows[0]["METRICS"] == "-"
    assert rows[0]["COMMAND"] == "python -c print('a b')"  # a tab in a cell never splits it
    data = json.loads(cli("runs", "list", "--format", "json").stdout)
    assert data[1]["last_metrics"] == {"loss": 0.25}


def test_list_table_never_wraps(cli, store):
    long = ("python", "train.py", *[f"--option-{i}=value" for i in range(40)])
    make_run(store, command=long)
    make_run(store)
    lines = cli("runs", "list").stdout.splitlines()
    assert len(lines) == 3 and lines[0].split()[:3] == ["ID", "STATUS", "PROJECT"]
    assert lines[2].endswith("--option-39=value")  # off a terminal, whole lines (newest first)
    assert lines[0].index("COMMAND") == lines[1].index("python") == lines[2].index("python")


def test_a_v3_store_gains_the_origin_columns(tmp_path):
    path = tmp_path / "runs.sqlite3"
    with sqlite3.connect(path) as conn:
        for step in _MIGRATIONS[:3]:
            conn.executescript(step)
        conn.execute("PRAGMA user_version = 3")
        conn.execute("INSERT INTO runs (id, project, command, status, started_at, log_path) "
                     "VALUES ('r-old', 'p', '[\"true\"]', 'completed', 1.0, '/x/log.txt')")
    store = RunStore(path)
    old = store.get("r-old")
    assert (old.git_commit, old.git_dirty, old.parent_run) == (None, None, None)
    new = store.start_run("p", ["true"], origin=RunOrigin("abc", False, "r-old"))
    assert (store.get(new.id).git_commit, store.get(new.id).git_dirty, store.get(new.id).parent_run) == \
        ("abc", False, "r-old")

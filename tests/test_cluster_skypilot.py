"""SkyPilot: `sky queue` read in the shapes SkyPilot really prints, the engine asking a `sky` on PATH, and the
task printed (with a one-line hint) when SkyPilot is not installed or not set up.

The samples in tests/data/cluster/sky come from SkyPilot's own formatter (see its README); one test also draws a
fresh table with the installed SkyPilot, for every job status it has, so a release that changes the table or
adds a status fails here rather than on a user's cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from test_cluster_render import _skypilot_python

from envbuilder.cluster.engines import SkyPilotEngine
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.skypilot import SkyQueueUnreadable, parse_sky_queue
from envbuilder.cluster.spec import JobState
from envbuilder.errors import EnvbuilderError

DATA = Path(__file__).parent / "data" / "cluster" / "sky"
IMAGE = "registry.example.com/team/tinynet:1"


@pytest.mark.parametrize(("sample", "job", "expected"), [
    ("queue-0.14-table.txt", "3", JobState("running", None, "RUNNING")),
    ("queue-0.14-table.txt", "2", JobState("queued", None, "PENDING")),  # empty NAME cell
    ("queue-0.14-table.txt", "1", JobState("failed", None, "FAILED_SETUP")),  # the job is *named* RUNNING
    ("queue-0.14-json.txt", "3", JobState("completed", 0, "SUCCEEDED")),
    ("queue-old-table.txt", "2", JobState("completed", 0, "SUCCEEDED")),
    ("queue-old-table.txt", "1", JobState("stopped", None, "CANCELLED")),
    ("queue-old-table.txt", "7", JobState(None, None, "the job is not in `sky queue`")),
    ("queue-empty.txt", "1", JobState(None, None, "the job is not in `sky queue`")),
    ("queue-gone.txt", "1", JobState(None, None, "the SkyPilot cluster is gone")),
])
def test_sky_queue_samples(sample, job, expected):
    assert parse_sky_queue((DATA / sample).read_text(), job) == expected


def test_a_cluster_sky_queue_cannot_ask_is_not_a_finished_job():
    with pytest.raises(SkyQueueUnreadable, match="is not up"):
        parse_sky_queue((DATA / "queue-not-up.txt").read_text(), "1")


_DRAW = textwrap.dedent("""
    import json, sys, time
    from sky.client.cli import table_utils
    from sky.schemas.api import responses
    from sky.skylet import job_lib
    jobs = [responses.ClusterJobRecord(job_id=i + 1, job_name="x" * (i % 3), username="u", user_hash="h",
                                       submitted_at=time.time() - 60, start_at=None, end_at=None,
                                       resources="1x[L4:1, cpus=4+]", status=status, log_path="~/sky_logs/x",
                                       metadata={})
            for i, status in enumerate(job_lib.JobStatus)]
    print(json.dumps({j.job_id: j.status.value for j in jobs}))
    print("Job queue of current user on cluster c")
    print(table_utils.format_job_queue(jobs))
""")


def test_every_status_in_a_table_drawn_by_the_installed_skypilot():
    done = subprocess.run([_skypilot_python(), "-c", _DRAW], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    first, table = done.stdout.split("\n", 1)
    statuses = json.loads(first)
    assert len(statuses) >= 9
    for job, status in statuses.items():
        state = parse_sky_queue(table, job)
        assert state.detail == status and state.status in ("queued", "running", "completed", "failed", "stopped"), (
            job, status, state)


# --- the engine, asking a `sky` on PATH --------------------------------------------------------------------


def _fake_sky(folder: Path, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sky = folder / "sky"
    sky.write_text("#!/bin/sh\n" + script, encoding="utf-8")
    sky.chmod(0o755)
    return folder


def test_the_engine_reads_the_json_queue(tmp_path, monkeypatch):
    bin_dir = _fake_sky(tmp_path / "bin", f'echo "$@" >> {tmp_path}/calls\ncat {DATA / "queue-0.14-json.txt"}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    state = SkyPilotEngine(ClusterProfile(engine="skypilot")).state("eb-c/3")
    assert state == JobState("completed", 0, "SUCCEEDED")
    assert (tmp_path / "calls").read_text().splitlines() == ["queue --output json eb-c"]


def test_an_older_sky_without_output_json_is_read_from_its_table(tmp_path, monkeypatch):
    # click's answer to an option it does not know: exit 2 and "No such option" on stderr.
    bin_dir = _fake_sky(tmp_path / "bin", f'echo "$@" >> {tmp_path}/calls\n'
                        'case "$*" in *--output*) echo "Error: No such option: --output" >&2; exit 2;; esac\n'
                        f'cat {DATA / "queue-old-table.txt"}\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert SkyPilotEngine(ClusterProfile(engine="skypilot")).state("sglang-unit-test/1").status == "stopped"
    assert (tmp_path / "calls").read_text().splitlines() == ["queue --output json sglang-unit-test",
                                                            "queue sglang-unit-test"]


def test_a_stopped_cluster_leaves_the_run_as_it_is(tmp_path, monkeypatch):
    bin_dir = _fake_sky(tmp_path / "bin", f'cat {DATA / "queue-not-up.txt"}\n')  # exit 0, as SkyPilot does
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(EnvbuilderError) as caught:
        SkyPilotEngine(ClusterProfile(engine="skypilot")).state("eb-c/1")
    assert caught.value.code == "cluster-command-failed" and "is not up" in str(caught.value)


# --- without SkyPilot: the task is printed, with one line saying why --------------------------------------


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "tinynet"\nversion = "0.1"\ndependencies = ["torch"]\n'
        '[tool.envbuilder.jobs.train]\ncommand = "python -m tinynet.train --epochs 2"\n', encoding="utf-8")
    return root


@pytest.mark.parametrize(("installed", "says"), [
    (False, "SkyPilot is not installed (pipx install skypilot"),
    (True, "SkyPilot is not set up (run `sky check`"),
])
def test_without_a_usable_sky_the_task_is_printed_with_a_one_line_hint(cli, project, tmp_path, monkeypatch,
                                                                        installed, says):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.sky
    path = os.environ["PATH"] if not installed else f"{_fake_sky(tmp_path / 'bin', 'exit 99')}{os.pathsep}{os.environ['PATH']}"
    monkeypatch.setenv("PATH", ":".join(p for p in path.split(os.pathsep) if installed or not (Path(p) / "sky").exists()))
    result = cli("submit", str(project), "train", "--to", "skypilot", "--image", IMAGE)
    assert result.exit_code == 0, result.stderr
    assert "resources:" in result.stdout and f"image_id: docker:{IMAGE}" in result.stdout
    assert "python -m tinynet.train --epochs 2" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # the one line that says why, and what to do
    [line] = lines
    assert "printed, not submitted" in line and says in line
    assert json.loads(cli("runs", "list", "--json").stdout) == []
    assert not (tmp_path / "calls").exists()

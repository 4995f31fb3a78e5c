"""Nothing a run writes is lost, with real containers (`envbuilder run` in-process, the local base image as it is):
two runs keep both checkpoints, `--resume last` hands the job the newest one, a bare command's files are kept,
and a job that writes ./outputs or lightning_logs/ into the read-only project fails with a hint naming --rw and
$ENVBUILDER_ARTIFACTS (and succeeds with --rw). A few seconds: each run is one small container."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

TRAIN = textwrap.dedent("""
    import os, sys
    out = os.path.join(os.environ["ENVBUILDER_ARTIFACTS"], "checkpoint.pt")
    start = 0
    if "--resume" in sys.argv:
        with open(sys.argv[sys.argv.index("--resume") + 1]) as f:
            start = int(f.read())
        print(f"resumed from epoch {start}", flush=True)
    with open(out, "w") as f:
        f.write(str(start + 1))
    print(f"epoch {start + 1} loss={1 / (start + 1)}", flush=True)
""")

# What Lightning and many scripts do: write next to themselves, in the working directory.
WRITES_HERE = textwrap.dedent("""
    import os
    os.makedirs("lightning_logs/version_0", exist_ok=True)
    with open("lightning_logs/version_0/events.txt", "w") as f:
        f.write("ok")
    os.makedirs("outputs", exist_ok=True)
    print("wrote outputs", flush=True)
""")


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "train.py").write_text(TRAIN)
    (folder / "writes_here.py").write_text(WRITES_HERE)
    (folder / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "proj"
        version = "0"
        [tool.envbuilder.jobs.train]
        command = ["python", "train.py"]
        gpus = "none"
        resume-arg = "--resume {checkpoint}"
        [tool.envbuilder.jobs.here]
        command = ["python", "writes_here.py"]
        gpus = "none"
    """))
    return folder


def _run(cli, path, *args):
    result = cli("run", path, "--json", *args)  # before any `--`: what follows it is the command
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_two_runs_keep_both_checkpoints_and_resume_last_continues_the_newest(cli, project, base_image):
    _, first = _run(cli, str(project), "train", "--image", base_image)
    _, second = _run(cli, str(project), "train", "--image", base_image)
    assert first["status"] == second["status"] == "completed"
    one, two = Path(first["artifacts_dir"]), Path(second["artifacts_dir"])
    assert one != two and one.parent == two.parent == project / "artifacts" / "train"
    assert (one / "checkpoint.pt").read_text() == "1" and (two / "checkpoint.pt").read_text() == "1"
    assert (project / "artifacts" / "train" / "latest").resolve() == two
    result, resumed = _run(cli, str(project), "train", "--image", base_image, "--resume", "last")
    assert resumed["status"] == "completed", result.stderr
    assert "resumed from epoch 1" in result.stderr  # the job's output goes to stderr with --json
    assert (Path(resumed["artifacts_dir"]) / "checkpoint.pt").read_text() == "2"
    assert (two / "checkpoint.pt").read_text() == "1"  # what it resumed from is untouched
    shown = json.loads(cli("runs", "show", "last", "--json").stdout)
    assert shown["parent_run"] == second["run_id"] and shown["id"] == resumed["run_id"]


def test_a_bare_commands_files_are_kept(cli, project, base_image):
    result, done = _run(cli, str(project), "--image", base_image, "--", "sh", "-c",
                        'echo kept > "$ENVBUILDER_ARTIFACTS/out.txt"')
    assert done["status"] == "completed", result.stderr
    folder = Path(done["artifacts_dir"])
    assert folder.parent == project / "artifacts" / "cmd" and (folder / "out.txt").read_text() == "kept\n"


def test_writing_into_the_read_only_project_names_rw_and_the_artifacts_folder(cli, project, base_image):
    result = cli("run", str(project), "here", "--image", base_image)
    assert result.exit_code == 1
    assert "Read-only file system" in result.stdout  # the job's own traceback, as it printed it
    [error] = [line for line in result.stderr.splitlines() if line.startswith("envbuilder: run-failed")]
    assert "--rw" in error and "$ENVBUILDER_ARTIFACTS" in error and "Traceback" not in result.stderr
    result = cli("run", str(project), "here", "--image", base_image, "--rw")
    assert result.exit_code == 0, result.stderr
    assert (project / "lightning_logs" / "version_0" / "events.txt").read_text() == "ok"
    assert (project / "outputs").is_dir()

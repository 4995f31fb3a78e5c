"""Benchmark submit-to-running latency on the local Slurm cluster (not a test): `envbuilder submit --to slurm`
against a plain `sbatch` of the same script, measured side by side, interleaved, in one run.

    .venv/bin/python benchmarks/bench_submit.py [--rounds 5] [--image IMAGE]

Needs: root (scripts/slurm.sh starts the cluster when it is not up), a running Docker engine and a local image
(default: the newest envbuilder/tinynet tag; build one with `envbuilder build examples/tinynet`). Each round
submits a job that sleeps, once through envbuilder (the whole CLI: project read, profile, render, record,
sbatch) and once as `sbatch` of the script envbuilder wrote; the clock runs from the command's start until
`squeue` reports the job RUNNING (polled every 10 ms, the same for both). Jobs are cancelled after each round.
Prints each path's median and the ratio; writes .bench/bench_submit-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVBUILDER = REPO / ".venv" / "bin" / "envbuilder"
PROJECT_TOML = """[project]
name = "benchjob"
version = "0.1"
[tool.envbuilder.jobs.sleep]
# A job that ends on SIGTERM (a bare `sleep` as PID 1 ignores it), so each cancel frees the node at once.
command = ["bash", "-c", "trap 'exit 143' TERM; sleep 60 & wait"]
"""


def _running_after(job_id: str, started: float, timeout: float = 120.0) -> float:
    while time.monotonic() - started < timeout:
        state = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"], capture_output=True,
                               text=True, check=False).stdout.strip()
        if state == "RUNNING":
            return time.monotonic() - started
        time.sleep(0.01)
    raise SystemExit(f"job {job_id} did not start within {timeout:.0f} s")


def _gone(job_id: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "--noheader", f"--jobs={job_id}", "--format=%T"], capture_output=True,
                               text=True, check=False).stdout.strip()
        if state in ("", "CANCELLED", "COMPLETED", "FAILED"):
            return
        time.sleep(0.05)


def _default_image() -> str:
    out = subprocess.run(["docker", "images", "envbuilder/tinynet", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if not out:
        raise SystemExit("no envbuilder/tinynet image: build one (envbuilder build examples/tinynet) or pass --image")
    return out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image", default=None)
    options = parser.parse_args()
    subprocess.run(["bash", str(REPO / "scripts" / "slurm.sh")], check=True)
    image = options.image or _default_image()
    work = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    project = work / "benchjob"
    project.mkdir()
    (project / "pyproject.toml").write_text(PROJECT_TOML)
    env = {**os.environ, "ENVBUILDER_HOME": str(work / "home")}
    ours, plain, ours_cli, plain_cli = [], [], [], []
    try:
        for _ in range(options.rounds):
            started = time.monotonic()
            done = subprocess.run([str(ENVBUILDER), "submit", str(project), "sleep", "--to", "slurm", "--image", image,
                                   "--json"], capture_output=True, text=True, env=env, check=True)
            ours_cli.append(time.monotonic() - started)
            submitted = json.loads(done.stdout)
            ours.append(_running_after(submitted["job_id"], started))
            script = work / "plain.sbatch"
            text = Path(submitted["description_path"]).read_text()
            shutil.copy(submitted["description_path"], script)
            script.write_text(text.replace(submitted["log_path"], str(work / "plain.log")))
            subprocess.run(["scancel", submitted["job_id"]], check=True)
            _gone(submitted["job_id"])  # Slurm holds back scheduling while a job is completing
            started = time.monotonic()
            job_id = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                                    check=True).stdout.strip().split(";")[0]
            plain_cli.append(time.monotonic() - started)
            plain.append(_running_after(job_id, started))
            subprocess.run(["scancel", job_id], check=True)
            _gone(job_id)  # the next round starts on a free node
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {"rounds": options.rounds, "image": image, "envbuilder_submit_s": ours, "plain_sbatch_s": plain,
              "median_envbuilder_s": statistics.median(ours), "median_sbatch_s": statistics.median(plain),
              "ratio": statistics.median(ours) / statistics.median(plain),
              "median_envbuilder_command_s": statistics.median(ours_cli), "median_sbatch_command_s": statistics.median(plain_cli)}
    print(f"submit -> RUNNING on the local Slurm cluster, median of {options.rounds}:")
    print(f"  envbuilder submit --to slurm  {result['median_envbuilder_s']:6.2f} s   {[round(x, 2) for x in ours]}")
    print(f"  plain sbatch (same script)    {result['median_sbatch_s']:6.2f} s   {[round(x, 2) for x in plain]}")
    print(f"  ratio                         {result['ratio']:6.2f}x")
    print(f"  the commands alone (until they return): envbuilder submit {result['median_envbuilder_command_s']:.2f} s, "
          f"sbatch {result['median_sbatch_command_s']:.2f} s")
    out = REPO / ".bench" / f"bench_submit-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())

"""`envbuilder run --stop-on-nan` and the metrics file channel, for real: a tiny training loop in the local base image.

The loop writes each step to $ENVBUILDER_METRICS and prints it; at step 3 its loss turns NaN. envbuilder must
read the file (the preferred channel), flag the NaN, and stop the job with SIGTERM, which the loop catches to
"checkpoint" and exit, as a real trainer would. Seconds: no build, the base image as it is.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from envbuilder.run.store import RunStore
from envbuilder.settings import Settings

pytestmark = pytest.mark.docker

LOOP = textwrap.dedent("""
    import json, os, signal, sys, time
    stop = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
    with open(os.environ["ENVBUILDER_METRICS"], "a") as out:
        for step in range(1, 300):
            loss = float("nan") if step >= 3 else 1.0 / step
            out.write(json.dumps({"step": step * 10, "train/loss": loss, "phase": "train"}) + "\\n")
            out.flush()
            print(f"epoch {step} loss={loss} batch_size=32", flush=True)
            if stop:
                print(f"SIGTERM at step {step}: checkpoint saved", flush=True)
                sys.exit(0)
            time.sleep(0.2)
    print("ran to the end", flush=True)
""")


def test_stop_on_nan_stops_a_real_job_gracefully(cli, base_image, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "loop.py").write_text(LOOP, encoding="utf-8")
    artifacts = tmp_path / "artifacts"
    result = cli("run", str(project), "--image", base_image, "--gpus", "none", "--artifacts", str(artifacts),
                 "--stop-on-nan", "--json", "--", "python", "loop.py")
    assert result.exit_code == 1, result.stderr  # stopped: not a success
    data, _ = json.JSONDecoder().raw_decode(result.stdout)  # the result; the run-stopped error follows it
    assert data["status"] == "stopped"
    assert data["message"].startswith("stopped by --stop-on-nan: train/loss was nan at step 30")
    assert "SIGTERM at step" in result.stderr and "ran to the end" not in result.stderr  # the job saw SIGTERM
    assert {"code": "nonfinite-loss", "message": "train/loss was nan at step 30"} in data["notices"]

    store = RunStore.from_settings(Settings.from_env(tmp_path / "envbuilder-home"))
    series = store.metric_series(data["run_id"])
    assert list(series) == ["train/loss"]  # the file's names, not the log's (`loss`, `epoch`) guesses
    assert series["train/loss"][:2] == [(10, 1.0), (20, 0.5)]
    assert (artifacts / ".envbuilder" / "metrics.jsonl").exists()
    shown = cli("runs", "show", data["run_id"])
    assert "notice: train/loss was nan at step 30 [nonfinite-loss]" in shown.stdout

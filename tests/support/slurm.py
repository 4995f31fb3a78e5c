"""The `slurm_cluster` fixture: a real single-node Slurm cluster on this machine, started by scripts/slurm.sh.

The script installs slurm-wlm and munge from Debian packages when missing, writes a minimal slurm.conf for
this host, starts munged, slurmctld and slurmd, and waits until `sinfo` shows the node idle (a second call is
instant). It needs root; without it the tests that use the fixture fail with the script's message, never skip.
ENVBUILDER_SKIP_SLURM=1 skips them on purpose (a machine that must not run daemons).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The node's name, once the cluster answers."""
    if os.environ.get("ENVBUILDER_SKIP_SLURM") == "1":
        pytest.skip("ENVBUILDER_SKIP_SLURM=1")
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"scripts/slurm.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    assert shutil.which("sbatch"), "scripts/slurm.sh succeeded but sbatch is not on PATH"
    node = subprocess.run(["sinfo", "--noheader", "--format=%n"], capture_output=True, text=True, timeout=30, check=False)
    return node.stdout.split()[0]

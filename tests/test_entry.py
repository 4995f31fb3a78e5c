"""The `envbuilder` program's entry (envbuilder.cli.entry, also `python -m envbuilder`): it exits with main's code,
and what the command wrote is whole although the interpreter's last garbage collection is skipped (gc.freeze)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CPU_FLAGS = ("--gpu", "none", "--target-os", "linux", "--target-arch", "x86_64")


def program(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "ENVBUILDER_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "envbuilder", "--data-dir", str(home), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_the_program_exits_with_the_command_code_and_all_it_printed(tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "requirements.txt").write_text("torch\nnumpy\n", encoding="utf-8")
    answer = program("resolve", str(project), *CPU_FLAGS, "--json", home=tmp_path / "home")
    assert answer.returncode == 0, answer.stderr
    plan = json.loads(answer.stdout)  # the whole document: nothing cut off at exit
    assert plan["torch"]["flavor"] == "cpu" and answer.stdout.endswith("\n")

    refused = program("run", str(tmp_path / "missing"), "--image", "img:1", "--", "true", home=tmp_path / "home")
    assert refused.returncode == 1
    assert refused.stderr.startswith("envbuilder: project-not-found: ") and "Traceback" not in refused.stderr

    usage = program("resolve", str(project), "--gpu", "tpu", home=tmp_path / "home")
    assert usage.returncode == 2 and usage.stdout == ""

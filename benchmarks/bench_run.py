"""How much `envbuilder run` costs over a bare `docker run`, and how fast the CLI starts.

    .venv/bin/python benchmarks/bench_run.py [--image IMG] [-n 15] [--baseline SRC]

Measures, in one process and interleaved (so engine load hits both alike), the wall time of
`envbuilder run DIR --image IMG -- true` against `docker run --rm IMG true`, then `envbuilder --help` and
`envbuilder --version`. Prints medians side by side and the ratio; the target is a ratio under 1.15 (issue #7).
A floor row times benchmarks/floor_client.py in the same loop: the same engine calls (the output attached before
start, as docker run does) and a SQLite row from a stdlib-only Python client, the least any Python implementation
of the command can cost.
Each command's CPU time (user + system, of the client process only: the engine's work is not in it) is printed
too: on a shared, loaded machine wall times wander, while CPU time says how much work each client does.
The envbuilder side does what a real run does: records the run in SQLite, mounts the project, streams
logs to a file, parses metrics and removes the container. With --baseline SRC (another envbuilder source
tree, e.g. `git archive HEAD | tar -x -C /tmp/before`), that tree's `envbuilder run` is timed in the same loop,
so before and after meet the same engine load.

Python's bytecode caches are written under the temporary folder (PYTHONPYCACHEPREFIX) during the warm-up,
as an installed package has them, even where PYTHONDONTWRITEBYTECODE=1 is set (it is on the development
machine); --no-bytecode-cache keeps the environment as it is, so every run compiles envbuilder's modules.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_IMAGE = "envbuilder/base-python:3.11-bookworm"
TARGET_RATIO = 1.15
# Runs the CLI from the source tree named by argv[1]; used for both sides of a --baseline comparison.
LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import envbuilder.cli as cli; "
          "cli.entry() if hasattr(cli, 'entry') else sys.exit(cli.main(sys.argv[1:]))")  # a tree from before entry()
REPO = Path(__file__).resolve().parents[1]


CPU_S: dict[str, list[float]] = {}  # argv[0..] joined -> CPU seconds of each run


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run; its CPU seconds are kept in CPU_S."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    CPU_S.setdefault(" ".join(argv), []).append(cpu)
    return wall


def cpu_median(argv: list[str]) -> float:
    return statistics.median(CPU_S[" ".join(argv)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"image to run `true` in (default {DEFAULT_IMAGE})")
    parser.add_argument("-n", type=int, default=15, help="repetitions of each measurement (default 15)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--baseline", metavar="SRC", help="also time `envbuilder run` from the source tree SRC")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE as set: every run compiles envbuilder's modules")
    args = parser.parse_args(argv)

    envbuilder = shutil.which("envbuilder", path=str(Path(sys.executable).parent)) or "envbuilder"
    docker = shutil.which("docker") or "docker"
    with tempfile.TemporaryDirectory(prefix="envbuilder-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        env = {**os.environ, "ENVBUILDER_HOME": str(Path(tmp) / "home")}
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        bare_cmd = [docker, "run", "--rm", args.image, "true"]
        # The floor for any Python client: the same engine calls and a SQLite row, stdlib only (floor_client.py).
        floor_cmd = [sys.executable, str(REPO / "benchmarks" / "floor_client.py"), str(Path(tmp) / "floor.sqlite3"),
                     args.image, "true"]
        run_args = ["run", str(project), "--image", args.image, "--", "true"]
        ours_cmd = [envbuilder, *run_args]
        base_cmd = None
        if args.baseline:
            ours_cmd = [sys.executable, "-c", LAUNCH, str(REPO), *run_args]
            base_cmd = [sys.executable, "-c", LAUNCH, str(Path(args.baseline).resolve()), *run_args]
        cmds = [c for c in (bare_cmd, floor_cmd, ours_cmd, base_cmd) if c]
        for cmd in cmds:  # warm-up: page cache, the engine's image metadata, the run database
            timed(cmd, env)
        bare, floor, ours, base = [], [], [], []
        for _ in range(args.n):
            bare.append(timed(bare_cmd, env))
            floor.append(timed(floor_cmd, env))
            ours.append(timed(ours_cmd, env))
            if base_cmd:
                base.append(timed(base_cmd, env))
        help_s = [timed([envbuilder, "--help"], env) for _ in range(args.n)]
        version_s = [timed([envbuilder, "--version"], env) for _ in range(args.n)]
        cpu = {"docker_run_cpu_median_s": cpu_median(bare_cmd), "envbuilder_run_cpu_median_s": cpu_median(ours_cmd),
               "floor_client_cpu_median_s": cpu_median(floor_cmd)}
        if base_cmd:
            cpu["baseline_run_cpu_median_s"] = cpu_median(base_cmd)

    figures = {
        "image": args.image, "n": args.n, "bytecode_cache": not args.no_bytecode_cache,
        "docker_run_median_s": statistics.median(bare), "envbuilder_run_median_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(bare),
        "floor_client_median_s": statistics.median(floor), "floor_ratio": statistics.median(floor) / statistics.median(bare),
        "help_median_s": statistics.median(help_s), "version_median_s": statistics.median(version_s), **cpu,
    }
    if base:
        figures.update(baseline=args.baseline, baseline_run_median_s=statistics.median(base),
                       baseline_ratio=statistics.median(base) / statistics.median(bare))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        cache = "bytecode cached" if figures["bytecode_cache"] else "no bytecode cache: modules compiled every run"
        print(f"image {args.image}, median of {args.n} ({cache})")
        print(f"  docker run --rm IMG true                  {figures['docker_run_median_s'] * 1000:7.0f} ms"
              f"  (CPU {figures['docker_run_cpu_median_s'] * 1000:.0f} ms)")
        print(f"  envbuilder run DIR --image IMG -- true    {figures['envbuilder_run_median_s'] * 1000:7.0f} ms"
              f"  (CPU {figures['envbuilder_run_cpu_median_s'] * 1000:.0f} ms)")
        print(f"  ratio                                     {figures['ratio']:7.2f} x (target < {TARGET_RATIO})")
        print(f"  floor: stdlib client, same calls + record {figures['floor_client_median_s'] * 1000:7.0f} ms"
              f"  ({figures['floor_ratio']:.2f} x; CPU {figures['floor_client_cpu_median_s'] * 1000:.0f} ms)")
        if base:
            print(f"  baseline ({args.baseline}) run          {figures['baseline_run_median_s'] * 1000:7.0f} ms"
                  f"  ({figures['baseline_ratio']:.2f} x; CPU {figures['baseline_run_cpu_median_s'] * 1000:.0f} ms)")
        print(f"  envbuilder --help                         {figures['help_median_s'] * 1000:7.0f} ms")
        print(f"  envbuilder --version                      {figures['version_median_s'] * 1000:7.0f} ms")
    return 0 if figures["ratio"] < TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark image builds (not a test): envbuilder's cached, staged builds against plain `docker build`
and a naive hand-written Dockerfile, measured side by side in one run on the cpuproj fixture.

    .venv/bin/python benchmarks/bench_build.py [--skip-naive] [--only noop] [--baseline SRC]

Needs: a running engine, the debootstrapped base (made if missing), /opt/wheels (torch 2.13.0+cpu, served
on loopback as the PyTorch CPU index), PyPI through the host CA bundle. Prints a table and writes
.bench/bench_build-<time>.json. "cold" is `--no-cache` (every layer rebuilt); BuildKit's cache mounts
(uv's download cache) stay warm, as they do on any machine that has built before.
`--only noop` measures just the no-op rebuilds, reusing .bench/build-work (built first when missing).
`--baseline SRC` also times the no-op `envbuilder build` of another source tree (e.g. `git archive HEAD`
unpacked), interleaved with this tree's, so before and after meet the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from envbuilder.index.server import IndexServer, stable_port  # noqa: E402

from envbuilder.api import plan_project  # noqa: E402
from envbuilder.build.base import bootstrap_base  # noqa: E402
from envbuilder.build.image import build_image  # noqa: E402
from envbuilder.docker.engine import Docker  # noqa: E402
from envbuilder.resolve.plan import ResolveRequest, TargetFlags  # noqa: E402
from envbuilder.render import RenderOptions  # noqa: E402
from envbuilder.settings import Settings  # noqa: E402

CA = Path("/etc/ssl/certs/ca-certificates.crt")
WHEELS = Path("/opt/wheels")
FIXTURE = REPO / "tests" / "data" / "projects-build" / "cpuproj"
BENCH = REPO / ".bench"
TARGET = TargetFlags(os="linux", arch="x86_64", gpu="none")
NOOP_TARGET_RATIO = 2.0
# Runs the CLI from the source tree named by argv[1] (--baseline).
LAUNCH = "import sys; sys.path.insert(0, sys.argv.pop(1)); from envbuilder.cli import main; sys.exit(main(sys.argv[1:]))"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-naive", action="store_true", help="leave out the naive Dockerfile comparison")
    parser.add_argument("--only", choices=["noop"], help="measure only this part, reusing .bench/build-work")
    parser.add_argument("--baseline", metavar="SRC", help="also time the no-op build of the source tree SRC")
    args = parser.parse_args()

    work = BENCH / "build-work"
    project = work / "cpuproj"
    if not (args.only and project.is_dir()):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.copytree(FIXTURE, project)
    settings = Settings(work / "home")
    docker = Docker()
    base = bootstrap_base(docker).name
    rows: list[tuple[str, str, str]] = []
    results: dict = {"base": base, "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    with IndexServer([WHEELS], port=stable_port(str(WHEELS))) as index:
        options = RenderOptions(base_image=base, torch_index_url=index.url)

        def plan():
            return plan_project(str(project), flags=TARGET, request=ResolveRequest(python="3.11"), settings=settings)[1]

        def build(**kw):
            return build_image(plan(), options, project_dir=project, settings=settings, docker=docker,
                               network="host", ca_cert=CA, **kw)

        cold = build(force=not args.only)
        if not cold.cached:
            results["cold"] = {"seconds": cold.seconds, "image": cold.image}
            rows.append(("cold build (--no-cache, warm download cache)", f"{cold.seconds:.1f} s", _steps(cold)))

        cli = [str(REPO / ".venv" / "bin" / "envbuilder"), "--data-dir", str(settings.data_dir), "build", str(project),
               "--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none", "--python", "3.11",
               "--base-image", base, "--torch-index-url", index.url, "--ca-cert", str(CA), "--network", "host", "--json"]
        repeats = 9 if args.only else 3
        # An installed envbuilder runs from cached bytecode: without it every run compiles its modules first
        # (PYTHONDONTWRITEBYTECODE is set in some shells), which measures the compiler, not the build path.
        py_env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        py_env["PYTHONPYCACHEPREFIX"] = str(BENCH / "pycache")
        noop, baseline = [], []
        for _ in range(repeats):
            noop.append(_timed(lambda: subprocess.run(cli, check=True, capture_output=True, env=py_env)))
            if args.baseline:
                launch = [sys.executable, "-c", LAUNCH, str(Path(args.baseline).resolve()), *cli[1:]]
                baseline.append(_timed(lambda: subprocess.run(launch, check=True, capture_output=True, env=py_env)))
        out = json.loads(subprocess.run(cli, check=True, capture_output=True, text=True, env=py_env).stdout)
        assert out["cached"], out
        build_dir = settings.data_dir / "builds" / cold.build_key[:16]
        docker_argv = ["/usr/bin/docker", "build", "--progress=plain", "--network", "host",
                       "--secret", f"id=ca,src={CA}", "-f", str(build_dir / "Dockerfile"), "-t", "envbuilder-bench/docker-noop",
                       str(project)]
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        docker_noop = [_timed(lambda: subprocess.run(docker_argv, check=True, capture_output=True, env=env))
                       for _ in range(repeats)]
        results["noop"] = {"envbuilder_cli_s": noop, "docker_build_cached_s": docker_noop}
        rows.append(("no-op rebuild: `envbuilder build` end to end", f"{min(noop):.2f} s",
                     f"median of {repeats}: {statistics.median(noop):.2f} s"))
        if baseline:
            results["noop"]["baseline"] = {"source": args.baseline, "envbuilder_cli_s": baseline}
            rows.append((f"no-op rebuild: baseline {args.baseline}", f"{min(baseline):.2f} s",
                         f"median of {repeats}: {statistics.median(baseline):.2f} s"))
        rows.append(("no-op rebuild: `docker build`, fully cached", f"{min(docker_noop):.2f} s",
                     f"median of {repeats}: {statistics.median(docker_noop):.2f} s"))
        # The target (issue #7): the no-op `envbuilder build` within 2x a fully cached `docker build`.
        ratios = {"envbuilder": statistics.median(noop) / statistics.median(docker_noop)}
        if baseline:
            ratios["baseline"] = statistics.median(baseline) / statistics.median(docker_noop)
        results["noop"]["ratio_to_docker"] = ratios
        rows.append(("no-op rebuild: ratio of medians to `docker build`", f"{ratios['envbuilder']:.2f} x",
                     f"target < {NOOP_TARGET_RATIO}" + (f"; baseline {ratios['baseline']:.2f} x" if baseline else "")))
        if args.only:
            _report(rows, results)
            return

        (project / "cpuproj" / "__init__.py").write_text((project / "cpuproj" / "__init__.py").read_text() + "\nVERSION = 2\n")
        src = build()
        results["source_change"] = {"seconds": src.seconds, "steps": _step_status(src)}
        rows.append(("rebuild after a source-only change", f"{src.seconds:.1f} s", _steps(src)))

        pyproject = project / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('"onnxruntime",', '"onnxruntime",\n  "six",'))
        dep = build()
        results["dependency_added"] = {"seconds": dep.seconds, "steps": _step_status(dep),
                                       "log_excerpt": _grep(dep.log, ("Prepared", "Installed", "Resolved"))}
        rows.append(("rebuild after adding one small dependency (six)", f"{dep.seconds:.1f} s", _steps(dep)))

        size = _sizes(docker, dep.image, base)
        results["size"] = size
        rows.append(("image size", _mb(size["image"]),
                     f"base {_mb(size['base'])} + /opt/venv {_mb(size['venv'])} + project {_mb(size['project'])} "
                     f"= {_mb(size['parts'])}; overhead {size['overhead_pct']:+.1f} %"))

        if not args.skip_naive:
            naive = _naive(docker, base, index, project, work)
            results["naive"] = naive
            rows.append(("naive Dockerfile (COPY . . then pip install): cold", f"{naive['cold_s']:.1f} s", _mb(naive["size"])))
            rows.append(("naive Dockerfile: rebuild after a source-only change", f"{naive['source_change_s']:.1f} s",
                         "reinstalls every dependency"))

    _report(rows, results)


def _report(rows: list[tuple[str, str, str]], results: dict) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measurement':<{width}}  {'result':>10}  notes")
    for name, value, notes in rows:
        print(f"{name:<{width}}  {value:>10}  {notes}")
    BENCH.mkdir(exist_ok=True)
    out_file = BENCH / f"bench_build-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out_file.write_text(json.dumps({**results, "table": rows}, indent=2, default=str))
    print(f"\nwritten {out_file}")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 3)


def _step_status(built) -> dict[str, str]:
    return {s.title.split("]")[0] + "]": s.status for s in built.steps if s.title.startswith("[") and "internal" not in s.title}


def _steps(built) -> str:
    status = _step_status(built)
    return ", ".join(f"{k.strip('[]')} {v}" for k, v in status.items() if not k.startswith("[base"))


def _grep(log: Path | None, words) -> list[str]:
    if not log:
        return []
    return [ln for ln in log.read_text().splitlines() if any(w in ln for w in words)]


def _sizes(docker, image: str, base: str) -> dict:
    def du(path: str) -> int:
        c = docker.client.containers.run(image, ["du", "-sb", path], remove=True)
        return int(c.decode().split()[0])

    image_size = docker.image_inspect(image)["Size"]
    base_size = docker.image_inspect(base)["Size"]
    venv, proj = du("/opt/venv"), du("/workspace/project")
    parts = base_size + venv + proj
    return {"image": image_size, "base": base_size, "venv": venv, "project": proj, "parts": parts,
            "overhead_pct": 100.0 * (image_size - parts) / parts}


def _naive(docker, base: str, index: IndexServer, project: Path, work: Path) -> dict:
    """What many projects write by hand: copy everything, then pip install (the CA copied in, as such files do)."""
    ctx = work / "naive"
    shutil.copytree(project, ctx)
    shutil.copy(CA, ctx / "ca.pem")
    (ctx / "requirements.txt").write_text("torch==2.13.0+cpu\nonnxruntime==1.32.0\nsix\n")
    (ctx / "Dockerfile").write_text(
        f"FROM {base}\nWORKDIR /app\nCOPY . .\n"
        f"RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install --cert /app/ca.pem "
        f"--extra-index-url {index.url} -r requirements.txt\n"
        "ENV PATH=/opt/venv/bin:$PATH\n"
    )
    argv = ["/usr/bin/docker", "build", "--network", "host", "-t", "envbuilder-bench/naive", str(ctx)]
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    cold = _timed(lambda: subprocess.run(argv + ["--no-cache"], check=True, capture_output=True, env=env))
    (ctx / "cpuproj" / "__init__.py").write_text((ctx / "cpuproj" / "__init__.py").read_text() + "\nVERSION = 3\n")
    again = _timed(lambda: subprocess.run(argv, check=True, capture_output=True, env=env))
    return {"cold_s": cold, "source_change_s": again, "size": docker.image_inspect("envbuilder-bench/naive")["Size"]}


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


if __name__ == "__main__":
    main()

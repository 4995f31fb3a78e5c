"""Benchmark reuse through a registry (not a test): pulling the plan's content-addressed tag against a full
build of the same plan, and "no image" to a finished job via each, measured side by side in one run on the
cpuproj fixture, with a real registry on loopback (tests/support/registry.py).

    .venv/bin/python benchmarks/bench_reuse.py [--rounds 2]

Each round: remove the image and its tags, then (a) `build --push` with reuse off and --no-cache (a full
build: every layer rebuilt; BuildKit's uv download cache stays warm, as on any machine that built before)
and (b) remove it again and `build --push` with reuse (a pull of the content-addressed tag). "to job" adds
running `python -c "import torch"` in the image. The base image is local in both paths. Needs: a running
engine, the debootstrapped base, /opt/wheels (torch +cpu), PyPI through the host CA bundle, docker-registry.
Prints a table and writes .bench/bench_reuse-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.fixtures import CPU_TARGET, CPU_WHEELS, HOST_CA, copy_project  # noqa: E402
from support.registry import LocalRegistry  # noqa: E402

from envbuilder.api import plan_project  # noqa: E402
from envbuilder.build.base import bootstrap_base  # noqa: E402
from envbuilder.build.image import build_image  # noqa: E402
from envbuilder.build.registry import RegistryOptions  # noqa: E402
from envbuilder.docker.engine import Docker  # noqa: E402
from envbuilder.index.server import IndexServer, stable_port  # noqa: E402
from envbuilder.render import RenderOptions  # noqa: E402
from envbuilder.resolve.plan import ResolveRequest, TargetFlags  # noqa: E402
from envbuilder.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    docker = Docker()
    base = bootstrap_base(docker).name
    work = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
    project = copy_project("cpuproj", work)
    settings = Settings(work / "home")
    rows: dict[str, list[float]] = {"build": [], "reuse": [], "build+job": [], "reuse+job": []}
    with IndexServer([CPU_WHEELS], port=stable_port(str(CPU_WHEELS))) as index, \
            LocalRegistry(work / "registry") as registry:
        _, plan = plan_project(str(project), flags=TargetFlags(**CPU_TARGET),
                               request=ResolveRequest(python="3.11", offline=True), settings=settings)
        options = RenderOptions(base_image=base, torch_index_url=index.url)
        repository = f"{registry.host}/bench/cpuproj"

        def build(reuse: bool):
            return build_image(plan, options, project_dir=project, settings=settings, docker=docker,
                               network="host", ca_cert=HOST_CA if HOST_CA.is_file() else None, force=not reuse,
                               registry=RegistryOptions(repository, push=True, reuse=reuse))

        first = build(False)  # warm-up, and the pushed image every reuse pulls
        for _ in range(args.rounds):
            for how in ("build", "reuse"):
                docker.remove_image(first.image_id, force=True)
                started = time.perf_counter()
                made = build(how == "reuse")
                rows[how].append(time.perf_counter() - started)
                code, _ = docker.run_once(made.image, ["python", "-c", "import torch"])
                rows[f"{how}+job"].append(time.perf_counter() - started)
                assert code == 0 and (made.reused is not None) == (how == "reuse")
                first = made
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{'path':<12}{'median s':>10}   rounds")
    for key, value in medians.items():
        print(f"{key:<12}{value:>10.2f}   {', '.join(f'{x:.2f}' for x in rows[key])}")
    print(f"reuse is {medians['build'] / medians['reuse']:.1f}x faster than a full build; "
          f"no image -> job: {medians['build+job'] / medians['reuse+job']:.1f}x")
    out = REPO / ".bench" / f"bench_reuse-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rounds": rows, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()

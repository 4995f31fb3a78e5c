"""Benchmark reuse through a registry (not a test): pulling the plan's content-addressed tag against a full
build of the same plan, and "no image" to a finished job via each, measured side by side in one run on the
cpuproj fixture, with a real registry on loopback (tests/support/registry.py).

    .venv/bin/python benchmarks/bench_reuse.py [--rounds 2] [--reuse-engine private|shared]

WARNING: it runs `docker builder prune -af` on the shared engine (/var/run/docker.sock) before every measured
build, which empties every build cache on that engine, other people's included: that is why it is a benchmark
and not part of the test suite. Run it when nobody needs their build cache warm.

Each round starts both sides from a genuinely cold state, as a fresh CI runner that has only the base image:
- build: the project's images and tags are removed and the engine's build cache pruned (BuildKit's layer cache
  and its cache mounts, uv's download cache among them), then `build` with reuse off: every wheel is
  downloaded again (torch from /opt/wheels served on loopback, the rest from PyPI through the proxy) and every
  layer rebuilt. The image is then pushed (timed apart: "push") under the content-addressed tag.
- reuse: on an engine that holds none of that image's layers, `build` with reuse on: it finds the tag in the
  registry and pulls it (every layer above the base is downloaded). The base image stays on both sides: both
  need it, and a CI runner pulls it the same way whichever path it takes. It is the debootstrapped base plus a
  label (envbuilder/bench-reuse-base), an image id no push has touched, so that both engines compute one key
  (see bench_base).
"+job" adds running `python -c "import torch"` in the image: "no image" to a finished job.

Where the reuse side runs (--reuse-engine):
- private (the default, root only): a fresh engine of its own (tests/support/private_engine.py: dockerd in its
  own network namespace, its own data root under /var/tmp/envbuilder-bench-engine), holding only the base image
  (docker save | load, so its id and the build key stay the same). A second registry process, started in that
  namespace with nsenter on the same port, serves the same storage folder, so the engine pulls from
  127.0.0.1:PORT exactly what the shared engine pushed. This is "a fresh engine" as the issue asks. The build
  side cannot move there: the namespace reaches neither PyPI nor the host's loopback index.
- shared: the shared engine, after removing the image and pruning the build cache (which holds the layers
  otherwise).
Either way, before each pull the run counts the image's non-empty layers (above the base) that some image on
that engine still holds, warns when there are any (the pull would skip them) and records the count.

Needs: a running engine, the debootstrapped base, /opt/wheels (torch +cpu), PyPI through the host CA bundle,
docker-registry; for the private side also root, dockerd, unshare and nsenter. Prints a table (with the load
average, as the machine is shared) and writes .bench/bench_reuse-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.fixtures import CPU_TARGET, CPU_WHEELS, HOST_CA, copy_project  # noqa: E402
from support.private_engine import PrivateEngine  # noqa: E402
from support.private_engine import unavailable as private_unavailable  # noqa: E402
from support.registry import LocalRegistry, registry_binary  # noqa: E402

from envbuilder.api import plan_project  # noqa: E402
from envbuilder.build.base import bootstrap_base  # noqa: E402
from envbuilder.build.image import build_image  # noqa: E402
from envbuilder.build.registry import RegistryOptions, push_image, push_refs  # noqa: E402
from envbuilder.docker.engine import Docker, Engine  # noqa: E402
from envbuilder.docker.socket_engine import SocketEngine  # noqa: E402
from envbuilder.index.server import IndexServer, stable_port  # noqa: E402
from envbuilder.render import RenderOptions  # noqa: E402
from envbuilder.resolve.plan import ResolveRequest, TargetFlags  # noqa: E402
from envbuilder.settings import Settings  # noqa: E402

BENCH_ENGINE_ROOT = Path("/var/tmp/envbuilder-bench-engine")  # not the fault tests' engine: they keep running
BENCH_BASE = "envbuilder/bench-reuse-base:latest"
JOB = ["python", "-c", "import torch"]
# The diff id of an empty layer (a WORKDIR's): every image with one shares it and a pull has nothing to fetch.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"


@dataclass
class Side:
    """An engine one side of the benchmark runs on, and how to make it cold: `docker` is the CLI prefix."""

    name: str
    engine: Engine
    docker: list[str]
    base: str
    host: str | None = None  # DOCKER_HOST while this side works; None: the default engine

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """DOCKER_HOST set to this side's engine: the engine's SDK client (pulls, registry lookups), created on
        first use, reads it, and so would a docker CLI build (none should run on the reuse side)."""
        if self.host is None:
            yield
            return
        before = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = self.host
        try:
            yield
        finally:
            if before is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = before

    def cli(self, *args: str) -> str:
        return subprocess.run([*self.docker, *args], check=True, capture_output=True, text=True).stdout

    def clear(self, repositories: set[str]) -> None:
        """Remove every image of these repositories (all their tags), then the engine's whole build cache:
        it keeps the layers of a removed image, and its cache mounts keep the downloads."""
        ids = set()
        for repository in repositories:
            ids.update(self.cli("image", "ls", "-q", "--no-trunc", "--filter", f"reference={repository}").split())
        for image_id in sorted(ids):
            self.engine.remove_image(image_id, force=True)
        self.cli("builder", "prune", "-af")

    def layers_held(self, layers: set[str]) -> int:
        """How many of these layers some image on this engine holds: a pull would skip those."""
        held = set()
        for image_id in self.cli("image", "ls", "-aq", "--no-trunc").split():
            held.update(_layers(self.engine, image_id))
        return len(layers & held)


def _layers(engine: Engine, image: str) -> list[str]:
    info = engine.image_inspect(image)
    return list((info or {}).get("RootFS", {}).get("Layers", []))


@contextlib.contextmanager
def private_side(registry: LocalRegistry, base: str, work: Path) -> Iterator[Side]:
    """A private engine holding only the base, and a registry in its namespace serving `registry`'s storage."""
    with PrivateEngine(BENCH_ENGINE_ROOT) as engine:
        engine.load(base)
        netns = f"/proc/{int(engine.pidfile.read_text())}/ns/net"
        # `unshare -n` leaves the namespace's loopback down; the engine pulls from 127.0.0.1 in it.
        subprocess.run(["nsenter", f"--net={netns}", "ip", "link", "set", "lo", "up"], check=True)
        with (work / "registry-private.log").open("ab") as log:
            process = subprocess.Popen(["nsenter", f"--net={netns}", registry_binary(), "serve",
                                        str(registry.root / "config.yml")], stdout=log, stderr=log,
                                       start_new_session=True)
        try:
            _wait_for_registry(netns, registry.url, process)
            side = Side("private", SocketEngine(str(engine.socket)), ["docker", "-H", engine.host], base,
                        host=engine.host)
            leftovers = set(side.cli("image", "ls", "-aq", "--no-trunc").split()) - {_image_id(side, base)}
            for image_id in leftovers:  # an earlier benchmark's, killed before it cleaned up
                side.engine.remove_image(image_id, force=True)
            yield side
        finally:
            process.terminate()
            process.wait(10)


def _wait_for_registry(netns: str, url: str, process: subprocess.Popen, timeout: float = 20.0) -> None:
    probe = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/v2/', timeout=1)"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", probe, url],
                          capture_output=True, check=False).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("the registry in the private engine's namespace did not start; see registry-private.log")


def bench_base(base: str) -> str:
    """The base both sides build on: `base` plus a label, so a new image id that no registry push has touched.
    The build key names a local base by its registry digest when the engine has one (RepoDigests, from any
    push of that image, under any name: tests push the shared base) and by its image id otherwise, and a
    `docker load`ed copy has no digest: with the shared base itself the two engines would compute two keys."""
    subprocess.run(["docker", "image", "rm", "-f", BENCH_BASE], check=False, capture_output=True)
    subprocess.run(["docker", "build", "-q", "-t", BENCH_BASE, "-"], check=True, capture_output=True, text=True,
                   input=f"FROM {base}\nLABEL org.envbuilder.bench=reuse\n")
    return BENCH_BASE


def _image_id(side: Side, ref: str) -> str:
    info = side.engine.image_inspect(ref)
    assert info is not None, f"{ref} is not on the {side.name} engine"
    return info["Id"]


def _job(side: Side, image: str) -> float:
    """Run the job in image; its seconds."""
    started = time.perf_counter()
    with side.active():
        code, lines = side.engine.run_once(image, JOB)
    assert code == 0, f"the job failed in {image} on the {side.name} engine: {lines[-5:]}"
    return time.perf_counter() - started


@dataclass
class Bench:
    """The plan, the registry and both sides; one round measures a cold build then a cold reuse."""

    work: Path
    project: Path
    plan: object
    options: RenderOptions
    repository: str
    shared: Side
    reuser: Side

    def __post_init__(self) -> None:
        self.ours = {self.repository}  # the repositories whose images a clear removes
        self.rows: dict[str, list[float]] = {k: [] for k in ("build", "build+job", "push", "reuse", "reuse+job")}
        self.facts: list[dict] = []

    def build(self, side: Side, *, reuse: bool, home: str):
        """`build` as the CLI runs it, with its own data folder; reuse off also means --no-cache (moot once
        the cache is pruned). No push here: the build side pushes apart, timed on its own."""
        started = time.perf_counter()
        with side.active():
            made = build_image(self.plan, self.options, project_dir=self.project,
                               settings=Settings(self.work / home), docker=side.engine, network="host",
                               ca_cert=HOST_CA if HOST_CA.is_file() else None, force=not reuse,
                               registry=RegistryOptions(self.repository, push=False, reuse=reuse))
        return made, time.perf_counter() - started

    def round(self, number: int) -> None:
        shared, reuser, rows = self.shared, self.reuser, self.rows
        shared.clear(self.ours)
        load_build = os.getloadavg()[0]
        built, seconds = self.build(shared, reuse=False, home="home-build")
        assert built.reused is None and not built.cached, built
        self.ours.add(built.image.rsplit(":", 1)[0])
        rows["build"].append(seconds)
        rows["build+job"].append(seconds + _job(shared, built.image))
        started = time.perf_counter()
        pushed = push_image(shared.engine, built.image_id, push_refs(RegistryOptions(self.repository),
                                                                      built.build_key))
        rows["push"].append(time.perf_counter() - started)

        own = set(_layers(shared.engine, built.image_id)) - set(_layers(shared.engine, shared.base)) - {EMPTY_LAYER}
        size = (shared.engine.image_inspect(built.image_id) or {}).get("Size")
        reuser.clear(self.ours)
        skipped = reuser.layers_held(own)
        if skipped:
            print(f"warning: {skipped} of the image's {len(own)} layers are still on the {reuser.name} engine "
                  "(another image holds them): the pull skips them", flush=True)
        load_reuse = os.getloadavg()[0]
        reused, seconds = self.build(reuser, reuse=True, home=f"home-reuse-{number}")
        assert reused.reused is not None and reused.image_id == built.image_id, reused
        rows["reuse"].append(seconds)
        rows["reuse+job"].append(seconds + _job(reuser, reused.image))
        self.facts.append({"round": number, "image_id": built.image_id, "digest": pushed.digest, "size_bytes": size,
                           "layers": len(own), "layers_already_local": skipped, "load1_build": load_build,
                           "load1_reuse": load_reuse})
        print(f"round {number}: build {rows['build'][-1]:.1f} s, push {rows['push'][-1]:.1f} s, "
              f"reuse {rows['reuse'][-1]:.1f} s (1-min load average {load_build:.1f} / {load_reuse:.1f})",
              flush=True)


def run_rounds(args: argparse.Namespace, work: Path) -> dict:
    docker = Docker()
    base = bench_base(bootstrap_base(docker).name)
    project = copy_project("cpuproj", work)
    shared = Side("shared", docker, ["docker"], base)
    with IndexServer([CPU_WHEELS], port=stable_port(str(CPU_WHEELS))) as index, \
            LocalRegistry(work / "registry") as registry, contextlib.ExitStack() as stack:
        reuser = shared if args.reuse_engine == "shared" else stack.enter_context(
            private_side(registry, base, work))
        _, plan = plan_project(str(project), flags=TargetFlags(**CPU_TARGET),
                               request=ResolveRequest(python="3.11", offline=True),
                               settings=Settings(work / "home"), torch_index=index.url)
        bench = Bench(work, project, plan, RenderOptions(base_image=base, torch_index_url=index.url),
                      f"{registry.host}/bench/cpuproj", shared, reuser)
        try:
            for number in range(1, args.rounds + 1):
                bench.round(number)
        finally:
            for side in {id(shared): shared, id(reuser): reuser}.values():
                side.clear(bench.ours)
            docker.remove_image(base, force=True)  # a tag: its layers are the debootstrapped base's
    shutil.rmtree(work / "registry" / "data", ignore_errors=True)  # the pushed images; the logs stay
    return {"reuse_engine": reuser.name, "rounds": bench.rows, "facts": bench.facts, "work": str(work)}


def main() -> None:
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:3]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (cold build, cold reuse); default 2")
    parser.add_argument("--reuse-engine", choices=("private", "shared"), default=None,
                        help="where the reuse side pulls: a private engine of its own (default when root) or "
                             "the shared one")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    reason = private_unavailable()
    if args.reuse_engine is None:
        args.reuse_engine = "shared" if reason else "private"
    elif args.reuse_engine == "private" and reason:
        parser.error(f"--reuse-engine private: {reason}")
    print("note: this prunes the shared engine's build cache (docker builder prune -af) before every build",
          flush=True)
    result = run_rounds(args, Path(tempfile.mkdtemp(prefix="bench-reuse-")))
    report(result)


def report(result: dict) -> None:
    rows = result["rounds"]
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(f"reuse side on the {result['reuse_engine']} engine; both sides cold "
          "(images removed, build cache pruned); base image local on both")
    print(f"{'path':<12}{'median s':>10}   rounds")
    for key, value in medians.items():
        print(f"{key:<12}{value:>10.2f}   {', '.join(f'{x:.2f}' for x in rows[key])}")
    print(f"reuse (pull) is {medians['build'] / medians['reuse']:.1f}x faster than a full build; "
          f"no image -> job: {medians['build+job'] / medians['reuse+job']:.1f}x "
          f"(build+push+job against reuse+job: "
          f"{(medians['build+job'] + medians['push']) / medians['reuse+job']:.1f}x)")
    out = REPO / ".bench" / f"bench_reuse-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**result, "medians": medians}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

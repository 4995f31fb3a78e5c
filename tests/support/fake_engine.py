"""FakeEngine: the one in-memory stand-in for envbuilder.docker.engine.Engine, for tests that fake the Docker
boundary. It records every call, keeps images (with labels) in a dict, replays scripted container output and
exit codes (and a watch broken part-way, as when the engine dies or Ctrl-C comes), replays scripted build lines,
and fails a method on request. tests/test_docker_engine.py checks it implements every method of the Protocol
with the same parameters, so it cannot drift from the real engines.

Library calls take the engine as a parameter (docker=, engine=). The CLI opens its own, through
envbuilder.docker.engine.open_engine, the one place an engine is chosen: the `fake_engine` fixture (registered
in tests/conftest.py) puts a FakeEngine there, so an in-process CLI run talks to it and nothing else changes.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from envbuilder.docker.base_engine import EngineBase


@dataclass
class FakeContainer:
    id: str
    image: str
    command: list[str]
    options: dict[str, Any]
    lines: list[str]
    exit_code: int
    status: str = "running"
    break_after: int = 0
    break_with: BaseException | None = None  # raised once, by the watch that reaches break_after lines


@dataclass(frozen=True)
class ScriptedRun:
    """What a container prints and how it exits; `image` None: the next container of any image.
    break_with: following the output raises it after `break_after` lines, and the container goes on running
    (the watcher broke, not the job), as a dead engine's DockerError or a Ctrl-C does."""

    lines: tuple[str, ...] = ()
    exit_code: int = 0
    image: str | None = None
    break_after: int = 0
    break_with: BaseException | None = None


@dataclass
class FakeEngine:
    """images: ref -> inspect dict. A container runs to its scripted end as soon as something follows or waits
    for it; one with no script prints nothing and exits 0. build_lines are replayed by every build, which then
    raises build_error when set, else adds an image for the request's tag."""

    images: dict[str, dict] = field(default_factory=dict)
    build_lines: list[str] = field(default_factory=list)
    build_error: BaseException | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    containers: dict[str, FakeContainer] = field(default_factory=dict)
    builds: list[Any] = field(default_factory=list)
    started: list[FakeContainer] = field(default_factory=list)  # every container run, kept after its removal
    scripts: list[ScriptedRun] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)  # method -> what its next call raises
    opened: list[str | None] = field(default_factory=list)  # the docker binary of each open_engine() (install_engine)
    registry: dict[str, dict] = field(default_factory=dict)  # ref -> inspect dict: what pull() can fetch
    transport: str = "fake"
    _ids: Any = field(default_factory=lambda: itertools.count(1), repr=False)

    # --- set-up ------------------------------------------------------------------------------------------
    def add_image(self, ref: str, image_id: str | None = None, *, labels: Mapping[str, str] | None = None,
                  env: Iterable[str] = (), created: int = 0, size: int = 0, layers: int = 1) -> dict:
        image_id = image_id or f"sha256:{next(self._ids):064x}"
        info = {"Id": image_id, "Config": {"Labels": dict(labels or {}), "Env": list(env)}, "Created": created,
                "Size": size, "RootFS": {"Type": "layers", "Layers": [f"{image_id}-layer{n}" for n in range(layers)]}}
        self.images[ref] = info
        return info

    def script(self, lines: Iterable[str] = (), exit_code: int = 0, *, image: str | None = None,
               break_after: int = 0, break_with: BaseException | None = None) -> None:
        """The output and exit code of the next container (of `image`: of every container of that image)."""
        self.scripts.append(ScriptedRun(tuple(lines), exit_code, image, break_after, break_with))

    def fail_next(self, method: str, error: BaseException) -> None:
        """The next call of `method` (one recorded in calls) is recorded, then raises `error` before doing anything."""
        if not callable(getattr(self, method, None)):
            raise ValueError(f"the engine has no method {method!r}")
        self.failures[method] = error

    def _called(self, *call: Any) -> None:
        self.calls.append(call)
        if call[0] in self.failures:
            raise self.failures.pop(call[0])

    def _script_for(self, image: str) -> ScriptedRun:
        for script in self.scripts:
            if script.image == image:
                return script
        for index, script in enumerate(self.scripts):
            if script.image is None:
                return self.scripts.pop(index)
        return ScriptedRun()

    def _container(self, container_id: str) -> FakeContainer | None:
        return self.containers.get(container_id)

    def _finish(self, container: FakeContainer) -> None:
        if container.status == "running":
            container.status = "exited"

    # --- the Engine --------------------------------------------------------------------------------------
    def ping(self) -> None:
        self._called("ping")

    def image_inspect(self, ref: str) -> dict | None:
        self._called("image_inspect", ref)
        return self.images.get(ref) or next((info for info in self.images.values() if info["Id"] == ref), None)

    def tag(self, image: str, ref: str) -> None:
        self._called("tag", image, ref)
        info = self.images.get(image) or next(info for info in self.images.values() if info["Id"] == image)
        self.images[ref] = info

    def import_image(self, tarball: Path, ref: str, *, changes: Iterable[str] = ()) -> str:
        self._called("import_image", Path(tarball), ref, tuple(changes))
        labels = dict(change[len("LABEL "):].split("=", 1) for change in changes if change.startswith("LABEL "))
        return self.add_image(ref, labels=labels)["Id"]

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self._called("remove_image", ref, force)
        self.images.pop(ref, None)

    def save_images(self, refs: Sequence[str]) -> Iterator[bytes]:
        """A stand-in archive: the images' inspect dicts as JSON (a real one is a docker-archive tar)."""
        self._called("save_images", tuple(refs))
        missing = [ref for ref in refs if ref not in self.images]
        if missing:
            from envbuilder.errors import DockerError

            raise DockerError("docker-failed", f"saving {', '.join(refs)} failed: reference does not exist: {missing[0]}")
        data = json.dumps({ref: self.images[ref] for ref in refs}).encode()
        return iter([data[: len(data) // 2], data[len(data) // 2:]])

    def load_images(self, data: BinaryIO) -> tuple[str, ...]:
        archive = json.loads(data.read())
        self._called("load_images", tuple(archive))
        self.images.update(archive)
        return tuple(archive)

    def build(self, request: Any, *, on_line: Callable[[str], None], timeout: float | None = None) -> Any:
        self._called("build", request.tag)
        self.builds.append(request)
        for line in self.build_lines:
            on_line(line)
        if self.build_error is not None:
            raise self.build_error
        self.add_image(request.tag, f"sha256:{len(self.builds)}", labels=request.labels)
        if getattr(request, "cache_to", None):  # an inline cache, as the engine's own BuildKit writes it
            self.tag(request.tag, request.cache_to)
            self.push(request.cache_to)
        return None

    def run_detached(self, image: str, command: list[str], *, name: str | None = None,
                     mounts: Iterable[tuple[str, str, bool]] = (), env: Mapping[str, str] | None = None,
                     user: str | None = None, workdir: str | None = None, gpus: str | int | None = None,
                     shm_size: str | None = None, labels: Mapping[str, str] | None = None,
                     network: str | None = None, attach: bool = False,
                     ports: Iterable[tuple[str, int, int, str]] = (), cpus: float | None = None,
                     memory: str | None = None, while_creating: Callable[[], None] | None = None) -> str:
        if while_creating is not None:  # as the SDK engine: before anything is created
            while_creating()
        options = {"name": name, "mounts": list(mounts), "env": dict(env or {}), "user": user, "workdir": workdir,
                   "gpus": gpus, "shm_size": shm_size, "labels": dict(labels or {}), "network": network,
                   "ports": list(ports), "cpus": cpus, "memory": memory}
        container_id = f"{next(self._ids):064x}"
        self._called("run_detached", image, list(command))
        script = self._script_for(image)
        container = FakeContainer(container_id, image, list(command), options, list(script.lines), script.exit_code,
                                  break_after=script.break_after, break_with=script.break_with)
        self.containers[container_id] = container
        self.started.append(container)
        return container_id

    # The engines' own composition of run_detached, follow_to_exit and remove_container, so the fake runs the
    # same steps in the same order rather than a copy of them.
    run_once = EngineBase.run_once

    def container_state(self, container_id: str) -> dict | None:
        self._called("container_state", container_id)
        container = self._container(container_id)
        if container is None:
            return None
        return {"Status": container.status, "ExitCode": container.exit_code if container.status == "exited" else 0,
                "Running": container.status == "running"}

    def pull(self, ref: str, *, what: str | None = None) -> None:
        """Copies registry[ref] into images, else fails as Docker's pull of an unknown repository does."""
        self._called("pull", ref)
        if ref not in self.registry:
            from envbuilder.docker.diagnose import diagnose_docker

            raise diagnose_docker(f"pull access denied for {ref}, repository does not exist or may require "
                                  "'docker login'", what=what or f"pulling {ref}")
        self.images[ref] = self.registry[ref]

    def push(self, ref: str, *, on_line: Callable[[str], None] | None = None) -> str:
        """Copies images[ref] into registry[ref]; the digest is derived from the image id, as a registry's is
        from the image's bytes."""
        self._called("push", ref)
        if ref not in self.images:
            from envbuilder.errors import DockerError

            raise DockerError("docker-failed", f"pushing {ref} failed: An image does not exist locally with the tag")
        self.registry[ref] = self.images[ref]
        return self._digest(ref)

    def registry_digest(self, ref: str) -> str | None:
        self._called("registry_digest", ref)
        return self._digest(ref) if ref in self.registry else None

    def _digest(self, ref: str) -> str:
        import hashlib

        return "sha256:" + hashlib.sha256(self.registry[ref]["Id"].encode()).hexdigest()

    def login(self, registry: str, username: str, password: str) -> str:
        self._called("login", registry, username)  # never the password: tests check it is not kept
        return "Login Succeeded"

    def stream_logs(self, container_id: str, on_line: Callable[[str], None],
                    on_progress: Callable[[str], None] | None = None) -> None:
        """Scripted lines are split as the engines split real output: a line with carriage returns (a progress
        bar) comes in its last state, its earlier states to on_progress."""
        self._called("stream_logs", container_id)
        from envbuilder.docker.streams import split_lines

        container = self._container(container_id)
        # each redraw (a piece starting with \r) arrives on its own, as a program's separate writes do
        raw = [piece for line in (container.lines if container is not None else [])
               for piece in re.split(rb"(?=\r)", line.encode() + b"\n") if piece]
        broken = container.break_with if container is not None else None
        for seen, line in enumerate(split_lines(((1, chunk) for chunk in raw), on_progress)):
            if broken is not None and seen == container.break_after:
                break
            on_line(line)
        if broken is not None:
            container.break_with = None  # once: a watch started after the engine is back sees everything
            raise broken
        container = self._container(container_id)
        if container is not None:
            self._finish(container)

    def log_lines(self, container_id: str) -> list[str]:
        from envbuilder.docker.streams import last_state

        container = self._container(container_id)
        return [last_state(line.encode()) for line in container.lines] if container is not None else []

    def follow_to_exit(self, container_id: str, on_line: Callable[[str], None],
                       on_progress: Callable[[str], None] | None = None) -> int:
        self.stream_logs(container_id, on_line, on_progress)
        return self.wait(container_id)

    def wait(self, container_id: str) -> int:
        self._called("wait", container_id)
        container = self._container(container_id)
        if container is None:
            return -1
        self._finish(container)
        return container.exit_code

    def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self._called("stop", container_id, grace_s)
        container = self._container(container_id)
        if container is not None and container.status == "running":
            container.status, container.exit_code = "exited", 143

    def kill(self, container_id: str, signal: str = "KILL") -> None:
        self._called("kill", container_id, signal)
        container = self._container(container_id)
        if container is not None and container.status == "running":
            container.status, container.exit_code = "exited", 137

    def remove_container(self, container_id: str) -> None:
        self._called("remove_container", container_id)
        self.containers.pop(container_id, None)

    def containers_labelled(self, key: str, value: str) -> list[str]:
        self._called("containers_labelled", key, value)
        return [c.id for c in self.containers.values() if c.options["labels"].get(key) == value]

    def images_labelled(self, key: str, value: str | None = None) -> list[dict]:
        """Summaries as GET /images/json gives them: one per image id, with every tag it has."""
        self._called("images_labelled", key, value)
        found: dict[str, dict] = {}
        for ref, info in self.images.items():
            labels = info["Config"]["Labels"]
            if key in labels and (value is None or labels[key] == value):
                summary = found.setdefault(info["Id"], {"Id": info["Id"], "RepoTags": [], "Labels": dict(labels),
                                                        "Created": info.get("Created", 0), "Size": info.get("Size", 0)})
                summary["RepoTags"].append(ref)
        return list(found.values())


def install_engine(monkeypatch: pytest.MonkeyPatch, engine: FakeEngine) -> FakeEngine:
    """Make `engine` the one every envbuilder.docker.engine.open_engine() (and so Docker()) call returns, for this
    test. The arguments of each opening are kept in engine.opened."""
    import envbuilder.docker.engine

    def open_fake(docker_binary: str | None = None, *, timeout: int = 120, transport: str = "auto") -> FakeEngine:
        engine.opened.append(docker_binary)
        return engine

    monkeypatch.setattr(envbuilder.docker.engine, "open_engine", open_fake)
    return engine


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """A FakeEngine that the code under test (an in-process CLI run included) gets whenever it opens Docker."""
    return install_engine(monkeypatch, FakeEngine())

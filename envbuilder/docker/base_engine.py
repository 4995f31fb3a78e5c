"""`EngineBase`: what both engines (socket_engine.SocketEngine, sdk_engine.SdkEngine) share on top of their own
primitives: output split into lines, following a container to its exit with the re-read that makes up for
moby/moby#43860, throwaway containers, BuildKit builds; and the request values both translate alike (GPU count,
shm size, image reference). Must not import the docker SDK, requests, urllib3 or the CLI.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from envbuilder.docker.streams import demuxed, split_lines
from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.quantities import parse_size_bytes

if TYPE_CHECKING:
    from envbuilder.docker.buildkit import BuildCli, BuildRequest
    from envbuilder.proc import CommandResult


def gpu_count(gpus: str | int | None) -> int | None:
    """A run's GPU request as the Engine API's DeviceRequest count: None for no GPUs, -1 for all."""
    if gpus in (None, "none", 0):
        return None
    return -1 if gpus == "all" else int(gpus)


def shm_bytes(size: str | int) -> int:
    """A container's shared memory size in bytes; a typo is an EnvbuilderError (bad-size) naming the syntax."""
    try:
        return parse_size_bytes(size)
    except ValueError:
        raise EnvbuilderError("bad-size", f"invalid size {size!r}", "use Docker's size syntax, like 512m or 2g") from None


def split_ref(ref: str) -> tuple[str, str]:
    """(repository, tag) of an image reference; a registry's port (host:5000/x) is not a tag."""
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    return repo, tag


class EngineBase(ABC):
    """What both engines share on top of their primitives (run_detached, wait, remove_container, _log_chunks):
    output split into lines, following a container to its exit, throwaway containers and BuildKit builds."""

    # The engine's address for the docker CLI and the SDK when they must reach this same engine; None: whatever
    # DOCKER_HOST / the docker context names.
    docker_host: str | None = None

    def __init__(self, *, docker_binary: str | None, timeout: int | None) -> None:
        self._docker_binary = docker_binary
        self._timeout = timeout
        # container id -> its multiplexed output, attached before start (only the socket engine attaches)
        self._attached: dict[str, Iterator[bytes]] = {}

    @abstractmethod
    def _log_chunks(self, container_id: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        """The container's output as (stream, bytes) pieces: 1 stdout, 2 stderr, 0 when they come joined."""

    @abstractmethod
    def run_detached(self, image: str, command: list[str], **options: Any) -> str: ...

    @abstractmethod
    def wait(self, container_id: str) -> int: ...

    @abstractmethod
    def remove_container(self, container_id: str) -> None: ...

    def _drop_attached(self, container_id: str) -> None:
        stream = self._attached.pop(container_id, None)
        if stream is not None:
            stream.close()  # closes its connection: a half-read stream is never reused

    def stream_logs(self, container_id: str, on_line: Callable[[str], None],
                    on_progress: Callable[[str], None] | None = None) -> None:
        """Follow the container's output (stdout and stderr) until it exits, calling on_line for each line
        (a line redrawn with carriage returns once, in its last state; each state before that to on_progress).

        A loaded engine can end the follow at the container's exit before sending the last lines
        (moby/moby#43860): callers that need every line use follow_to_exit.
        """
        for line in split_lines(self._log_chunks(container_id, follow=True), on_progress):
            on_line(line)

    def log_lines(self, container_id: str) -> list[str]:
        return list(split_lines(self._log_chunks(container_id, follow=False)))

    def follow_to_exit(self, container_id: str, on_line: Callable[[str], None],
                       on_progress: Callable[[str], None] | None = None) -> int:
        """Stream the container's lines until it exits, then pass on any the follow dropped; its exit code.

        Output attached before start (run_detached(attach=True) on the socket engine) holds every line. A logs
        follow can end at the container's exit before sending the last lines (moby/moby#43860), which is where
        results and final metrics are printed: the whole output is read once more and what the follow missed
        (checked by a digest of the prefix, so a different output is never spliced on) is passed on in order.
        """
        attached = self._attached.pop(container_id, None)
        if attached is not None:
            try:
                for line in split_lines(demuxed(attached), on_progress):
                    on_line(line)
            except BaseException:
                # Close it now, not when the traceback lets go: an attach stream nobody reads blocks the
                # container's writes, and so its exit and any `docker stop` of it (a full disk, Ctrl-C).
                attached.close()
                raise
            return self.wait(container_id)
        import hashlib  # only this fallback needs it: loading OpenSSL's hashes costs `run --image` ~3 ms

        seen = hashlib.sha256()
        count = 0

        def forward(line: str) -> None:
            nonlocal count
            seen.update(line.encode("utf-8", "surrogatepass") + b"\n")
            count += 1
            on_line(line)

        # on_progress only when asked for: a stream_logs of older signature (a test's stand-in) still works
        self.stream_logs(container_id, forward, **({"on_progress": on_progress} if on_progress else {}))
        code = self.wait(container_id)
        everything = self.log_lines(container_id)
        prefix = hashlib.sha256()
        for line in everything[:count]:
            prefix.update(line.encode("utf-8", "surrogatepass") + b"\n")
        if len(everything) > count and prefix.digest() == seen.digest():
            for line in everything[count:]:
                on_line(line)
        return code

    def run_once(self, image: str, command: list[str], **run_options: Any) -> tuple[int, list[str]]:
        """Run a throwaway container to completion: (exit code, every output line). It is removed afterwards."""
        container = self.run_detached(image, command, attach=True, **run_options)
        lines: list[str] = []
        try:
            return self.follow_to_exit(container, lines.append), lines
        finally:
            self.remove_container(container)

    @cached_property
    def build_cli(self) -> BuildCli:
        from envbuilder.docker.buildkit import find_build_cli

        return find_build_cli(self._docker_binary)

    def build(self, request: BuildRequest, *, on_line: Callable[[str], None],
              timeout: float | None = None) -> CommandResult:
        """Run one BuildKit build through the docker CLI, whichever engine runs containers."""
        from envbuilder.docker.buildkit import check_platform, run_build

        if request.platform:
            check_platform(self.build_cli, request.platform)
        result = run_build(self.build_cli, request, on_line=on_line, timeout=timeout,
                           docker_host=self.docker_host)
        if request.cache_to and not self.build_cli.exports_cache:
            # Inline cache: the cache metadata rides in the image's config, so the image itself, pushed under
            # the cache reference, is the cache a later --cache-from reads.
            self.tag(request.tag, request.cache_to)
            self.push(request.cache_to, on_line=on_line)
        return result

    def login(self, registry: str, username: str, password: str) -> str:
        """`docker login` through the docker CLI: it is what writes Docker's config.json (or hands the secret to
        the configured credential helper), which the SDK, buildx and every later `docker` command then read."""
        import shutil

        from envbuilder.docker.diagnose import diagnose_docker
        from envbuilder.proc import run_command

        binary = self._docker_binary or shutil.which("docker") or "docker"
        what = f"logging in to {registry}"
        # The password goes on stdin only: never argv (visible in ps) and never a log line.
        result = run_command([binary, "login", registry, "--username", username, "--password-stdin"],
                             stdin_data=password + "\n", timeout=120)
        if result.missing:
            raise DockerError("engine-missing", f"{binary} is not installed",
                                  "install the docker client, or pass --docker PATH")
        if not result.ok:
            raise diagnose_docker(result.stderr or result.stdout, what=what)
        self._credentials_changed()
        return result.stdout.strip()

    def _credentials_changed(self) -> None:
        """Docker's config changed (a login): an engine that cached it reads it again."""


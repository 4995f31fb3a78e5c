"""The Engine (see engine.py) through the docker SDK: for remote or TLS engines (tcp://, ssh://,
DOCKER_TLS_VERIFY, another DOCKER_CONTEXT), whose connection details only the SDK knows, and for the pulls and
imports the socket engine hands over. Imported only when chosen: the SDK's import (requests, urllib3) is
~0.1-0.15 s, more than the whole budget of `envbuilder run --image`. Must not import the CLI.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

from envbuilder.docker.diagnose import diagnose_docker
from envbuilder.docker.base_engine import EngineBase, gpu_count, shm_bytes, split_ref
from envbuilder.errors import DockerError


class SdkEngine(EngineBase):
    """Every operation through a lazily connected docker SDK client; its errors become diagnosed DockerErrors."""

    transport = "sdk"

    def __init__(self, *, docker_binary: str | None = None, timeout: int | None = 120,
                 base_url: str | None = None) -> None:
        super().__init__(docker_binary=docker_binary, timeout=timeout)
        # None: the engine DOCKER_HOST / the docker context names; the socket engine passes its own socket, so
        # the work it hands over (pull, push, load) reaches the same engine whatever DOCKER_HOST says.
        self.docker_host = base_url

    @cached_property
    def client(self) -> Any:
        import docker  # deferred: heavy import, and only commands that touch Docker need it

        try:
            client = (docker.DockerClient(base_url=self.docker_host, timeout=self._timeout) if self.docker_host
                      else docker.from_env(timeout=self._timeout))
            client.ping()
            return client
        except Exception as exc:  # the SDK raises several types for "no engine"
            raise diagnose_docker(str(exc), what="connecting to Docker") from None

    def _call(self, what: str, fn: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        """fn() through the SDK; None for a 404 when missing_ok, else any failure as a diagnosed DockerError."""
        import docker.errors

        try:
            return fn()
        except docker.errors.NotFound as exc:
            if missing_ok:
                return None
            raise diagnose_docker(str(exc.explanation or exc), what=what) from None
        except docker.errors.APIError as exc:
            raise diagnose_docker(str(exc.explanation or exc), what=what) from None
        except docker.errors.DockerException as exc:
            raise diagnose_docker(str(exc), what=what) from None

    def ping(self) -> None:
        self.client  # noqa: B018 - connecting pings the engine

    def image_inspect(self, ref: str) -> dict | None:
        return self._call(f"inspecting {ref}", lambda: self.client.api.inspect_image(ref), missing_ok=True)

    def tag(self, image: str, ref: str) -> None:
        repo, tag = split_ref(ref)
        self._call(f"tagging {ref}", lambda: self.client.api.tag(image, repo, tag, force=True))

    def import_image(self, tarball: Path, ref: str, *, changes: Iterable[str] = ()) -> str:
        repo, tag = split_ref(ref)
        self._call(
            f"importing {ref}",
            lambda: self.client.api.import_image_from_file(str(tarball), repository=repo, tag=tag, changes=list(changes)),
        )
        info = self.image_inspect(ref)
        if info is None:
            raise DockerError("import-failed", f"docker import did not produce {ref}", "rerun with -v")
        return info["Id"]

    def remove_image(self, ref: str, *, force: bool = False) -> None:
        self._call(f"removing {ref}", lambda: self.client.api.remove_image(ref, force=force), missing_ok=True)

    def save_images(self, refs: Sequence[str]) -> Iterator[bytes]:
        what = f"saving {', '.join(refs)}"
        api = self.client.api
        # The SDK's get_image takes one name; the endpoint takes several (GET /images/get?names=..), which keeps
        # the layers the images share once in the archive.
        response = self._call(what, lambda: api._get(api._url("/images/get"), params={"names": list(refs)}, stream=True))
        self._call(what, lambda: api._raise_for_status(response))
        return self._chunks(what, response)

    def _chunks(self, what: str, response: Any) -> Iterator[bytes]:
        try:
            yield from response.iter_content(1 << 20)
        except Exception as exc:  # the engine went away mid-stream (requests' own types)
            raise diagnose_docker(str(exc), what=what) from None
        finally:
            response.close()

    def load_images(self, data: BinaryIO) -> tuple[str, ...]:
        what = "loading images"
        # Not quiet: the engine's progress messages keep the connection busy while it unpacks gigabytes, so the
        # client's read timeout only fires on an engine that stopped answering.
        messages = self._call(what, lambda: list(self.client.api.load_image(data, quiet=False)))
        loaded: list[str] = []
        for message in messages or ():
            if message.get("error") or message.get("errorDetail"):
                detail = (message.get("errorDetail") or {}).get("message") or message.get("error")
                raise diagnose_docker(str(detail), what=what)
            for line in str(message.get("stream", "")).splitlines():
                # "Loaded image: repo:tag", or "Loaded image ID: sha256:..." for an untagged image
                for prefix in ("Loaded image: ", "Loaded image ID: "):
                    if line.startswith(prefix):
                        loaded.append(line[len(prefix):].strip())
        return tuple(loaded)

    def pull(self, ref: str, *, what: str | None = None) -> None:
        """Pull with the registry auth the SDK reads from the docker config; failures name `what` needed it."""
        self._call(what or f"pulling {ref}", lambda: self.client.images.pull(ref))

    def push(self, ref: str, *, on_line: Callable[[str], None] | None = None) -> str:
        repo, tag = split_ref(ref)
        what = f"pushing {ref}"
        digest = None
        for message in self._call(what, lambda: self.client.api.push(repo, tag, stream=True, decode=True)):
            # The push answers 200 and reports a failure (auth, TLS, a full disk) inside the stream.
            if message.get("error") or message.get("errorDetail"):
                detail = (message.get("errorDetail") or {}).get("message") or message.get("error")
                raise diagnose_docker(str(detail), what=what)
            digest = (message.get("aux") or {}).get("Digest") or digest
            if on_line and message.get("status"):
                on_line(" ".join(str(message[k]) for k in ("id", "status") if message.get(k)))
        if not digest:
            raise DockerError("push-failed", f"{what}: the registry answered no digest", "rerun with -v")
        return digest

    def registry_digest(self, ref: str) -> str | None:
        found = self._call(f"asking the registry for {ref}", lambda: self.client.api.inspect_distribution(ref),
                           missing_ok=True)
        return None if found is None else found["Descriptor"]["digest"]

    def _credentials_changed(self) -> None:
        if "client" in self.__dict__:
            self.client.api.reload_config()

    def run_detached(
        self,
        image: str,
        command: list[str],
        *,
        name: str | None = None,
        mounts: Iterable[tuple[str, str, bool]] = (),  # (host path, container path, read_only)
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        gpus: str | int | None = None,  # "all", a count, or None
        shm_size: str | None = None,
        labels: Mapping[str, str] | None = None,
        network: str | None = None,
        attach: bool = False,  # the SDK cannot attach before start: follow_to_exit re-reads the output instead
        ports: Iterable[tuple[str, int, int, str]] = (),  # (host IP, host port, container port, tcp|udp)
        cpus: float | None = None,
        memory: str | None = None,
        while_creating: Callable[[], None] | None = None,
    ) -> str:
        """Start a container in the background and return its id. An image that is not here is pulled first (with
        the SDK's registry auth); a container the engine created but would not start is removed before the error is
        raised. Created and started in two calls, not the SDK's containers.run, which leaves that container behind.
        while_creating runs first: the SDK's calls cannot be overlapped with it."""
        from docker.types import DeviceRequest, Mount

        what = f"starting a container of {image}"
        count = gpu_count(gpus)
        options = {
            "name": name,
            "mounts": [Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in mounts],
            "environment": dict(env or {}), "user": user, "working_dir": workdir,
            "device_requests": None if count is None else [DeviceRequest(count=count, capabilities=[["gpu"]])],
            "shm_size": None if shm_size is None else shm_bytes(shm_size), "labels": dict(labels or {}),
            "network_mode": network, "ports": _port_bindings(ports) or None,
            "nano_cpus": None if cpus is None else int(round(cpus * 1e9)),
            "mem_limit": None if memory is None else shm_bytes(memory),
            "init": True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
        }

        def create() -> Any:
            import docker.errors

            try:
                return self.client.containers.create(image, command, **options)
            except docker.errors.ImageNotFound:  # `docker run` pulls it
                self.pull(image, what=what)
                return self.client.containers.create(image, command, **options)

        if while_creating is not None:
            while_creating()
        container = self._call(what, create)
        try:
            self._call(what, container.start)
        except BaseException:
            with contextlib.suppress(Exception):
                self.remove_container(container.id)
            raise
        return container.id

    def container_state(self, container_id: str) -> dict | None:
        info = self._call("inspecting a container", lambda: self.client.api.inspect_container(container_id),
                          missing_ok=True)
        return None if info is None else info.get("State")

    def _log_chunks(self, container_id: str, *, follow: bool) -> Iterator[tuple[int, bytes]]:
        what = "reading logs"
        # The SDK joins stdout and stderr: one stream.
        if follow:
            chunks = self._call(what, lambda: self.client.api.logs(container_id, stream=True, follow=True))
        else:
            chunks = [self._call(what, lambda: self.client.api.logs(container_id, stream=False, follow=False))]
        return ((0, chunk) for chunk in chunks)

    def wait(self, container_id: str) -> int:
        result = self._call("waiting for a container", lambda: self.client.api.wait(container_id))
        return int((result or {}).get("StatusCode", -1))

    def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        self._call("stopping a container", lambda: self.client.api.stop(container_id, timeout=int(grace_s)),
                   missing_ok=True)

    def kill(self, container_id: str, signal: str = "KILL") -> None:
        self._call("killing a container", lambda: self.client.api.kill(container_id, signal=signal), missing_ok=True)

    def remove_container(self, container_id: str) -> None:
        self._call("removing a container", lambda: self.client.api.remove_container(container_id, force=True),
                   missing_ok=True)

    def containers_labelled(self, key: str, value: str) -> list[str]:
        found = self._call("listing containers", lambda: self.client.api.containers(
            all=True, quiet=True, filters={"label": f"{key}={value}"}))
        return [item["Id"] for item in found or ()]

    def images_labelled(self, key: str, value: str | None = None) -> list[dict]:
        label = key if value is None else f"{key}={value}"
        return list(self._call("listing images", lambda: self.client.api.images(filters={"label": label})) or ())


def _port_bindings(ports: Iterable[tuple[str, int, int, str]]) -> dict[str, list[tuple[str, int]]]:
    """`docker run -p` bindings as the SDK takes them: {"8000/tcp": [(host IP, host port)]}."""
    bindings: dict[str, list[tuple[str, int]]] = {}
    for host_ip, host_port, container_port, protocol in ports:
        bindings.setdefault(f"{container_port}/{protocol}", []).append((host_ip, host_port))
    return bindings

"""The Engine (see engine.py) through the docker SDK: for remote or TLS engines (tcp://, ssh://,
DOCKER_TLS_VERIFY, another DOCKER_CONTEXT), whose connection details only the SDK knows, and for the pulls and
imports the socket engine hands over. Imported only when chosen: the SDK's import (requests, urllib3) is
~0.1-0.15 s, more than the whole budget of `envbuilder run --image`. Must not import the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from envbuilder.docker.diagnose import diagnose_docker
from envbuilder.docker.base_engine import EngineBase, gpu_count, shm_bytes, split_ref
from envbuilder.errors import DockerError


class SdkEngine(EngineBase):
    """Every operation through a lazily connected docker SDK client; its errors become diagnosed DockerErrors."""

    transport = "sdk"

    def __init__(self, *, docker_binary: str | None = None, timeout: int | None = 120) -> None:
        super().__init__(docker_binary=docker_binary, timeout=timeout)

    @cached_property
    def client(self) -> Any:
        import docker  # deferred: heavy import, and only commands that touch Docker need it

        try:
            client = docker.from_env(timeout=self._timeout)
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

    def pull(self, ref: str, *, what: str) -> None:
        """Pull with the registry auth the SDK reads from the docker config; failures name `what` needed it."""
        self._call(what, lambda: self.client.images.pull(ref))

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
    ) -> str:
        """Start a container in the background and return its id; the SDK pulls an image that is not here."""
        from docker.types import DeviceRequest, Mount

        count = gpu_count(gpus)
        device_requests = None if count is None else [DeviceRequest(count=count, capabilities=[["gpu"]])]
        container = self._call(
            f"starting a container of {image}",
            lambda: self.client.containers.run(
                image,
                command,
                name=name,
                detach=True,
                mounts=[Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in mounts],
                environment=dict(env or {}),
                user=user,
                working_dir=workdir,
                device_requests=device_requests,
                shm_size=None if shm_size is None else shm_bytes(shm_size),
                labels=dict(labels or {}),
                network_mode=network,
                init=True,  # a real PID 1 forwards SIGTERM to the job and reaps its DataLoader workers
            ),
        )
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

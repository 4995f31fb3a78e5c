"""A fake Kubernetes API server on 127.0.0.1 for the paths `envbuilder submit --to kubernetes` uses, whose every
answer is built from the official client's own models (V1Job, V1PodList, V1Status...) and serialized the way
the client serializes them (ApiClient().sanitize_for_serialization), so the client reads back exactly what a
real API server would send in that shape.

`phase` drives the Job through the states a real Job goes through: `created` (status {}), `pending` (its pod
exists but is not ready: image pull, scheduling), `running` (ready), then `complete` or `failed`; `gone` is a
Job deleted or expired (404). `refuse[(METHOD, resource)] = code` answers that call with the API server's error
Status (401, 403, 404, 409...) instead. Every request is recorded as (method, path, query, body).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from kubernetes import client

T0 = datetime(2026, 11, 30, 8, 20, 0, tzinfo=timezone.utc)
_API = client.ApiClient()
# The API server's `reason` for each error code (k8s.io/apimachinery metav1.StatusReason).
_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 422: "Invalid",
            500: "InternalError"}


def serialize(model: Any) -> Any:
    return _API.sanitize_for_serialization(model)


def job_status(phase: str) -> client.V1JobStatus:
    """A Job's `.status` as the Job controller writes it in each phase (Kubernetes 1.31+: SuccessCriteriaMet and
    FailureTarget come before Complete and Failed)."""
    started = T0 + timedelta(seconds=1)
    if phase == "created":
        return client.V1JobStatus()
    if phase == "pending":
        return client.V1JobStatus(active=1, ready=0, start_time=started, terminating=0,
                                  uncounted_terminated_pods=client.V1UncountedTerminatedPods())
    if phase == "running":
        return client.V1JobStatus(active=1, ready=1, start_time=started, terminating=0,
                                  uncounted_terminated_pods=client.V1UncountedTerminatedPods())
    done = T0 + timedelta(seconds=42)
    if phase == "complete":
        return client.V1JobStatus(succeeded=1, ready=0, start_time=started, completion_time=done, terminating=0,
                                  conditions=[_condition("SuccessCriteriaMet", "CompletionsReached", done),
                                              _condition("Complete", "CompletionsReached", done)],
                                  uncounted_terminated_pods=client.V1UncountedTerminatedPods())
    if phase == "failed":
        return client.V1JobStatus(failed=1, ready=0, start_time=started, terminating=0,
                                  conditions=[_condition("FailureTarget", "BackoffLimitExceeded", done),
                                              _condition("Failed", "BackoffLimitExceeded", done)],
                                  uncounted_terminated_pods=client.V1UncountedTerminatedPods())
    raise ValueError(phase)


def _condition(kind: str, reason: str, when: datetime) -> client.V1JobCondition:
    message = {"BackoffLimitExceeded": "Job has reached the specified backoff limit",
               "CompletionsReached": "Reached expected number of succeeded pods"}[reason]
    return client.V1JobCondition(type=kind, status="True", reason=reason, message=message,
                                 last_probe_time=when, last_transition_time=when)


def container_state(phase: str) -> tuple[str, client.V1ContainerState]:
    """(the pod's phase, the job container's state) in each phase of the Job."""
    if phase in ("created", "pending"):
        return "Pending", client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ContainerCreating"))
    if phase == "running":
        return "Running", client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=T0))
    code, reason = (0, "Completed") if phase == "complete" else (3, "Error")
    return ("Succeeded" if code == 0 else "Failed"), client.V1ContainerState(
        terminated=client.V1ContainerStateTerminated(exit_code=code, reason=reason, started_at=T0,
                                                     finished_at=T0 + timedelta(seconds=40)))


def error_status(code: int, message: str, *, name: str | None = None, group: str | None = None,
                 kind: str | None = None) -> dict[str, Any]:
    """The API server's error body: a v1 Status."""
    return serialize(client.V1Status(api_version="v1", kind="Status", metadata=client.V1ListMeta(), status="Failure",
                                     message=message, reason=_REASONS.get(code, "Unknown"), code=code,
                                     details=client.V1StatusDetails(name=name, group=group, kind=kind)))


class FakeKubernetes(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, namespace: str = "ml", log: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.namespace = namespace
        self.log = log
        self.phase = "created"
        self.refuse: dict[tuple[str, str], int] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.jobs: dict[str, client.V1Job] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    # --- answers -------------------------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> tuple[int, Any]:
        job = _API.deserialize(json.dumps(body), "V1Job", "application/json")
        name = job.metadata.name
        if name in self.jobs:
            return 409, error_status(409, f'jobs.batch "{name}" already exists', name=name, group="batch", kind="jobs")
        job.metadata.uid = "5b1f0a2e-6c1d-4f7e-9b0a-1c2d3e4f5a6b"
        job.metadata.resource_version = "1000"
        job.metadata.creation_timestamp = T0
        job.status = job_status("created")
        self.jobs[name] = job
        return 201, serialize(job)

    def read_job(self, name: str) -> tuple[int, Any]:
        job = self.jobs.get(name)
        if job is None or self.phase == "gone":
            return 404, error_status(404, f'jobs.batch "{name}" not found', name=name, group="batch", kind="jobs")
        job.status = job_status(self.phase)
        return 200, serialize(job)

    def delete_job(self, name: str) -> tuple[int, Any]:
        code, answer = self.read_job(name)
        if code != 200:
            return code, answer
        self.phase = "gone"
        return 200, serialize(client.V1Status(api_version="v1", kind="Status", metadata=client.V1ListMeta(),
                                              status="Success", details=client.V1StatusDetails(
                                                  name=name, group="batch", kind="jobs", uid=self.jobs[name].metadata.uid)))

    def pod_list(self, job_name: str) -> tuple[int, Any]:
        job = self.jobs.get(job_name)
        items = []
        if job is not None and self.phase not in ("created", "gone"):
            pod_phase, state = container_state(self.phase)
            container = job.spec.template.spec.containers[0]
            items.append(client.V1Pod(
                api_version="v1", kind="Pod",
                metadata=client.V1ObjectMeta(name=f"{job_name}-x7k2p", namespace=self.namespace, creation_timestamp=T0,
                                             labels={"batch.kubernetes.io/job-name": job_name, "job-name": job_name,
                                                     "batch.kubernetes.io/controller-uid": job.metadata.uid}),
                spec=job.spec.template.spec,
                status=client.V1PodStatus(phase=pod_phase, container_statuses=[client.V1ContainerStatus(
                    name=container.name, image=container.image, image_id="", ready=pod_phase == "Running",
                    restart_count=0, started=pod_phase == "Running", state=state)])))
        return 200, serialize(client.V1PodList(api_version="v1", kind="PodList", items=items,
                                               metadata=client.V1ListMeta(resource_version="1080")))


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubernetes

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        server = self.server
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        server.requests.append((method, url.path, query, body))
        parts = url.path.strip("/").split("/")
        namespaced = parts[2:4] == ["namespaces", server.namespace] or parts[3:5] == ["namespaces", server.namespace]
        resource = "jobs" if parts[:3] == ["apis", "batch", "v1"] else "pods" if parts[:2] == ["api", "v1"] else ""
        refused = server.refuse.get((method, resource))
        if refused is not None:
            verb = {"POST": "create", "DELETE": "delete", "GET": "get"}[method]
            return self._send(refused, error_status(refused, _refusal(refused, verb, resource, server.namespace)))
        if resource == "jobs" and not namespaced:
            return self._send(404, error_status(404, f'namespaces "{parts[4] if len(parts) > 4 else ""}" not found',
                                                name=parts[4] if len(parts) > 4 else None, kind="namespaces"))
        if resource == "jobs":
            name = parts[6] if len(parts) > 6 else None
            if method == "POST" and name is None:
                return self._send(*server.create_job(body))
            if method == "DELETE":
                return self._send(*server.delete_job(name or ""))
            return self._send(*server.read_job(name or ""))
        if resource == "pods" and namespaced:
            if len(parts) == 7 and parts[6] == "log":
                if server.phase in ("created", "pending"):
                    message = (f'container "job" in pod "{parts[5]}" is waiting to start: ContainerCreating')
                    return self._send(400, error_status(400, message))
                return self._send(200, server.log, "text/plain")
            selector = query.get("labelSelector", "")
            return self._send(*server.pod_list(selector.split("=", 1)[1] if "=" in selector else ""))
        return self._send(404, error_status(404, f"the server could not find the requested resource ({url.path})"))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def _refusal(code: int, verb: str, resource: str, namespace: str) -> str:
    if code == 401:
        return "Unauthorized"
    group = "batch" if resource == "jobs" else ""
    return (f'{resource}{"." + group if group else ""} is forbidden: User "system:serviceaccount:{namespace}:runner" '
            f'cannot {verb} resource "{resource}" in API group "{group}" in the namespace "{namespace}"')


@contextmanager
def fake_kubernetes(kubeconfig: Path, **kwargs: Any) -> Iterator[FakeKubernetes]:
    """The server, running, and a kubeconfig at `kubeconfig` that points the official client at it."""
    server = FakeKubernetes(**kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "test-token"}}]}), encoding="utf-8")
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()

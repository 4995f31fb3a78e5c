"""`envbuilder submit --to kubernetes` through the official client, against a fake of the API at the HTTP boundary.

No cluster can run here, so a small HTTP server on 127.0.0.1 answers the Kubernetes API's paths with responses
in the API's own shape (tests/data/cluster/k8s), and records what the client sent. The kubeconfig points the
official client at it, so every call (create the Job, read its status, list its pods, read the log, delete it)
goes through the real client, its serialization and its HTTP stack.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

DATA = Path(__file__).parent / "data" / "cluster" / "k8s"
IMAGE = "registry.example.com/team/tinynet@sha256:" + "b" * 64
LOG = "training on 3200 points\nepoch 1/2 loss=0.5 val_loss=0.4 acc=0.8 lr=0.01\n" \
      "epoch 2/2 loss=0.3 val_loss=0.2 acc=0.9 lr=0.005\ndone\n"


class FakeKubernetes(ThreadingHTTPServer):
    """The API paths the client uses; `phase` (pending, running, complete, failed, gone) drives the answers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, dict, object]] = []  # (method, path, query, body)
        self.phase = "pending"
        self.jobs: dict[str, dict] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubernetes

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: object, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fixture(self, name: str, job: str, **fill: str) -> object:
        text = (DATA / name).read_text().replace("NAME", job)
        for key, value in fill.items():
            text = text.replace(key, value)
        return json.loads(text)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((method, url.path, query, body))
        parts = url.path.strip("/").split("/")
        phase = self.server.phase
        if parts[:5] == ["apis", "batch", "v1", "namespaces", "ml"] and parts[5:6] == ["jobs"]:
            name = parts[6] if len(parts) > 6 else None
            if method == "POST":
                created = {**body, "metadata": {**body["metadata"], "uid": "5b1f0a2e", "resourceVersion": "1000"}}
                self.server.jobs[created["metadata"]["name"]] = created
                return self._send(201, created)
            if name not in self.server.jobs or phase == "gone":
                return self._send(404, self._fixture("status-not-found.json", name or ""))
            if method == "DELETE":
                self.server.phase = "gone"
                return self._send(200, self._fixture("status-deleted.json", name))
            fixture = {"complete": "job-status-complete.json", "failed": "job-status-failed.json"}.get(
                phase, "job-status-running.json")
            status = self._fixture(fixture, name)
            if phase == "pending":
                status["status"] = {}
            return self._send(200, status)
        if parts[:5] == ["api", "v1", "namespaces", "ml", "pods"]:
            job = query.get("labelSelector", "job-name=").split("=", 1)[1] if len(parts) == 5 else parts[5].rsplit("-", 1)[0]
            if len(parts) == 7 and parts[6] == "log":
                return self._send(200, LOG, "text/plain")
            state = {"complete": '{"terminated": {"exitCode": 0}}', "failed": '{"terminated": {"exitCode": 3}}'}.get(
                phase, '{"running": {"startedAt": "2026-11-30T08:20:01Z"}}')
            return self._send(200, self._fixture("pod-list.json", job, STATE=state, PHASE="Running"))
        return self._send(404, {"kind": "Status", "status": "Failure", "code": 404, "message": f"no {url.path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


@pytest.fixture
def fake_api(tmp_path, monkeypatch):
    server = FakeKubernetes()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server.url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "me"}}],
        "users": [{"name": "me", "user": {"token": "test-token"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "tinynet"\nversion = "0.1"\ndependencies = ["torch"]\n'
        '[tool.envbuilder.jobs.train]\ncommand = "python -m tinynet.train --epochs 2"\nshm-size = "1g"\n'
        '[tool.envbuilder.jobs.train.resources]\ncpus = 2\nmemory = "4g"\ntime = "1h"\n'
        '[tool.envbuilder.jobs.train.cluster]\nprofile = "k8s"\n', encoding="utf-8")
    return root


@pytest.fixture
def profiles(cli, tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[clusters.k8s]\nengine = "kubernetes"\nnamespace = "ml"\nartifacts = "pvc"\n'
                      'artifacts-claim = "runs"\n', encoding="utf-8")
    monkeypatch.setenv("ENVBUILDER_CONFIG", str(config))
    return config


def test_submit_creates_the_job_through_the_client_and_the_run_follows_it(cli, fake_api, project, profiles):
    result = cli("submit", str(project), "train", "--image", IMAGE, "--json")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    assert done["submitted"] and done["engine"] == "kubernetes" and done["profile"] == "k8s"
    [(_, path, _, body)] = [r for r in fake_api.requests if r[0] == "POST"]
    assert path == "/apis/batch/v1/namespaces/ml/jobs" and body["kind"] == "Job"
    assert body["metadata"]["name"] == done["job_id"]
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["resources"]["limits"] == {"cpu": "2", "memory": "4096Mi"}
    assert body["spec"]["activeDeadlineSeconds"] == 3600
    assert body["spec"]["template"]["spec"]["volumes"][1] == {"name": "artifacts", "persistentVolumeClaim": {"claimName": "runs"}}

    listed = json.loads(cli("runs", "list", "--json").stdout)
    assert listed[0]["status"] == "queued" and listed[0]["backend_job_id"] == done["job_id"]
    fake_api.phase = "running"
    assert json.loads(cli("runs", "show", done["run_id"], "--json").stdout)["status"] == "running"
    fake_api.phase = "complete"
    shown = json.loads(cli("runs", "show", done["run_id"], "--json").stdout)
    assert shown["status"] == "completed" and shown["exit_code"] == 0
    assert shown["metrics"]["val_loss"] == [[1, 0.4], [2, 0.2]]  # parsed from the pod's log, read through the API
    assert Path(shown["log_path"]).read_text() == LOG
    assert json.loads(cli("runs", "show", done["run_id"], "--json").stdout)["metrics"] == shown["metrics"]
    assert any(r[1].endswith("/log") and r[2].get("container") == "job" for r in fake_api.requests)


def test_a_failed_job_records_the_pods_exit_code(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "failed"
    shown = json.loads(cli("runs", "show", done["run_id"], "--json").stdout)
    assert (shown["status"], shown["exit_code"]) == ("failed", 3) and "BackoffLimitExceeded" in shown["error"]


def test_stop_deletes_the_job_with_its_grace_period(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "running"
    stopped = cli("runs", "stop", done["run_id"], "--grace", "20")
    assert stopped.exit_code == 0 and stopped.stdout.strip().endswith("stopped"), stopped.stdout + stopped.stderr
    [(_, path, query, body)] = [r for r in fake_api.requests if r[0] == "DELETE"]
    assert path == f"/apis/batch/v1/namespaces/ml/jobs/{done['job_id']}"
    sent = {**query, **(body or {})}
    assert int(sent["gracePeriodSeconds"]) == 20 and sent["propagationPolicy"] == "Background"


def test_without_a_kubeconfig_the_manifest_is_printed_and_nothing_recorded(cli, project, profiles, monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    result = cli("submit", str(project), "train", "--image", IMAGE)
    assert result.exit_code == 0, result.stderr
    assert "kind: Job" in result.stdout and f"image: {IMAGE}" in result.stdout
    assert "no kubeconfig" in result.stderr
    assert json.loads(cli("runs", "list", "--json").stdout) == []


def test_an_image_not_in_a_registry_is_refused_for_kubernetes(cli, fake_api, project, profiles):
    result = cli("submit", str(project), "train", "--image", "tinynet-local:latest")
    assert result.exit_code == 2 and "cluster-needs-registry" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr

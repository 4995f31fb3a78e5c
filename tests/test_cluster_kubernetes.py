"""`envbuilder submit --to kubernetes` through the official client, against a fake of the API at the HTTP boundary.

No cluster can run here, so a small HTTP server on 127.0.0.1 (tests/support/fake_kubernetes.py) answers the
Kubernetes API's paths with objects built from the official client's own models and serialized as the client
serializes them, and records what the client sent. The kubeconfig points the official client at it, so every
call (create the Job, read its status, list its pods, read the log, delete it) goes through the real client, its
deserialization and its HTTP stack: the Job's phases from created to complete or failed, and the API server's
refusals (401, 403, 404, 409) as one clear line each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fake_kubernetes import fake_kubernetes

from envbuilder.cluster.engines import KubernetesEngine
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.errors import EnvbuilderError

IMAGE = "registry.example.com/team/tinynet@sha256:" + "b" * 64
LOG = ("training on 3200 points\nepoch 1/2 loss=0.5 val_loss=0.4 acc=0.8 lr=0.01\n"
       "epoch 2/2 loss=0.3 val_loss=0.2 acc=0.9 lr=0.005\ndone\n")


@pytest.fixture
def fake_api(tmp_path, monkeypatch):
    kubeconfig = tmp_path / "kubeconfig"
    with fake_kubernetes(kubeconfig, namespace="ml", log=LOG) as server:
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        yield server


@pytest.fixture
def project(tmp_path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    (tmp_path / "data").mkdir()
    (root / "pyproject.toml").write_text(
        '[project]\nname = "tinynet"\nversion = "0.1"\ndependencies = ["torch"]\n'
        '[tool.envbuilder.jobs.train]\ncommand = "python -m tinynet.train --epochs 2"\nshm-size = "1g"\n'
        '[tool.envbuilder.jobs.train.resources]\ncpus = 2\nmemory = "4g"\ntime = "1h"\n'
        '[tool.envbuilder.jobs.train.cluster]\nprofile = "k8s"\n', encoding="utf-8")
    return root


def _config(tmp_path, monkeypatch, extra: str = "") -> Path:
    config = tmp_path / "config.toml"
    config.write_text('[clusters.k8s]\nengine = "kubernetes"\nnamespace = "ml"\nartifacts = "pvc"\n'
                      'artifacts-claim = "runs"\n' + extra, encoding="utf-8")
    monkeypatch.setenv("ENVBUILDER_CONFIG", str(config))
    return config


@pytest.fixture
def profiles(cli, tmp_path, monkeypatch):
    return _config(tmp_path, monkeypatch)


def _status(cli, run_id: str) -> dict:
    return json.loads(cli("runs", "show", run_id, "--json").stdout)


def test_submit_creates_the_job_and_the_run_follows_its_phases(cli, fake_api, project, profiles):
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
    # Created (status {}), then its pod pulling the image (active, not ready): still queued, no log asked for.
    assert _status(cli, done["run_id"])["status"] == "queued"
    fake_api.phase = "pending"
    assert _status(cli, done["run_id"])["status"] == "queued"
    assert not any(r[1].endswith("/log") for r in fake_api.requests)
    fake_api.phase = "running"
    assert _status(cli, done["run_id"])["status"] == "running"
    fake_api.phase = "complete"
    shown = _status(cli, done["run_id"])
    assert shown["status"] == "completed" and shown["exit_code"] == 0
    assert shown["metrics"]["val_loss"] == [[1, 0.4], [2, 0.2]]  # parsed from the pod's log, read through the API
    assert Path(shown["log_path"]).read_text() == LOG
    assert _status(cli, done["run_id"])["metrics"] == shown["metrics"]
    assert any(r[1].endswith("/log") and r[2].get("container") == "job" for r in fake_api.requests)
    # The pod's metrics file cannot be read from here: the run says so, and metrics came from the log.
    assert [n["code"] for n in shown["notices"]] == ["metrics-file-not-read"]


def test_a_failed_job_records_the_pods_exit_code(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "failed"
    shown = _status(cli, done["run_id"])
    assert (shown["status"], shown["exit_code"]) == ("failed", 3) and "BackoffLimitExceeded" in shown["error"]


def test_a_job_deleted_behind_our_back_is_recorded_failed(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "running"
    assert _status(cli, done["run_id"])["status"] == "running"
    fake_api.phase = "gone"  # 404 NotFound, as for a Job deleted or past its ttlSecondsAfterFinished
    shown = _status(cli, done["run_id"])
    assert shown["status"] == "failed" and "the Job is gone" in shown["error"]


def test_stop_deletes_the_job_with_its_grace_period(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "running"
    stopped = cli("runs", "stop", done["run_id"], "--grace", "20")
    assert stopped.exit_code == 0 and stopped.stdout.strip().endswith("stopped"), stopped.stdout + stopped.stderr
    [(_, path, query, body)] = [r for r in fake_api.requests if r[0] == "DELETE"]
    assert path == f"/apis/batch/v1/namespaces/ml/jobs/{done['job_id']}"
    sent = {**query, **(body or {})}
    assert int(sent["gracePeriodSeconds"]) == 20 and sent["propagationPolicy"] == "Background"


# --- the API server's refusals: one line each, with what to do -------------------------------------------


def _one_line_error(result, code: str, exit_code: int = 1) -> str:
    assert result.exit_code == exit_code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and f"{code}" in result.stderr, result.stderr
    return result.stderr


def test_forbidden_create_is_one_line_naming_the_permission(cli, fake_api, project, profiles):
    fake_api.refuse[("POST", "jobs")] = 403
    err = _one_line_error(cli("submit", str(project), "train", "--image", IMAGE), "cluster-forbidden")
    assert 'cannot create resource "jobs" in API group "batch" in the namespace "ml"' in err
    assert "kubectl auth can-i create jobs -n ml" in err
    [run] = json.loads(cli("runs", "list", "--json").stdout)
    assert run["status"] == "failed" and "forbidden" in run["error"]  # recorded, never left queued


def test_rejected_credentials_are_one_line(cli, fake_api, project, profiles):
    fake_api.refuse[("POST", "jobs")] = 401
    err = _one_line_error(cli("submit", str(project), "train", "--image", IMAGE), "cluster-forbidden")
    assert "401 Unauthorized" in err and "credentials were rejected" in err


def test_a_missing_namespace_is_one_line(cli, fake_api, project, tmp_path, monkeypatch):
    config = _config(tmp_path, monkeypatch)
    config.write_text(config.read_text().replace('namespace = "ml"', 'namespace = "research"'))
    err = _one_line_error(cli("submit", str(project), "train", "--image", IMAGE), "cluster-command-failed")
    assert "namespace 'research' not found" in err and "kubectl create namespace" in err


def test_forbidden_stop_says_so_and_the_run_stays(cli, fake_api, project, profiles):
    done = json.loads(cli("submit", str(project), "train", "--image", IMAGE, "--json").stdout)
    fake_api.phase = "running"
    fake_api.refuse[("DELETE", "jobs")] = 403
    err = _one_line_error(cli("runs", "stop", done["run_id"], "--grace", "1"), "cluster-forbidden")
    assert 'cannot delete resource "jobs"' in err
    assert _status(cli, done["run_id"])["status"] == "running"


def test_a_job_name_taken_is_a_conflict(fake_api):
    engine = KubernetesEngine(ClusterProfile(engine="kubernetes", namespace="ml"))
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "eb-t-1", "namespace": "ml"},
                "spec": {"template": {"spec": {"restartPolicy": "Never",
                                               "containers": [{"name": "job", "image": IMAGE}]}}}}
    assert engine.submit(manifest) == "eb-t-1"
    with pytest.raises(EnvbuilderError) as caught:
        engine.submit(manifest)
    assert caught.value.code == "cluster-job-exists"
    assert 'jobs.batch "eb-t-1" already exists' in str(caught.value) and "kubectl delete job" in caught.value.hint


# --- data mounts and printing --------------------------------------------------------------------------------


def test_data_mounts_are_mapped_from_the_profile_or_named_in_a_notice(cli, fake_api, project, tmp_path, monkeypatch):
    data = tmp_path / "data"
    _config(tmp_path, monkeypatch, f'[clusters.k8s.volumes]\n"{data}" = {{ claim = "datasets" }}\n')
    (tmp_path / "other").mkdir()
    result = cli("submit", str(project), "train", "--image", IMAGE, "--json",
                 "--mount", f"{data}:/data:ro", "--mount", f"{tmp_path / 'other'}:/other:ro")
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout)
    [(_, _, _, body)] = [r for r in fake_api.requests if r[0] == "POST"]
    pod = body["spec"]["template"]["spec"]
    assert pod["volumes"][2] == {"name": "data-0", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}}
    assert pod["containers"][0]["volumeMounts"][2] == {"name": "data-0", "mountPath": "/data", "readOnly": True}
    assert len(pod["volumes"]) == 3  # /other has no volume on the cluster: not in the Job...
    [dropped] = [n for n in done["notices"] if n["code"] == "cluster-mounts-dropped"]
    assert f"{tmp_path / 'other'}:/other" in dropped["message"] and "[clusters.k8s.volumes]" in dropped["hint"]
    # ...and the run keeps the notice for `runs show`.
    assert "cluster-mounts-dropped" in [n["code"] for n in _status(cli, done["run_id"])["notices"]]
    printed = cli("submit", str(project), "train", "--image", IMAGE, "--dry-run", "--mount", f"{tmp_path / 'other'}:/other")
    assert printed.exit_code == 0 and "does not mount" in printed.stderr and "kind: Job" in printed.stdout


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

"""Kubernetes: the batch/v1 Job manifest for a ClusterJob, and the Job's status in the run store's words.

The image is named by digest (a tag can move between submission and the pod's start); the project's code is
the image's own (/workspace/project), not a mount; /dev/shm is an in-memory emptyDir sized like local runs;
/artifacts is the profile's PVC or hostPath (else an emptyDir); the job's data mounts are the volumes the
profile's `volumes` table maps their folders to (a mount it maps no volume for cannot be had: submit says so);
GPUs are `resources.limits` of the vendor's device plugin (nvidia.com/gpu, amd.com/gpu), with a node selector
on the GPU product where the profile names the label. The pod runs as the image's non-root user with no
privilege escalation and no capabilities.
Pure: dicts in, dicts out. Must not import proc, docker, the kubernetes client, the run store or the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from envbuilder.cluster.profiles import ClusterProfile, ClusterVolume
from envbuilder.cluster.spec import ClusterJob, JobState
from envbuilder.imagelayout import IMAGE_UID
from envbuilder.run.spec import CONTAINER_ARTIFACTS, ResolvedMount

MANAGED_BY = "envbuilder"
RUN_ID_LABEL = "envbuilder.org/run-id"  # label keys take one '/', so not the image labels' dotted form
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}


def render_job_manifest(job: ClusterJob, profile: ClusterProfile, *, image_ref: str) -> dict[str, Any]:
    """The Job. image_ref: REPO@sha256:DIGEST, what the kubelet pulls."""
    labels = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/name": job.name[:63],
              RUN_ID_LABEL: job.run_id}
    r = job.resources
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if r.cpus:
        limits["cpu"] = requests["cpu"] = str(r.cpus)
    if r.memory_mib:
        limits["memory"] = requests["memory"] = f"{r.memory_mib}Mi"
    if r.gpus:
        limits[GPU_RESOURCE.get(job.gpu_vendor, "nvidia.com/gpu")] = str(r.gpus)
    container: dict[str, Any] = {
        "name": "job",
        "image": image_ref,
        "imagePullPolicy": "IfNotPresent",
        "command": list(job.argv),
        "workingDir": job.workdir,
        "env": [{"name": key, "value": value} for key, value in sorted(job.env.items())],
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "artifacts", "mountPath": CONTAINER_ARTIFACTS}],
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }
    data_volumes, data_mounts = data_volumes_of(job, profile)
    container["volumeMounts"] += data_mounts
    if limits:
        container["resources"] = {"limits": limits, **({"requests": requests} if requests else {})}
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": int(job.grace_s),
        "securityContext": {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID,
                            "fsGroup": IMAGE_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{r.shm_mib}Mi"}},
                    {"name": "artifacts", **_artifacts_volume(profile)}, *data_volumes],
    }
    if r.gpus and r.gpu_type and profile.gpu_product_label:
        pod["nodeSelector"] = {profile.gpu_product_label: profile.gpu_names.get(r.gpu_type, r.gpu_type)}
    if profile.image_pull_secret:
        pod["imagePullSecrets"] = [{"name": profile.image_pull_secret}]
    spec: dict[str, Any] = {"backoffLimit": profile.backoff_limit,
                            "ttlSecondsAfterFinished": profile.ttl_after_finished_s,
                            "template": {"metadata": {"labels": dict(labels)}, "spec": pod}}
    if r.time_s:
        spec["activeDeadlineSeconds"] = int(r.time_s)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": job.name, "namespace": profile.namespace, "labels": labels}, "spec": spec}


def volume_for(mount: ResolvedMount, profile: ClusterProfile) -> tuple[str, ClusterVolume, str] | None:
    """(the profile's folder, its volume, the mount's path under it) for a data mount the profile maps; None
    when it maps no folder that holds the mount's source. The deepest mapped folder wins."""
    source = PurePosixPath(os.path.expanduser(str(mount.source)))
    best: tuple[str, ClusterVolume, str] | None = None
    depth = -1
    for folder, volume in profile.volumes.items():
        root = PurePosixPath(os.path.expanduser(folder))
        if (source == root or root in source.parents) and len(root.parts) > depth:
            best, depth = (folder, volume, "" if source == root else source.relative_to(root).as_posix()), len(root.parts)
    return best


def unmapped_mounts(job: ClusterJob, profile: ClusterProfile) -> list[ResolvedMount]:
    """The job's data mounts the profile gives no cluster volume for: the Job cannot have them."""
    return [m for m in job.data_mounts if volume_for(m, profile) is None]


def data_volumes_of(job: ClusterJob, profile: ClusterProfile) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container volumeMounts) for the data mounts the profile maps. A PVC is mounted once per
    mount with its subPath; a node folder is the hostPath of the mount's own folder."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for index, mount in enumerate(job.data_mounts):
        found = volume_for(mount, profile)
        if found is None:
            continue
        _, volume, below = found
        name = f"data-{index}"
        read_only = mount.read_only if volume.read_only is None else volume.read_only
        entry: dict[str, Any] = {"name": name, "mountPath": mount.target, "readOnly": read_only}
        if volume.claim is not None:
            volumes.append({"name": name, "persistentVolumeClaim": {"claimName": volume.claim, "readOnly": read_only}})
            if below:
                entry["subPath"] = below
        else:
            path = str(PurePosixPath(volume.host_path or "/") / below) if below else volume.host_path
            volumes.append({"name": name, "hostPath": {"path": path, "type": "Directory"}})
        mounts.append(entry)
    return volumes, mounts


def _artifacts_volume(profile: ClusterProfile) -> dict[str, Any]:
    if profile.artifacts == "pvc" and profile.artifacts_claim:
        return {"persistentVolumeClaim": {"claimName": profile.artifacts_claim}}
    if profile.artifacts == "host-path" and profile.artifacts_host_path:
        return {"hostPath": {"path": profile.artifacts_host_path, "type": "DirectoryOrCreate"}}
    return {"emptyDir": {}}


def job_state(status: Mapping[str, Any] | None) -> JobState:
    """A Job's `.status` (as the API returns it, camelCase) -> the run's state. The exit code is not in the Job:
    0 when it succeeded, else unknown unless the pod's is read (see pod_exit_code)."""
    if status is None:
        return JobState(None, None, "the Job is gone")
    for condition in status.get("conditions") or ():
        if condition.get("status") != "True":
            continue
        kind, reason = condition.get("type"), condition.get("reason") or ""
        if kind == "Complete" or kind == "SuccessCriteriaMet":
            return JobState("completed", 0, "Complete")
        if kind == "Failed":
            return JobState("failed", None, f"Failed ({reason})" if reason else "Failed")
    if status.get("active"):
        # `ready` counts the pods that run (Kubernetes >= 1.24); an active pod that is not ready is still being
        # scheduled or pulling the image. Older API servers leave it out: startTime is all there is.
        ready = status.get("ready")
        running = ready > 0 if isinstance(ready, int) else bool(status.get("startTime"))
        return JobState("running", None, "active") if running else JobState("queued", None, "pod not ready")
    return JobState("queued", None, "pending")


def pod_exit_code(pod_status: Mapping[str, Any] | None) -> int | None:
    """The job container's exit code from a pod's `.status`, once it terminated."""
    for container in (pod_status or {}).get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated")
        if container.get("name") == "job" and terminated:
            return terminated.get("exitCode")
    return None

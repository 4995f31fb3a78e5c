"""SkyPilot: the task (YAML) for a ClusterJob.

`resources.accelerators` from the job's GPUs and type (e.g. H100:1), `resources.image_id: docker:IMAGE` so the
task runs in the project's image, `envs` from the job's environment, `file_mounts` for its data mounts (SkyPilot
uploads them), and `run`: the job's command in its working folder, under `timeout` when it has a time limit
(SkyPilot has no per-task limit) with SIGTERM first, like local runs.
Pure: must not import proc, docker, sky, the run store or the CLI.
"""

from __future__ import annotations

import shlex
from typing import Any

from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.spec import ClusterJob


def render_task(job: ClusterJob, profile: ClusterProfile, *, image_ref: str) -> dict[str, Any]:
    r = job.resources
    resources: dict[str, Any] = {"image_id": f"docker:{image_ref}"}
    if r.gpus:
        name = profile.gpu_names.get(r.gpu_type or "", r.gpu_type or "")
        if name:
            resources["accelerators"] = f"{name}:{r.gpus}"
    if r.cpus:
        resources["cpus"] = f"{r.cpus}+"
    if r.memory_mib:
        resources["memory"] = f"{max(1, r.memory_mib // 1024)}+"  # SkyPilot counts memory in GB
    if profile.cloud:
        resources["cloud"] = profile.cloud
    if profile.region:
        resources["region"] = profile.region
    command = " ".join(shlex.quote(a) for a in job.argv)
    if r.time_s:
        command = f"timeout --signal=TERM --kill-after={int(job.grace_s)} {int(r.time_s)} {command}"
    task: dict[str, Any] = {
        "name": job.name,
        "resources": resources,
        "envs": {key: value for key, value in sorted(job.env.items())},
        "run": f"cd {shlex.quote(job.workdir)} && exec {command}",
    }
    if job.data_mounts:
        task["file_mounts"] = {m.target: str(m.source) for m in job.data_mounts}
    return task

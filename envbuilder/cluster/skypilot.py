"""SkyPilot: the task (YAML) for a ClusterJob, and the parser of what `sky queue` prints.

`resources.accelerators` from the job's GPUs and type (e.g. H100:1), `resources.image_id: docker:IMAGE` so the
task runs in the project's image, `envs` from the job's environment, `file_mounts` for its data mounts (SkyPilot
uploads them), and `run`: the job's command in its working folder, under `timeout` when it has a time limit
(SkyPilot has no per-task limit) with SIGTERM first, like local runs.
Pure: must not import proc, docker, sky, the run store or the CLI.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.spec import ClusterJob, JobState


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


# --- what `sky queue` prints ----------------------------------------------------------------------------------
# Where the format comes from (SkyPilot 0.14.1's own source, and captured output quoted in public READMEs):
# - sky/client/cli/command.py `queue`: prints "Fetching and parsing job queue...", then per cluster
#   "Job queue of current user on cluster NAME" and the table; with `--output json` a JSON object
#   {cluster: [records]} instead. A cluster it cannot ask (ClusterDoesNotExist, ClusterNotUpError...) is a
#   line "Failed to get the job queue for cluster 'NAME'." plus the exception, and the command still exits 0.
# - sky/client/cli/table_utils.py `format_job_queue`: columns ID, NAME, USER, SUBMITTED, STARTED, DURATION,
#   RESOURCES, STATUS, LOG, GIT COMMIT (older releases: no USER, no GIT COMMIT), drawn by prettytable with no
#   border, left-aligned, no left padding and two spaces on the right (sky/utils/log_utils.py `create_table`):
#   cells hold spaces ("2 mins ago", "1x[CPU:8+]") and may be empty, so rows are cut at the header's columns.
# - sky/skylet/job_lib.py `JobStatus.colored_str`: the STATUS cell is wrapped in ANSI colour codes.

_SKY_STATES = {"INIT": "queued", "PENDING": "queued", "SETTING_UP": "queued", "RUNNING": "running",
               "SUCCEEDED": "completed", "FAILED": "failed", "FAILED_SETUP": "failed", "FAILED_DRIVER": "failed",
               "CANCELLED": "stopped"}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_QUEUE_FAILED = "Failed to get the job queue for cluster"


class SkyQueueUnreadable(ValueError):
    """`sky queue` could not ask the cluster (not up, credentials); the message is SkyPilot's reason."""


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def parse_sky_queue(stdout: str, job_number: str) -> JobState:
    """`sky queue [--output json] CLUSTER` -> the job's state. A cluster SkyPilot no longer knows is a job gone
    (status None); a cluster it could not ask raises SkyQueueUnreadable (the run is left as it is)."""
    text = strip_ansi(stdout)
    if _QUEUE_FAILED in text:
        reason = text.split(_QUEUE_FAILED, 1)[1].strip().splitlines()
        detail = reason[1].strip() if len(reason) > 1 else "no reason given"
        if "does not exist" in text or "ClusterDoesNotExist" in text:
            return JobState(None, None, "the SkyPilot cluster is gone")
        raise SkyQueueUnreadable(detail)
    records = _json_records(text)
    rows = records if records is not None else _table_rows(text)
    for row in rows:
        if str(row.get("ID", row.get("job_id", ""))).strip() == job_number:
            word = str(row.get("STATUS", row.get("status", ""))).strip().upper().removeprefix("JOBSTATUS.")
            if word in _SKY_STATES:
                status = _SKY_STATES[word]
                return JobState(status, 0 if status == "completed" else None, word)
            return JobState("running", None, word or "unknown")  # a state a newer SkyPilot invents: not over yet
    return JobState(None, None, "the job is not in `sky queue`")


def _json_records(text: str) -> list[dict[str, Any]] | None:
    """The records of `--output json` (None when the output is the table): the JSON starts on its own line,
    after SkyPilot's progress lines."""
    match = re.search(r"^\{", text, re.MULTILINE)
    if match is None:
        return None
    try:
        data = json.loads(text[match.start():])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return [r for records in data.values() if isinstance(records, list) for r in records if isinstance(r, dict)]


def _table_rows(text: str) -> list[dict[str, str]]:
    """Every row of every job table in the output, as {column: cell}."""
    rows: list[dict[str, str]] = []
    columns: list[tuple[str, int]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("Job queue of"):
            columns = []
            continue
        words = stripped.split()
        if words[0] == "ID" and "STATUS" in words:
            # Column names are separated by two spaces or more; a name may hold one ("GIT COMMIT").
            columns = [(m.group(0), m.start()) for m in re.finditer(r"\S+(?: \S+)*", line)]
            continue
        if columns and words[0].isdigit():
            cut = [start for _, start in columns] + [None]
            rows.append({name: line[cut[i]:cut[i + 1]].strip() for i, (name, _) in enumerate(columns)})
    return rows

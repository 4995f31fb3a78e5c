"""Slurm: the sbatch script for a ClusterJob, and the parsers of what sbatch, squeue, scontrol and sacct print.

The script runs the image on the allocated node with the profile's runtime (docker, podman, apptainer or
singularity, or enroot through pyxis' `srun --container-image`), with the project and artifacts mounted as in
local runs. It runs the container in the background and waits, so that bash can take a signal: the first
SIGTERM (`scancel --signal=TERM --batch`, or Slurm's warning before the time limit) is forwarded to the job for
a graceful stop, a second one kills it. The job's exit code is the script's, so Slurm's ExitCode is the job's.
Pure: text in, text out. Must not import proc, docker, the run store or the CLI.
"""

from __future__ import annotations

import re
import shlex

from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.spec import ClusterJob, JobState
from envbuilder.errors import EnvbuilderError
from envbuilder.imagelayout import LABEL_RUN_ID

# Slurm job states (squeue(1), "JOB STATE CODES") in the run store's words.
_QUEUED = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED", "RESIZING"}
KILL_AFTER_S = 25  # under Slurm's default KillWait (30 s)
_FAILED = {"FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}


def render_sbatch(job: ClusterJob, profile: ClusterProfile, *, image_ref: str, local_engine: bool) -> str:
    """The batch script. image_ref: what the nodes run (the local tag when they use this machine's engine,
    else a registry reference)."""
    lines = ["#!/bin/bash",
             f"# envbuilder run {job.run_id}: {job.project} {job.job or '(command)'} in {job.image}",
             f"# written by `envbuilder submit` for the {profile.runtime} runtime; the output file is the run's log"]
    lines += [f"#SBATCH {option}" for option in sbatch_options(job, profile)]
    lines += [
        "set -uo pipefail",
        f"run_name={shlex.quote(job.name)}-${{SLURM_JOB_ID:-local}}",
        "stops=0",
        "child=",
        "watchdog=",
        "# First SIGTERM: forwarded to the job, which may checkpoint. Second: killed.",
        "stop_job() {",
        "  stops=$((stops + 1))",
        "  # A signal between `... &` and `child=$!` runs this first: take the job's pid before $! changes.",
        "  child=${child:-${!:-}}",
        *("  " + line for line in _stop_lines(profile.runtime)),
        "}",
        "trap stop_job TERM INT",
        *_gpu_lines(job, profile),
        _runtime_command(job, profile, image_ref=image_ref, local_engine=local_engine) + " &",
        "child=${child:-$!}  # the trap may have taken it already, and started its watchdog since",
        "# wait returns early (>128) when a trapped signal arrives; wait again until the job has ended.",
        'while :; do wait "$child"; code=$?; kill -0 "$child" 2>/dev/null || break; done',
        'wait "$child" 2>/dev/null; last=$?',
        'if [ "$last" != 127 ]; then code=$last; fi',
        '# The watchdog (and its sleep) must not outlive the job: Slurm waits for every process of the step.',
        'if [ -n "$watchdog" ]; then pkill -P "$watchdog" 2>/dev/null; kill "$watchdog" 2>/dev/null; fi',
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def sbatch_options(job: ClusterJob, profile: ClusterProfile) -> list[str]:
    r = job.resources
    options = [f"--job-name={job.name}", f"--output={job.log_path}", "--open-mode=append",
               f"--chdir={job.mounts[0].source if job.mounts else '/tmp'}"]
    if profile.partition:
        options.append(f"--partition={profile.partition}")
    if profile.account:
        options.append(f"--account={profile.account}")
    if r.cpus:
        options.append(f"--cpus-per-task={r.cpus}")
    if r.memory_mib:
        options.append(f"--mem={r.memory_mib}M")
    if r.time_s:
        options.append(f"--time={slurm_time(r.time_s)}")
        # SIGTERM to the script this long before the limit, so the job checkpoints instead of being killed.
        options.append(f"--signal=B:TERM@{int(min(job.grace_s, max(r.time_s // 10, 1)))}")
    if r.gpus:
        gpu_type = profile.gpu_names.get(r.gpu_type or "", (r.gpu_type or "").lower().replace(" ", "_"))
        typed = f"{gpu_type}:" if gpu_type else ""
        options.append(f"--gres=gpu:{typed}{r.gpus}" if profile.gpu_flag == "gres" else f"--gpus={typed}{r.gpus}")
    options += list(profile.sbatch_args)
    for option in options:
        if "\n" in option:
            raise EnvbuilderError("render-unsafe-value", f"sbatch option {option!r} contains a newline", "remove it")
    return options


def slurm_time(seconds: int) -> str:
    """Slurm's D-HH:MM:SS."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def _stop_lines(runtime: str) -> list[str]:
    if runtime in ("docker", "podman"):
        # The container is the engine's child, not ours: signal it through the engine. Slurm's SIGKILL (KillWait,
        # 30 s by default, after a plain scancel) would reach this script but not the container, so a watchdog
        # kills the container first if the job ignores SIGTERM.
        return [f'if [ "$stops" = 1 ]; then {runtime} kill --signal TERM "$run_name" >/dev/null 2>&1;',
                f'  {{ sleep {KILL_AFTER_S} && {runtime} kill "$run_name"; }} >/dev/null 2>&1 & watchdog=$!',
                f'else {runtime} kill "$run_name" >/dev/null 2>&1; fi']
    return ['if [ -n "$child" ]; then',
            '  if [ "$stops" = 1 ]; then kill -TERM "$child" 2>/dev/null; else kill -KILL "$child" 2>/dev/null; fi',
            'fi']


def _gpu_lines(job: ClusterJob, profile: ClusterProfile) -> list[str]:
    """The GPUs Slurm allocated, as the runtime's flags (in the bash array gpu_args)."""
    if not job.resources.gpus or profile.runtime == "enroot":
        return ["gpu_args=()"]  # pyxis/enroot take the allocation's GPUs themselves
    lines = ["gpu_ids=${SLURM_JOB_GPUS:-${CUDA_VISIBLE_DEVICES:-}}", "gpu_args=()"]
    amd = job.gpu_vendor == "amd"
    if profile.runtime in ("apptainer", "singularity"):
        lines.append(f"gpu_args=({'--rocm' if amd else '--nv'})")  # both honour the allocation's *_VISIBLE_DEVICES
    elif amd:
        lines.append('gpu_args=(--device /dev/kfd --device /dev/dri --group-add video -e "ROCR_VISIBLE_DEVICES=$gpu_ids")')
    elif profile.runtime == "podman":
        lines.append('for id in ${gpu_ids//,/ }; do gpu_args+=(--device "nvidia.com/gpu=$id"); done')
    else:
        lines.append(f'if [ -n "$gpu_ids" ]; then gpu_args=(--gpus "\\"device=$gpu_ids\\""); '
                     f'else gpu_args=(--gpus {job.resources.gpus}); fi')
    return lines


def _runtime_command(job: ClusterJob, profile: ClusterProfile, *, image_ref: str, local_engine: bool) -> str:
    q = shlex.quote
    argv = " ".join(q(a) for a in job.argv)
    mounts = [(str(m.source), m.target, m.read_only) for m in job.mounts]
    if job.artifacts_dir is not None:
        mounts.append((str(job.artifacts_dir), "/artifacts", False))
    runtime = profile.runtime
    if runtime in ("docker", "podman"):
        image = image_ref if runtime == "docker" or not local_engine else f"docker-daemon:{image_ref}"
        parts = [runtime, "run", "--rm", "--name", '"$run_name"', "--label", q(f"{LABEL_RUN_ID}={job.run_id}"),
                 "--user", q(job.user), "--workdir", q(job.workdir), "--shm-size", q(job.resources.shm_size)]
        if job.resources.cpus:
            parts += ["--cpus", str(job.resources.cpus)]  # containers are the engine's children: Slurm cannot cap them
        if job.resources.memory:
            parts += ["--memory", q(job.resources.memory)]
        parts += [f"-v {q(_volume(src, dst, ro))}" for src, dst, ro in mounts]
        parts += [f"-e {q(f'{k}={v}')}" for k, v in sorted(job.env.items())]
        parts += ['"${gpu_args[@]}"', q(image)]
        return " ".join(parts) + (" " + argv if argv else "")
    if runtime in ("apptainer", "singularity"):
        image = f"docker-daemon:{image_ref}" if local_engine else f"docker://{image_ref}"
        parts = [runtime, "exec", "--cleanenv", "--no-home", "--writable-tmpfs", "--pwd", q(job.workdir)]
        parts += [f"--bind {q(_volume(src, dst, ro))}" for src, dst, ro in mounts]
        parts += [f"--env {q(f'{k}={v}')}" for k, v in sorted(job.env.items())]
        parts += ['"${gpu_args[@]}"', q(image)]
        return " ".join(parts) + (" " + argv if argv else "")
    # enroot through pyxis: srun runs the job step in the container; the step inherits the exported variables.
    image = f"dockerd://{image_ref}" if local_engine else enroot_uri(image_ref)
    mount_list = ",".join(_volume(src, dst, ro) for src, dst, ro in mounts)
    exports = "".join(f"export {k}={q(v)}; " for k, v in sorted(job.env.items()))
    return (f"{exports}srun --container-image={q(image)} --container-mounts={q(mount_list)} "
            f"--container-workdir={q(job.workdir)} --no-container-mount-home {argv}")


def _volume(source: str, target: str, read_only: bool) -> str:
    for path in (source, target):
        if "," in path or ":" in path:
            raise EnvbuilderError("render-unsafe-value", f"the mount path {path!r} contains ',' or ':'",
                             "rename the folder, or mount its parent")
    return f"{source}:{target}:{'ro' if read_only else 'rw'}"


def enroot_uri(ref: str) -> str:
    """`registry.example.com/team/img:tag` -> enroot's `registry.example.com#team/img:tag` (a bare Docker Hub
    name stays as it is)."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"{first}#{rest}"
    return ref


# --- what the commands print ----------------------------------------------------------------------------


def parse_sbatch(stdout: str) -> str:
    """`sbatch --parsable` prints `JOBID[;CLUSTER]`."""
    first = stdout.strip().splitlines()[0] if stdout.strip() else ""
    job_id = first.split(";")[0].strip()
    if not job_id.isdigit():
        raise EnvbuilderError("cluster-submit-failed", f"sbatch printed no job id: {stdout.strip()[:200]!r}",
                              "run the printed script with sbatch by hand to see why")
    return job_id


def parse_squeue(stdout: str, job_id: str) -> JobState | None:
    """`squeue --noheader --states=all --jobs=ID --format=%i|%T|%r`: None when the job is not listed."""
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0] == job_id:
            return _state(parts[1], None, parts[2] if len(parts) > 2 else None)
    return None


def parse_scontrol_job(stdout: str) -> JobState | None:
    """`scontrol show job -o ID`: one line of KEY=VALUE words; None when the controller forgot the job."""
    fields = dict(word.split("=", 1) for word in stdout.split() if "=" in word)
    if "JobState" not in fields:
        return None
    return _state(fields["JobState"], _exit_code(fields.get("ExitCode")), fields.get("Reason"))


def parse_sacct(stdout: str) -> JobState | None:
    """`sacct --noheader --parsable2 --allocations --jobs=ID --format=State,ExitCode`: the job's allocation line."""
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            return _state(parts[0].split()[0], _exit_code(parts[1]), None)
    return None


def accounting_disabled(stderr: str) -> bool:
    return "accounting storage is disabled" in stderr.lower()


def _exit_code(text: str | None) -> int | None:
    """Slurm's `CODE:SIGNAL`: the exit code, or 128 + the signal that killed the script."""
    match = re.match(r"^(\d+):(\d+)$", (text or "").strip())
    if not match:
        return None
    code, signal = int(match.group(1)), int(match.group(2))
    return 128 + signal if signal and not code else code


def _state(slurm_state: str, exit_code: int | None, reason: str | None) -> JobState:
    state = slurm_state.strip().upper().rstrip("+")
    detail = state + (f" ({reason})" if reason and reason not in ("None", "(null)") else "")
    if state in _QUEUED:
        return JobState("queued", None, detail)
    if state in _RUNNING:
        return JobState("running", None, detail)
    if state == "COMPLETED":
        return JobState("completed", exit_code if exit_code is not None else 0, detail)
    if state == "CANCELLED" or state.startswith("CANCELLED"):
        return JobState("stopped", exit_code, detail)
    if state in _FAILED:
        return JobState("failed", exit_code, detail)
    return JobState("running", None, detail)  # a state a newer Slurm invents: not over until it says so

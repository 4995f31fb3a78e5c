"""The cluster engines' commands and clients: submit a job, ask its state, signal and cancel it, read its output.

One class per engine, each with the same small surface (ClusterEngine): the Slurm commands (sbatch, squeue,
scontrol, sacct, scancel, sinfo) through envbuilder.proc.run_command; Kubernetes through the official
`kubernetes` client (imported only here, only when used); SkyPilot through its `sky` command. What they print is
parsed by the pure modules (cluster.slurm, cluster.kubernetes). Must not import the run store or the CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any, Protocol

from envbuilder.cluster.kubernetes import job_state as k8s_job_state
from envbuilder.cluster.kubernetes import pod_exit_code
from envbuilder.cluster.profiles import ClusterProfile
from envbuilder.cluster.skypilot import SkyQueueUnreadable, parse_sky_queue, strip_ansi
from envbuilder.cluster.slurm import (
    accounting_disabled,
    parse_sacct,
    parse_sbatch,
    parse_scontrol_job,
    parse_squeue,
)
from envbuilder.cluster.spec import JobState
from envbuilder.errors import EnvbuilderError
from envbuilder.proc import CommandResult, run_command

SLURM_TIMEOUT_S = 30.0


class ClusterEngine(Protocol):
    name: str

    def state(self, job_id: str) -> JobState: ...

    def signal_term(self, job_id: str, grace_s: float) -> None:
        """Ask the job to stop gracefully (SIGTERM to the job's processes)."""
        ...

    def cancel(self, job_id: str) -> None:
        """Stop it for good (the engine's full cancel)."""
        ...

    def output(self, job_id: str) -> str | None:
        """The job's whole output so far when the engine keeps it (None: it writes the run's log file itself)."""
        ...


def engine_for(profile: ClusterProfile) -> ClusterEngine:
    if profile.engine == "slurm":
        return SlurmEngine(profile)
    if profile.engine == "kubernetes":
        return KubernetesEngine(profile)
    return SkyPilotEngine(profile)


def _failed(engine: str, what: str, result: CommandResult, hint: str) -> EnvbuilderError:
    if result.missing:
        return EnvbuilderError("cluster-tool-missing", f"{result.argv[0]} is not installed (needed to {what})", hint)
    detail = "timed out" if result.timed_out else (result.tail(5).strip() or f"exit {result.returncode}")
    return EnvbuilderError("cluster-command-failed", f"{engine}: {' '.join(result.argv[:2])} failed to {what}: {detail}",
                           hint)


# --- Slurm --------------------------------------------------------------------------------------------------


class SlurmEngine:
    name = "slurm"

    def __init__(self, profile: ClusterProfile, *, timeout: float = SLURM_TIMEOUT_S) -> None:
        self.profile = profile
        self.timeout = timeout

    def _run(self, argv: list[str], what: str) -> CommandResult:
        result = run_command(argv, timeout=self.timeout)
        if not result.ok:
            raise _failed("slurm", what, result, "check that the Slurm client tools reach the controller "
                          "(`sinfo`); scripts/slurm.sh starts a single-node cluster on this machine")
        return result

    def nodes_are_local(self) -> bool:
        """Whether every node of the partition is this machine (a single-node cluster), so jobs can use this
        machine's Docker engine and its images."""
        argv = ["sinfo", "--noheader", "--format=%n"] + ([f"--partition={self.profile.partition}"] if self.profile.partition else [])
        result = run_command(argv, timeout=self.timeout)
        if not result.ok:
            return False
        nodes = {line.strip() for line in result.stdout.splitlines() if line.strip()}
        here = {socket.gethostname(), socket.gethostname().split(".")[0]}
        return bool(nodes) and nodes <= here

    def submit(self, script: Path) -> str:
        result = self._run(["sbatch", "--parsable", str(script)], "submit the job")
        return parse_sbatch(result.stdout)

    def state(self, job_id: str) -> JobState:
        # squeue answers for queued and running jobs; a finished one is asked of accounting (sacct), or of the
        # controller's memory (scontrol) where accounting is off.
        result = run_command(["squeue", "--noheader", "--states=all", f"--jobs={job_id}", "--format=%i|%T|%r"],
                             timeout=self.timeout)
        if result.ok:
            live = parse_squeue(result.stdout, job_id)
            if live is not None and not live.finished:
                return live
        elif result.missing:
            raise _failed("slurm", "ask the job's state", result, "install the Slurm client tools (slurm-client)")
        sacct = run_command(["sacct", "--noheader", "--parsable2", "--allocations", f"--jobs={job_id}",
                             "--format=State,ExitCode"], timeout=self.timeout)
        if sacct.ok and not accounting_disabled(sacct.stderr + sacct.stdout):
            state = parse_sacct(sacct.stdout)
            if state is not None:
                return state
        shown = run_command(["scontrol", "show", "job", "--oneliner", job_id], timeout=self.timeout)
        if shown.ok:
            state = parse_scontrol_job(shown.stdout)
            if state is not None:
                return state
        if "invalid job id" in (shown.stderr + shown.stdout).lower():
            return JobState(None, None, "Slurm no longer knows the job")
        if not shown.ok and not shown.missing and shown.returncode is None:
            raise _failed("slurm", "ask the job's state", shown, "is slurmctld running? (`scontrol ping`)")
        return JobState(None, None, "Slurm no longer knows the job")

    def signal_term(self, job_id: str, grace_s: float) -> None:
        # --batch: the batch script alone, whose trap forwards SIGTERM to the container (signalling its children
        # too would reach the container's engine client as well, and twice is a kill).
        self._run(["scancel", "--batch", "--signal=TERM", job_id], "signal the job")

    def cancel(self, job_id: str) -> None:
        self._run(["scancel", job_id], "cancel the job")

    def output(self, job_id: str) -> str | None:
        return None  # Slurm writes the run's log file itself (sbatch --output)


# --- Kubernetes ---------------------------------------------------------------------------------------------


def kubeconfig_path(environ: Any = os.environ) -> Path | None:
    """The kubeconfig the official client would load, when it exists."""
    for candidate in (environ.get("KUBECONFIG", "").split(os.pathsep)[0], str(Path.home() / ".kube" / "config")):
        if candidate and Path(candidate).expanduser().is_file():
            return Path(candidate).expanduser()
    return None


class KubernetesEngine:
    name = "kubernetes"

    def __init__(self, profile: ClusterProfile, *, kubeconfig: Path | None = None) -> None:
        self.profile = profile
        self.kubeconfig = kubeconfig or kubeconfig_path()
        self._api: Any = None

    @staticmethod
    def client_installed() -> bool:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            return False
        return True

    def _client(self) -> Any:
        if self._api is None:
            try:
                from kubernetes import client, config
            except ImportError:
                raise EnvbuilderError("cluster-tool-missing", "the kubernetes client is not installed",
                                      "pip install 'envbuilder[kubernetes]'") from None
            if self.kubeconfig is None:
                raise EnvbuilderError("cluster-no-kubeconfig", "no kubeconfig ($KUBECONFIG or ~/.kube/config)",
                                      "point KUBECONFIG at the cluster's config, or use --dry-run to print the Job")
            api_client = config.new_client_from_config(config_file=str(self.kubeconfig), context=self.profile.context)
            self._api = (client, client.BatchV1Api(api_client), client.CoreV1Api(api_client))
        return self._api

    def _call(self, what: str, fn: Any, *args: Any, quiet: tuple[int, ...] = (404,), **kwargs: Any) -> Any:
        """fn's answer; None for the HTTP codes in `quiet` (the caller says what they mean), else one clear error."""
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status in quiet:
                return None
            raise api_error(what, exc.status, exc.reason, _api_message(exc.body), self.profile.namespace) from None
        except OSError as exc:  # urllib3 wraps connection errors in OSError subclasses
            raise EnvbuilderError("cluster-unreachable", f"kubernetes: {what}: {exc}",
                                  "is the API server in the kubeconfig reachable?") from None

    def submit(self, manifest: dict[str, Any]) -> str:
        client, batch, _ = self._client()
        body = parse_job_model(manifest, client)
        created = self._call("create the Job", batch.create_namespaced_job, self.profile.namespace, body)
        if created is None:
            raise EnvbuilderError("cluster-command-failed", f"kubernetes: namespace {self.profile.namespace!r} not found",
                                  "create it (kubectl create namespace NAME), or set namespace in the profile")
        return created.metadata.name

    def state(self, job_id: str) -> JobState:
        client, batch, _ = self._client()
        job = self._call("read the Job", batch.read_namespaced_job_status, job_id, self.profile.namespace)
        if job is None:
            return JobState(None, None, "the Job is gone")
        status = client.ApiClient().sanitize_for_serialization(job.status) if job.status else {}
        state = k8s_job_state(status)
        if state.status == "failed":
            pod = self._pod(job_id)
            code = pod_exit_code(client.ApiClient().sanitize_for_serialization(pod.status)) if pod is not None else None
            state = JobState("failed", code, state.detail)
        return state

    def _pod(self, job_id: str) -> Any:
        _, _, core = self._client()
        pods = self._call("list the Job's pods", core.list_namespaced_pod, self.profile.namespace,
                          label_selector=f"job-name={job_id}")
        items = list(getattr(pods, "items", None) or [])
        items.sort(key=lambda p: p.metadata.creation_timestamp or 0)
        return items[-1] if items else None

    def signal_term(self, job_id: str, grace_s: float) -> None:
        # Deleting the Job's pods is Kubernetes' graceful stop: SIGTERM, then SIGKILL after the grace period.
        _, batch, _ = self._client()
        self._call("stop the Job", batch.delete_namespaced_job, job_id, self.profile.namespace,
                   grace_period_seconds=int(grace_s), propagation_policy="Background")

    def cancel(self, job_id: str) -> None:
        _, batch, _ = self._client()
        self._call("cancel the Job", batch.delete_namespaced_job, job_id, self.profile.namespace,
                   grace_period_seconds=0, propagation_policy="Background")

    def output(self, job_id: str) -> str | None:
        _, _, core = self._client()
        pod = self._pod(job_id)
        if pod is None:
            return None
        # 400: the container has not started yet (ContainerCreating), so there is no output to read.
        return self._call("read the pod's log", core.read_namespaced_pod_log, pod.metadata.name,
                          self.profile.namespace, container="job", quiet=(400, 404))


def parse_job_model(manifest: dict[str, Any], client: Any = None) -> Any:
    """The manifest as the official client's V1Job model (the client's own deserializer: unknown or mistyped
    fields fail here, not at the API server)."""
    if client is None:
        from kubernetes import client
    import json

    text = json.dumps(manifest)
    try:
        return client.ApiClient().deserialize(text, "V1Job", "application/json")  # kubernetes >= 35: the body text
    except TypeError:
        class _Response:  # older clients read the body from a response object
            data = text

        return client.ApiClient().deserialize(_Response(), "V1Job")


def api_error(what: str, status: int | None, reason: str | None, message: str, namespace: str) -> EnvbuilderError:
    """The API server's refusal as one line with what to do."""
    said = f"kubernetes: {what}: {status} {reason or ''}".rstrip() + (f": {message}" if message else "")
    if status == 401:
        return EnvbuilderError("cluster-forbidden", said, "the kubeconfig's credentials were rejected: refresh them "
                               "(your cloud's get-credentials command) or pick another context in the profile")
    if status == 403:
        return EnvbuilderError("cluster-forbidden", said, f"ask the cluster's admin for the permission (RBAC); check "
                               f"it with `kubectl auth can-i create jobs -n {namespace}`")
    if status == 409:
        return EnvbuilderError("cluster-job-exists", said, f"submit again (each submit names a new Job), or delete "
                               f"the old one: kubectl delete job NAME -n {namespace}")
    return EnvbuilderError("cluster-command-failed", said, "check the namespace, your RBAC and the kubeconfig context")


def _api_message(body: Any) -> str:
    import json

    try:
        return json.loads(body).get("message", "")[:300]
    except (TypeError, ValueError, AttributeError):
        return str(body or "")[:300]


# --- SkyPilot -----------------------------------------------------------------------------------------------


class SkyPilotEngine:
    """`sky launch` onto a cluster per run (or the profile's); job ids are CLUSTER/JOB."""

    name = "skypilot"

    def __init__(self, profile: ClusterProfile, *, timeout: float = 3600.0) -> None:
        self.profile = profile
        self.timeout = timeout

    @staticmethod
    def installed() -> bool:
        return shutil.which("sky") is not None

    @staticmethod
    def configured() -> bool:
        """`sky` is on PATH and has been set up (`sky check` writes ~/.sky)."""
        return SkyPilotEngine.installed() and (Path.home() / ".sky").is_dir()

    def submit(self, task_file: Path, cluster: str) -> str:
        result = run_command(["sky", "launch", "--yes", "--detach-run", "--cluster", cluster, str(task_file)],
                             timeout=self.timeout)
        if not result.ok:
            raise _failed("skypilot", "launch the task", result, "run `sky check`, then the printed command by hand")
        match = re.search(r"Job (?:ID|submitted, ID):\s*(\d+)", strip_ansi(result.stdout + result.stderr))
        return f"{cluster}/{match.group(1) if match else '1'}"

    def state(self, job_id: str) -> JobState:
        cluster, _, number = job_id.partition("/")
        # JSON where the CLI has `--output` (SkyPilot >= 0.10), else its table; both parsed by parse_sky_queue.
        result = run_command(["sky", "queue", "--output", "json", cluster], timeout=120)
        if not result.ok and "no such option" in (result.stderr + result.stdout).lower():
            result = run_command(["sky", "queue", cluster], timeout=120)
        if not result.ok:
            if "does not exist" in (result.stdout + result.stderr):
                return JobState(None, None, "the SkyPilot cluster is gone")
            raise _failed("skypilot", "ask the job's state", result, "run `sky status`")
        try:
            return parse_sky_queue(result.stdout, number)
        except SkyQueueUnreadable as exc:
            raise EnvbuilderError("cluster-command-failed", f"skypilot: sky queue {cluster} could not ask the "
                                  f"cluster: {exc}", f"run `sky status {cluster}`; `sky start {cluster}` if it "
                                  "was stopped") from None

    def signal_term(self, job_id: str, grace_s: float) -> None:
        cluster, _, number = job_id.partition("/")
        result = run_command(["sky", "cancel", "--yes", cluster, number], timeout=300)
        if not result.ok:
            raise _failed("skypilot", "cancel the job", result, "run `sky queue` to see it")

    def cancel(self, job_id: str) -> None:
        self.signal_term(job_id, 0)

    def output(self, job_id: str) -> str | None:
        cluster, _, number = job_id.partition("/")
        result = run_command(["sky", "logs", "--no-follow", cluster, number], timeout=300)
        return result.stdout if result.ok else None

"""The job models of the project config: Job, Mount, Export, InputSpec, MetricPattern, and their field checks.

Each check raises ValueError with a message meant for the user; envbuilder.project.config turns them into
issues with field paths. Keys are kebab-case in TOML and in the schema (snake_case accepted too).
Must not import docker, proc or the CLI.
"""

from __future__ import annotations

import re
import shlex
import string
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from envbuilder.quantities import ENV_NAME_PATTERN, SIZE_PATTERN, normalize_size, parse_gpu_request
from envbuilder.values import Value


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _title(name: str, _info: Any) -> str:
    return name.replace("_", " ").capitalize()


class ConfigValue(Value):
    """A config table: kebab-case keys in TOML and in the schema, snake_case accepted as well."""

    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, field_title_generator=_title)


# --- field checks (each raises ValueError with a message meant for the user) -------------------------

# Debian policy 5.6.1: lowercase letters, digits, + - . ; at least two characters; starts alphanumeric.
_DEBIAN_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _debian_package(name: str) -> str:
    if not _DEBIAN_NAME.match(name):
        raise ValueError(f"{name!r} is not a Debian package name (lowercase letters, digits, '+', '-', '.'; "
                         "at least two characters)")
    return name


def _relative_inside(value: str) -> str:
    """A path relative to its base folder that stays inside it (no absolute paths, no '..')."""
    path = PurePosixPath(value.replace("\\", "/"))
    if not value.strip():
        raise ValueError("must not be empty")
    if path.is_absolute() or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{value!r} must be a relative path")
    if ".." in path.parts:
        raise ValueError(f"{value!r} must stay inside its folder (no '..')")
    return value


def _container_path(value: str) -> str:
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"{value!r} must be an absolute path inside the container, like /data")
    if ".." in path.parts:
        raise ValueError(f"{value!r} must not contain '..'")
    if str(path) == "/":
        raise ValueError("cannot mount over the container's root '/'")
    return str(path)


def _shlex_command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command {value!r}: {exc}") from None
    return value


def _non_empty_command(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value or not value[0].strip():
        raise ValueError("the command is empty")
    return value


def _env_value(value: Any) -> Any:
    # TOML writers often give numbers (OMP_NUM_THREADS = 4); booleans are ambiguous ("1"? "true"?), so refused.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _resume_template(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad template {value!r}: {exc}") from None
    if "checkpoint" not in fields:
        raise ValueError(f"{value!r} must contain {{checkpoint}}, e.g. '--resume {{checkpoint}}'")
    unknown = sorted(set(fields) - {"checkpoint"})
    if unknown:
        raise ValueError(f"{value!r} uses unknown placeholders {unknown}; only {{checkpoint}} is filled in")
    try:
        shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"cannot split {value!r}: {exc}") from None
    return value


DebianPackage = Annotated[str, AfterValidator(_debian_package)]
RelativePath = Annotated[str, AfterValidator(_relative_inside)]
ContainerPath = Annotated[str, AfterValidator(_container_path)]
EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]
JobName = Annotated[str, Field(pattern=_JOB_NAME.pattern)]
Command = Annotated[
    tuple[str, ...],
    BeforeValidator(_shlex_command, json_schema_input_type=str | list[str]),
    AfterValidator(_non_empty_command),
]
GpuRequest = Annotated[
    Literal["auto", "none", "all"] | int,
    PlainValidator(parse_gpu_request),
    WithJsonSchema({"anyOf": [{"type": "string", "enum": ["auto", "none", "all"]}, {"type": "integer", "minimum": 1}]}),
]
DockerSize = Annotated[
    str,
    PlainValidator(normalize_size),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 1}]}),
]
EnvValue = Annotated[str, BeforeValidator(_env_value, json_schema_input_type=str | int | float)]


# --- the models ---------------------------------------------------------------------------------------


class Mount(ConfigValue):
    """A host folder (or file) mounted into the job's container."""

    source: str = Field(description="Host path, relative to the project folder (or absolute).", min_length=1)
    target: ContainerPath = Field(description="Absolute path inside the container, e.g. /data.")
    read_only: StrictBool = Field(True, description="Mount read-only (the default: datasets are inputs).")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return parse_mount(value)

    def host_path(self, project_dir: Path) -> Path:
        """The absolute host path (relative sources are taken from the project folder)."""
        return (Path(project_dir) / Path(self.source).expanduser()).resolve()


MountEntry = Annotated[Mount, BeforeValidator(lambda v: v, json_schema_input_type=Mount | str)]


def parse_mount(text: str) -> dict[str, Any]:
    """`SRC:DST[:ro|rw]` -> {source, target, read-only}. SRC may be a Windows path (C:\\data)."""
    rest, mode = text, None
    head, sep, tail = text.rpartition(":")
    if sep and tail in ("ro", "rw"):
        rest, mode = head, tail
    # The target is absolute, so it starts at the last ":/" (which skips a drive letter's colon).
    split = rest.rfind(":/")
    if split <= 0:
        raise ValueError(f"mount {text!r} must look like SRC:DST[:ro|rw], with DST absolute (e.g. data:/data:ro)")
    result: dict[str, Any] = {"source": rest[:split], "target": rest[split + 1 :]}
    if mode is not None:
        result["read-only"] = mode == "ro"
    return result


class MetricPattern(ConfigValue):
    """An extra regular expression for metrics this project's log lines print in its own shape."""

    pattern: str = Field(description="A Python regular expression. Either one group named `value` (then `name` "
                                     "is required), or a named group per metric, e.g. 'ppl=(?P<perplexity>[0-9.]+)'.")
    name: str | None = Field(None, description="Metric name, when the pattern has a single `value` group.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"pattern": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _compiles(self) -> "MetricPattern":
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern {self.pattern!r} does not compile: {exc}") from None
        groups = set(compiled.groupindex)
        if not groups:
            raise ValueError(f"pattern {self.pattern!r} has no named group; use (?P<value>...) with a name, "
                             "or (?P<metric_name>...)")
        if "value" in groups and not self.name:
            raise ValueError(f"pattern {self.pattern!r} has a `value` group, so it needs a `name`")
        return self

    @property
    def spec(self) -> str | tuple[str, str]:
        """The form envbuilder.run.metrics.parse_metrics takes as an extra pattern."""
        return (self.name, self.pattern) if self.name else self.pattern


MetricEntry = Annotated[MetricPattern, BeforeValidator(lambda v: v, json_schema_input_type=MetricPattern | str)]


DType = Literal["float32", "float16", "float64", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]


class InputSpec(ConfigValue):
    """One named model input: its shape (and dtype) for the ONNX check."""

    shape: tuple[Annotated[int, Field(ge=1)], ...] = Field(min_length=1, description="Dimensions, e.g. [1, 3, 32, 32].")
    dtype: DType = Field("float32", description="Element type.")

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"shape": value} if isinstance(value, (list, tuple)) else value


# The short forms ("SRC:DST[:ro]", a bare shape list) are part of the schema too, so that forms and
# editors built from `envbuilder schema` accept what the loader accepts.
InputEntry = Annotated[InputSpec, BeforeValidator(lambda v: v, json_schema_input_type=InputSpec | list[int])]


class Export(ConfigValue):
    """An ONNX file the job writes, and how to check it against the framework's outputs."""

    path: RelativePath = Field(description="The ONNX file, relative to the job's artifacts folder.")
    inputs: dict[str, InputEntry] = Field(default_factory=dict, description="Input name -> shape (and dtype); "
                                         "e.g. {input = [1, 3, 32, 32]}.")
    reference_inputs: RelativePath | None = Field(None, description="An .npz of inputs, relative to the artifacts folder.")
    reference_outputs: RelativePath | None = Field(None, description="An .npz of the expected outputs for "
                                                   "reference-inputs, relative to the artifacts folder.")
    rtol: float = Field(1e-3, ge=0, description="Relative tolerance when comparing outputs.")
    atol: float = Field(1e-5, ge=0, description="Absolute tolerance when comparing outputs.")

    @field_validator("path")
    @classmethod
    def _onnx(cls, value: str) -> str:
        if not value.lower().endswith(".onnx"):
            raise ValueError(f"{value!r} should be an .onnx file")
        return value

    @model_validator(mode="after")
    def _references(self) -> "Export":
        if self.reference_outputs and not self.reference_inputs:
            raise ValueError("reference-outputs needs reference-inputs (the inputs they were computed from)")
        return self


# Slurm's --time forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (sbatch(1), "-t, --time").
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_UNIT_TIME = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration_s(value: Any) -> int:
    """A time limit in seconds: an int (seconds, like `timeout`), `2h`, `1h30m`, `90m`, `1d`, or Slurm's
    `HH:MM:SS` / `D-HH:MM:SS` forms. Raises ValueError with a message for the user."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    text = str(value).strip().lower() if isinstance(value, str) else ""
    seconds = 0
    unit = _UNIT_TIME.match(text)
    if text and unit and any(unit.groups()):
        days, hours, minutes, secs = (int(g or 0) for g in unit.groups())
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    elif text.isdigit():
        seconds = int(text)
    elif ":" in text or "-" in text:
        match = _SLURM_TIME.match(text)
        if match:
            days, first, second, third = match.groups()
            parts = [int(first), int(second or 0), int(third or 0)]
            if days is not None:  # D-HH[:MM[:SS]]
                seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
            elif third is not None:  # HH:MM:SS
                seconds = parts[0] * 3600 + parts[1] * 60 + parts[2]
            else:  # MM:SS
                seconds = parts[0] * 60 + parts[1]
    if seconds <= 0:
        raise ValueError(f"{value!r} is not a time limit: write seconds, or e.g. '2h', '1h30m', '90m', '1d', "
                         "'02:00:00' or '1-00:00:00'")
    return seconds


def _gpu_count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


class JobResources(ConfigValue):
    """What the job asks of a cluster's scheduler (`envbuilder submit`); local runs use gpus and shm-size."""

    gpus: int | None = Field(None, ge=0, description="GPUs per job (0: none). Default: 1 when gpu-type is "
                             "given, else none.")
    gpu_type: str | None = Field(None, min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$",
                                 description="GPU model, e.g. H100 or A100: matched against compatibility.json's "
                                             "gpus table, and refused when the image has no kernels for it.")
    cpus: int | None = Field(None, ge=1, description="CPU cores for the job.")
    memory: DockerSize | None = Field(None, description="Memory for the job (Docker size, e.g. 32g).")
    time: int | None = Field(None, description="Time limit: seconds, or '2h', '90m', '1d', '02:00:00'. "
                             "Default: the job's timeout.", json_schema_extra={"anyOf": [
                                 {"type": "integer", "minimum": 1}, {"type": "string"}, {"type": "null"}]})

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: Any) -> Any:
        return _gpu_count(value)

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None else parse_duration_s(value)


ClusterEngine = Literal["slurm", "kubernetes", "skypilot"]


class ClusterDefaults(ConfigValue):
    """Where `envbuilder submit` sends the job when the command line does not say: a profile and its overrides."""

    profile: str | None = Field(None, min_length=1, description="A named profile from the user config "
                                "([clusters.NAME] in ~/.config/envbuilder/config.toml).")
    to: ClusterEngine | None = Field(None, description="The engine: slurm, kubernetes or skypilot.")
    partition: str | None = Field(None, min_length=1, description="Slurm partition.")
    account: str | None = Field(None, min_length=1, description="Slurm account.")
    namespace: str | None = Field(None, min_length=1, description="Kubernetes namespace.")


class Job(ConfigValue):
    """A command run in the project's image: training, evaluation, export."""

    command: Command = Field(description="The command: a string (split like a shell would) or a list of arguments.")
    description: str = Field("", description="One line saying what the job does.")
    mounts: tuple[MountEntry, ...] = Field((), description="Host folders to mount: 'SRC:DST[:ro|rw]' or "
                                      "{source, target, read-only}. Read-only unless rw/read-only = false.")
    artifacts: RelativePath = Field("artifacts", description="Folder, relative to the project, where the job "
                                    "writes checkpoints and exports.")
    env: dict[EnvName, EnvValue] = Field(default_factory=dict, description="Environment variables for the job.")
    gpus: GpuRequest = Field("auto", description="'auto' (all GPUs if the host has any), 'all', 'none', or a count.")
    shm_size: DockerSize = Field("2g", description="Shared memory for the container (Docker size, e.g. 2g). "
                                 "Docker's 64m default starves DataLoader workers.")
    workdir: ContainerPath | None = Field(None, description="Working directory in the container "
                                          "(default: the project folder).")
    metrics: tuple[MetricEntry, ...] = Field((), description="Extra metric patterns, for log lines the "
                                               "built-in parsers do not understand.")
    resume_arg: str | None = Field(None, description="Arguments that resume from a checkpoint, e.g. "
                                   "'--resume {checkpoint}'.")
    needs: tuple[str, ...] = Field((), description="Jobs that must run before this one.")
    timeout: float | None = Field(None, gt=0, description="Stop the job after this many seconds.")
    exports: tuple[Export, ...] = Field((), description="ONNX files the job writes, to verify after it.")
    resources: JobResources = Field(default_factory=JobResources, description="What the job asks of a "
                                    "cluster (envbuilder submit): gpus, gpu-type, cpus, memory, time.")
    cluster: ClusterDefaults = Field(default_factory=ClusterDefaults, description="Defaults for "
                                     "`envbuilder submit`: profile, engine, partition, account, namespace.")

    @field_validator("resume_arg")
    @classmethod
    def _check_resume(cls, value: str | None) -> str | None:
        return _resume_template(value)

    @field_validator("mounts")
    @classmethod
    def _distinct_targets(cls, mounts: tuple[Mount, ...]) -> tuple[Mount, ...]:
        seen: set[str] = set()
        for mount in mounts:
            if mount.target in seen:
                raise ValueError(f"two mounts target {mount.target}")
            seen.add(mount.target)
        return mounts

    def resume_args(self, checkpoint: str) -> tuple[str, ...]:
        """The extra arguments that resume from `checkpoint` (empty when the job has no resume-arg)."""
        if self.resume_arg is None:
            return ()
        return tuple(token.format(checkpoint=checkpoint) for token in shlex.split(self.resume_arg))

    def metric_specs(self) -> tuple[str | tuple[str, str], ...]:
        return tuple(pattern.spec for pattern in self.metrics)

    def artifacts_path(self, project_dir: Path) -> Path:
        return Path(project_dir) / self.artifacts

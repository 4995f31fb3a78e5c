"""The project's job config: `[tool.envbuilder]` in pyproject.toml, or a top-level envbuilder.toml.

Owns ProjectConfig (jobs, mounts, artifacts, exports, pipeline) and its staged loader:

    read_raw_config()  -> RawConfig        the TOML table as written; every key optional
    check_config()     -> [ConfigIssue]    every problem with its field path; mutates nothing
    load_config()      -> ProjectConfig    typed, frozen; raises `config-invalid` listing every issue

The models are also the contract host applications render forms from (`config_json_schema()`), so
keys are kebab-case in TOML and in the schema (snake_case is accepted too), and every field has a
title and description. Must not import docker, proc or the CLI.
"""

from __future__ import annotations

import difflib
import re
import shlex
import string
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Mapping

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from envbuilder.errors import EnvbuilderError
from envbuilder.values import Value

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT = "pyproject.toml"
ENVBUILDER_TOML = "envbuilder.toml"
TABLE_PREFIX = "tool.envbuilder"


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
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The syntax `docker run --shm-size` accepts (go-units RAMInBytes): a number, an optional unit, optional i/b.
_DOCKER_SIZE = re.compile(r"^\d+(\.\d+)?\s?([kmgtp])?i?b?$", re.IGNORECASE)
_PYTHON_VERSION = re.compile(r"^3\.\d+(\.\d+)?$")


def _debian_package(name: str) -> str:
    if not _DEBIAN_NAME.match(name):
        raise ValueError(f"{name!r} is not a Debian package name (lowercase letters, digits, '+', '-', '.'; "
                         "at least two characters)")
    return name


def _python_version(value: str | None) -> str | None:
    if value is None or _PYTHON_VERSION.match(value):
        return value
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(f"{value!r} is neither a Python version like 3.12 nor a specifier like '>=3.10,<3.13'") from None
    return value


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


def _gpus(value: Any) -> str | int:
    if isinstance(value, str) and value.lower() in ("auto", "none", "all"):
        return value.lower()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"expected 'auto', 'all', 'none' or a GPU count >= 1, got {value!r}")


def _shm_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return f"{value}b"
    if isinstance(value, str) and _DOCKER_SIZE.match(value.strip()):
        return value.strip().lower().replace(" ", "")
    raise ValueError(f"invalid size {value!r}: use Docker's size syntax, like 512m or 2g")


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
EnvName = Annotated[str, Field(pattern=_ENV_NAME.pattern)]
JobName = Annotated[str, Field(pattern=_JOB_NAME.pattern)]
Command = Annotated[
    tuple[str, ...],
    BeforeValidator(_shlex_command, json_schema_input_type=str | list[str]),
    AfterValidator(_non_empty_command),
]
GpuRequest = Annotated[
    Literal["auto", "none", "all"] | int,
    PlainValidator(_gpus),
    WithJsonSchema({"anyOf": [{"type": "string", "enum": ["auto", "none", "all"]}, {"type": "integer", "minimum": 1}]}),
]
DockerSize = Annotated[
    str,
    PlainValidator(_shm_size),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _DOCKER_SIZE.pattern}, {"type": "integer", "minimum": 1}]}),
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

    def docker_spec(self, project_dir: Path) -> str:
        """`SRC:DST[:ro]` as `docker run -v` takes it."""
        return f"{self.host_path(project_dir)}:{self.target}" + (":ro" if self.read_only else "")


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


class ProjectConfig(ConfigValue):
    """Everything [tool.envbuilder] (or envbuilder.toml) says. Every key is optional."""

    system_packages: tuple[DebianPackage, ...] = Field((), description="Debian packages to install in the image "
                                                       "(e.g. libgl1, ffmpeg).")
    python: str | None = Field(None, description="Python version (3.12) or specifier (>=3.10,<3.13) for the image.")
    jobs: dict[JobName, Job] = Field(default_factory=dict, description="Named jobs, e.g. train and export.")
    pipeline: tuple[str, ...] = Field((), description="Jobs `envbuilder pipeline` runs, in order. "
                                      "Default: every job, ordered by `needs`.")

    _source: str | None = PrivateAttr(default=None)
    _notes: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("python")
    @classmethod
    def _check_python(cls, value: str | None) -> str | None:
        return _python_version(value)

    @model_validator(mode="after")
    def _references(self) -> "ProjectConfig":
        issues = reference_issues({name: list(job.needs) for name, job in self.jobs.items()}, list(self.pipeline))
        if issues:
            path, message = issues[0]
            raise PydanticCustomError("config_reference", "{path}: {message}", {"path": path, "message": message})
        return self

    @property
    def source(self) -> str | None:
        """The file the config came from (pyproject.toml, envbuilder.toml), None when there was none."""
        return self._source

    @property
    def notes(self) -> tuple[str, ...]:
        """What the loader noticed (e.g. envbuilder.toml overriding [tool.envbuilder])."""
        return self._notes

    def job(self, name: str) -> Job:
        if name not in self.jobs:
            known = ", ".join(self.jobs) or "none"
            raise EnvbuilderError("job-not-found", f"no job named {name!r} (jobs: {known})",
                                  f"declare it under [{TABLE_PREFIX}.jobs.{name}] or in {ENVBUILDER_TOML}")
        return self.jobs[name]

    def pipeline_order(self) -> tuple[str, ...]:
        """The jobs a pipeline runs: `pipeline` as written, else every job in `needs` order (stable)."""
        if self.pipeline:
            return self.pipeline
        return _topological({name: list(job.needs) for name, job in self.jobs.items()})


# --- references between jobs --------------------------------------------------------------------------


def reference_issues(needs: Mapping[str, list[str]], pipeline: list[str]) -> list[tuple[str, str]]:
    """(relative field path, message) for unknown jobs, cycles and a pipeline that runs a job before its needs."""
    issues: list[tuple[str, str]] = []
    for name, wanted in needs.items():
        for index, other in enumerate(wanted):
            if other not in needs:
                issues.append((f"jobs.{_key(name)}.needs[{index}]", f"unknown job {other!r}{_suggest(other, needs)}"))
            elif other == name:
                issues.append((f"jobs.{_key(name)}.needs[{index}]", "a job cannot need itself"))
    cycle = _find_cycle(needs)
    if cycle:
        issues.append((f"jobs.{_key(cycle[0])}.needs", "jobs need each other in a cycle: " + " -> ".join(cycle)))
    seen: set[str] = set()
    for index, name in enumerate(pipeline):
        if name not in needs:
            issues.append((f"pipeline[{index}]", f"unknown job {name!r}{_suggest(name, needs)}"))
            continue
        if name in seen:
            issues.append((f"pipeline[{index}]", f"job {name!r} is listed twice"))
        missing = [other for other in needs[name] if other in needs and other in pipeline and other not in seen]
        for other in missing:
            issues.append((f"pipeline[{index}]", f"{name!r} needs {other!r}, which the pipeline runs later"))
        seen.add(name)
    return issues


def _find_cycle(needs: Mapping[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for other in needs.get(name, []):
            if other not in needs or other == name:
                continue
            if state.get(other) == 1:
                return path[path.index(other):] + [other]
            if other not in state:
                found = visit(other)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for name in needs:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def _topological(needs: Mapping[str, list[str]]) -> tuple[str, ...]:
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        done.add(name)
        for other in needs.get(name, []):
            if other in needs:
                visit(other)
        order.append(name)

    for name in needs:
        visit(name)
    return tuple(order)


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _key(name: Any) -> str:
    text = str(name)
    return text if re.match(r"^[A-Za-z0-9_-]+$", text) else '"' + text.replace('"', '\\"') + '"'


# --- staged loading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawConfig:
    """Stage 1: the table as written. `prefix` is how field paths start (tool.envbuilder, or nothing)."""

    file: str | None  # pyproject.toml, envbuilder.toml, or None when the project has no config
    prefix: str
    table: Mapping[str, Any]
    notes: tuple[str, ...] = ()


class ConfigIssue(Value):
    """One problem in the config: where (a field path as the user wrote it) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def read_raw_config(project_dir: Path) -> RawConfig:
    """Read [tool.envbuilder] from pyproject.toml and/or envbuilder.toml (which wins), without validating."""
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise EnvbuilderError("project-not-found", f"{project_dir} is not a folder", "pass the project's folder")
    pyproject_table: Any = None
    pyproject = project_dir / PYPROJECT
    if pyproject.is_file():
        tool = _read_toml(pyproject).get("tool", {})
        pyproject_table = tool.get("envbuilder") if isinstance(tool, dict) else None
    standalone = project_dir / ENVBUILDER_TOML
    if standalone.is_file():
        notes = ()
        if pyproject_table is not None:
            notes = (f"{ENVBUILDER_TOML} and [{TABLE_PREFIX}] in {PYPROJECT} both exist; using {ENVBUILDER_TOML} "
                     f"and ignoring [{TABLE_PREFIX}]",)
        return RawConfig(ENVBUILDER_TOML, "", _read_toml(standalone), notes)
    if pyproject_table is not None:
        return RawConfig(PYPROJECT, TABLE_PREFIX, pyproject_table)
    return RawConfig(None, "", {})


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise EnvbuilderError("config-invalid", f"{path.name} is not valid TOML: {exc}",
                              f"fix the TOML syntax in {path}", {"file": str(path)}) from None
    except OSError as exc:
        raise EnvbuilderError("config-invalid", f"cannot read {path.name}: {exc.strerror}", None,
                              {"file": str(path)}) from None


def check_config(raw: RawConfig) -> list[ConfigIssue]:
    """Stage 2: every problem in the table, each with its full field path. Mutates nothing."""
    return _validate(raw)[1]


def _validate(raw: RawConfig) -> tuple[ProjectConfig | None, list[ConfigIssue]]:
    def full(path: str) -> str:
        return f"{raw.prefix}.{path}" if raw.prefix and path else (path or raw.prefix)

    if not isinstance(raw.table, Mapping):
        return None, [ConfigIssue(path=raw.prefix, message="must be a table")]
    issues: list[ConfigIssue] = []
    # References are checked on the raw table so they are reported even when other fields are broken.
    jobs = raw.table.get("jobs")
    jobs = jobs if isinstance(jobs, Mapping) else {}
    needs = {str(name): _string_list(job.get("needs")) if isinstance(job, Mapping) else [] for name, job in jobs.items()}
    for path, message in reference_issues(needs, _string_list(raw.table.get("pipeline"))):
        issues.append(ConfigIssue(path=full(path), message=message))
    try:
        config = ProjectConfig.model_validate(dict(raw.table))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            if error["type"] == "config_reference":
                continue
            issues.append(ConfigIssue(path=full(_loc_path(error["loc"])), message=_message(error)))
        return None, issues
    if issues:
        return None, issues
    config._source = raw.file
    config._notes = tuple(raw.notes)
    return config, []


def _string_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, str)]
    return []


def _loc_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for an error in a dict key: the path already names it
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + _key(part)
    return text


def _message(error: Mapping[str, Any]) -> str:
    kind, loc = error["type"], error["loc"]
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        known = {f.alias or n for m in (ProjectConfig, Job, Mount, Export, InputSpec, MetricPattern)
                 for n, f in m.model_fields.items()}
        return f"unknown key {key!r}{_suggest(key, known)}"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if kind != "value_error" and "input" in error:
        message += f" (got {error['input']!r})"
    return message


def parse_config(table: Mapping[str, Any], *, file: str | None = ENVBUILDER_TOML, prefix: str = "") -> ProjectConfig:
    """Validate an already-read table (a host application's form, say) into a ProjectConfig."""
    return _typed(RawConfig(file, prefix, table))


def load_config(project_dir: Path) -> ProjectConfig:
    """Stage 3: the project's typed, frozen config; raises `config-invalid` listing every problem."""
    return _typed(read_raw_config(project_dir))


def _typed(raw: RawConfig) -> ProjectConfig:
    config, issues = _validate(raw)
    if config is not None:
        return config
    where = f"[{raw.prefix}] in {raw.file}" if raw.prefix else (raw.file or "the project config")
    count = f"{len(issues)} problem" + ("s" if len(issues) != 1 else "")
    message = f"{count} in {where}:\n" + "\n".join(f"  {issue}" for issue in issues)
    raise EnvbuilderError(
        "config-invalid",
        message,
        f"fix each field listed in {raw.file or ENVBUILDER_TOML}; `envbuilder schema` prints every key with its type",
        {"file": raw.file, "errors": [issue.model_dump() for issue in issues]},
    )


def config_json_schema() -> dict[str, Any]:
    """The JSON schema of the config table (kebab-case keys, titles, descriptions), for editors and forms."""
    schema = ProjectConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "envbuilder project config"
    schema["description"] = (f"The [{TABLE_PREFIX}] table of {PYPROJECT}, or the top level of {ENVBUILDER_TOML}.")
    return schema

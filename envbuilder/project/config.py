"""The project's job config: `[tool.envbuilder]` in pyproject.toml, or a top-level envbuilder.toml.

Owns ProjectConfig (system packages, jobs, pipeline) and its staged loader; the job models (mounts,
artifacts, exports) are envbuilder.project.jobs'. This is the one reader of [tool.envbuilder]: the project
spec takes its system packages from here, so `render`, `resolve` and `run` accept and refuse the same table.

    read_raw_config()  -> RawConfig        the TOML table as written; every key optional
    check_config()     -> [ConfigIssue]    every problem with its field path; mutates nothing
    typed_config()     -> ProjectConfig    typed, frozen; raises `config-invalid` listing every issue
    load_config()                          the three stages on a project folder

The models are also the contract host applications render forms from (`config_json_schema()`), so
keys are kebab-case in TOML and in the schema (snake_case is accepted too), and every field has a
title and description. Must not import docker, proc or the CLI.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, PrivateAttr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from envbuilder.defaults import KEYS as DEFAULT_KEYS, Layer, project_layer, table_issues as defaults_issues
from envbuilder.errors import ProjectError
from envbuilder.notices import Notice
from envbuilder.tomlparser import tomllib
from envbuilder.values import Value

PYPROJECT = "pyproject.toml"
ENVBUILDER_TOML = "envbuilder.toml"
TABLE_PREFIX = "tool.envbuilder"


from envbuilder.project.found import decode_utf8, too_deep
from envbuilder.project.jobs import ConfigValue, DebianPackage, Export, InputSpec, Job, JobName, MetricPattern, Mount


class ProjectConfig(ConfigValue):
    """Everything [tool.envbuilder] (or envbuilder.toml) says. Every key is optional."""

    system_packages: tuple[DebianPackage, ...] = Field((), description="Debian packages to install in the image "
                                                       "(e.g. libgl1, ffmpeg).")
    jobs: dict[JobName, Job] = Field(default_factory=dict, description="Named jobs, e.g. train and export.")
    pipeline: tuple[str, ...] = Field((), description="Jobs `envbuilder pipeline` runs, in order. "
                                      "Default: every job, ordered by `needs`.")

    defaults: dict[str, Any] = Field(
        default_factory=dict, description="Build defaults that flags, the environment and the user config "
        "override: base-image, index-url, extra-index-url, torch-index-url, find-links (envbuilder.defaults).",
        json_schema_extra={"additionalProperties": False, "properties": {
            key.name: {"description": key.help} for key in DEFAULT_KEYS if key.project}})

    _source: str | None = PrivateAttr(default=None)
    _notes: tuple[Notice, ...] = PrivateAttr(default=())

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
    def notes(self) -> tuple[Notice, ...]:
        """What the loader noticed (e.g. envbuilder.toml overriding [tool.envbuilder])."""
        return self._notes

    def job(self, name: str) -> Job:
        if name not in self.jobs:
            known = ", ".join(self.jobs) or "none"
            raise ProjectError("job-not-found", f"no job named {name!r} (jobs: {known})",
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
    notes: tuple[Notice, ...] = ()


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
        raise ProjectError("project-not-found", f"{project_dir} is not a folder", "pass the project's folder")
    pyproject_table: Any = None
    pyproject = _inside(project_dir, PYPROJECT)
    if pyproject is not None:
        tool = _read_toml(pyproject).get("tool", {})
        pyproject_table = tool.get("envbuilder") if isinstance(tool, dict) else None
    standalone = _inside(project_dir, ENVBUILDER_TOML)
    if standalone is not None:
        notes = ()
        if pyproject_table is not None:
            notes = (Notice("config-file-chosen", f"{ENVBUILDER_TOML} and [{TABLE_PREFIX}] in {PYPROJECT} both exist; "
                            f"using {ENVBUILDER_TOML} and ignoring [{TABLE_PREFIX}]"),)
        return RawConfig(ENVBUILDER_TOML, "", _read_toml(standalone), notes)
    if pyproject_table is not None:
        return RawConfig(PYPROJECT, TABLE_PREFIX, pyproject_table)
    return RawConfig(None, "", {})


def _inside(project_dir: Path, name: str) -> Path | None:
    """project_dir/name when it is a file inside the project: a project from a git URL is untrusted, and a
    symlink out of it must not make envbuilder read (and echo in errors) a file elsewhere on the host."""
    root = project_dir.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(decode_utf8(path.read_bytes(), path.name))
    except RecursionError:
        raise too_deep(path.name, "TOML") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProjectError("config-invalid", f"{path.name} is not valid TOML: {exc}",
                              f"fix the TOML syntax in {path}", {"file": str(path)}) from None
    except OSError as exc:
        raise ProjectError("config-invalid", f"cannot read {path.name}: {exc.strerror}", None,
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
    defaults = raw.table.get("defaults")
    if isinstance(defaults, Mapping):  # pydantic reports a non-table
        for key, message in defaults_issues(defaults, project=True):
            issues.append(ConfigIssue(path=full(f"defaults.{_key(key)}"), message=message))
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


def load_config(project_dir: Path) -> ProjectConfig:
    """Stages 1 to 3: the project's typed, frozen config; raises `config-invalid` listing every problem."""
    return typed_config(read_raw_config(project_dir))


def defaults_layer(project_dir: Path) -> tuple[Layer | None, str | None]:
    """The project's [defaults] as the lowest layer of envbuilder.defaults, and where it is written (the file
    and table, for `config show`); (None, None) when the project has no config."""
    config = load_config(project_dir)
    if config.source is None:
        return None, None
    table = f"[{TABLE_PREFIX}.defaults]" if config.source == PYPROJECT else "[defaults]"
    where = f"{project_dir.resolve() / config.source} {table}"
    return project_layer(config.defaults, project_dir, where), where


def typed_config(raw: RawConfig) -> ProjectConfig:
    """Stage 3: a read table (RawConfig: a file's, or a host application's form) as a ProjectConfig; raises
    `config-invalid` listing every problem check_config finds."""
    config, issues = _validate(raw)
    if config is not None:
        return config
    where = f"[{raw.prefix}] in {raw.file}" if raw.prefix else (raw.file or "the project config")
    count = f"{len(issues)} problem" + ("s" if len(issues) != 1 else "")
    message = f"{count} in {where}:\n" + "\n".join(f"  {issue}" for issue in issues)
    raise ProjectError(
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

"""A project's pipeline (e.g. train, then export): its jobs run in order in one image, up to the first failure.

Owns PipelineResult and run_pipeline. Each job becomes a RunSpec (envbuilder.run.spec) carried out by the
executor (envbuilder.run.container); this module only chooses the order, what is skipped and which job resumes.
Must not import docker, pydantic or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from envbuilder.errors import EnvbuilderError
from envbuilder.run.container import RunResult, execute_run
from envbuilder.run.spec import RunOptions, run_spec


@dataclass(frozen=True)
class PipelineResult:
    runs: tuple[RunResult, ...]
    skipped: tuple[str, ...] = ()
    not_run: tuple[str, ...] = ()  # after the first failure

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs) and not self.not_run

    def to_json(self) -> dict:
        return {"ok": self.ok, "runs": [r.to_json() for r in self.runs], "skipped": list(self.skipped),
                "not_run": list(self.not_run)}


def run_pipeline(
    image: str,
    project_dir: Path,
    config: Any,
    *,
    docker: Any,
    store: Any,
    skip: Iterable[str] = (),
    from_checkpoint: str | None = None,
    options: RunOptions | None = None,
    plan: Mapping[str, Any] | None = None,
    project_name: str | None = None,
    has_nvidia: Callable[[], bool],
    on_line: Callable[[str], None] | None = None,
    on_job: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run the config's pipeline in order in one image; stop at the first job that does not complete.

    from_checkpoint resumes the first job (not skipped) that has a resume-arg, e.g. train. options apply to
    every job (the pipeline command sets only GPUs and the network).
    """
    skip = tuple(skip)
    order = config.pipeline_order()
    unknown = [name for name in skip if name not in config.jobs]
    if unknown:
        config.job(unknown[0])  # raises job-not-found, naming the jobs there are
    todo = [name for name in order if name not in skip]
    resume_job = None
    if from_checkpoint:
        resume_job = next((name for name in todo if config.jobs[name].resume_arg), None)
        if resume_job is None:
            raise EnvbuilderError("resume-unsupported", "--from-checkpoint needs a job with a resume-arg in the pipeline",
                                  "add e.g. resume-arg = \"--resume {checkpoint}\" to the training job")
    skipped = tuple(n for n in order if n in skip)
    runs: list[RunResult] = []
    for index, name in enumerate(todo):
        if on_job:
            on_job(name)
        job_options = replace(options or RunOptions(), resume_from=from_checkpoint if name == resume_job else None)
        spec = run_spec(image, project_dir, job=config.jobs[name], job_name=name, options=job_options, plan=plan,
                        project_name=project_name, has_nvidia=has_nvidia)
        runs.append(execute_run(spec, docker=docker, store=store, on_line=on_line))
        if not runs[-1].ok:
            return PipelineResult(tuple(runs), skipped, tuple(todo[index + 1 :]))
    return PipelineResult(tuple(runs), skipped)

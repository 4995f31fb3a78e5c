"""A project's pipeline (e.g. train, then export): its jobs run in order in one image, up to the first failure.

Owns PipelineResult and run_pipeline. Each job becomes a RunSpec (envbuilder.run.spec) carried out by the
executor (envbuilder.run.container); this module only chooses the order, what is skipped and which job resumes.
Given an ArtifactsHome, each job's run is placed by envbuilder.run.artifacts (its own folder; a job that needs
another works in the folder of that job's run in this pipeline).
Must not import docker, pydantic or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envbuilder.errors import EnvbuilderError
from envbuilder.run.artifacts import ArtifactsHome, make_run_folder, place_run
from envbuilder.run.container import execute_run
from envbuilder.run.result import RunResult
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
    on_start: Callable[[Any], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    home: ArtifactsHome | None = None,
    git: tuple[str | None, bool | None] = (None, None),
) -> PipelineResult:
    """Run the config's pipeline in order in one image; stop at the first job that does not complete.

    from_checkpoint resumes the first job (not skipped) that has a resume-arg, e.g. train. options apply to
    every job (the pipeline command sets only GPUs and the network). With `home`, every run gets its own
    artifacts folder (envbuilder.run.artifacts) and records `git` (commit, dirty); without, the job's folder.
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
    folders: dict[str, Path] = {}  # job -> the artifacts folder of its run in this pipeline
    for index, name in enumerate(todo):
        if on_job:
            on_job(name)
        job = config.jobs[name]
        job_options = (options or RunOptions())._replace(resume_from=from_checkpoint if name == resume_job else None)
        placed = None
        if home is not None:
            shared = next((folders[n] for n in reversed(job.needs) if n in folders), None)
            placed = place_run(store, home, name, job, job_options, git=git, shared=shared)
            job_options = placed.options
        spec = run_spec(image, project_dir, job=job, job_name=name, options=job_options, plan=plan,
                        project_name=project_name, has_nvidia=has_nvidia)
        if placed is not None:
            make_run_folder(placed)
            spec = spec._replace(run_id=placed.run_id, origin=placed.origin)
        runs.append(execute_run(spec, docker=docker, store=store, on_line=on_line, on_progress=on_progress,
                                on_start=on_start))
        if runs[-1].artifacts_dir is not None:
            folders[name] = Path(runs[-1].artifacts_dir)
        if not runs[-1].ok:
            return PipelineResult(tuple(runs), skipped, tuple(todo[index + 1 :]))
    return PipelineResult(tuple(runs), skipped)

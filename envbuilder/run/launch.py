"""Running a project: from a project folder (or git URL) and an image to a finished run or pipeline.

Owns run_project, the steps `envbuilder run` and `envbuilder pipeline` take after parsing their arguments:
find the project folder, check the job exists and asks for nothing the user has not granted (a project from a
git URL is untrusted: envbuilder.run.trust), all before any build; get the image, then place each run (its
own artifacts folder, `--resume last`, the project's git commit: envbuilder.run.artifacts) and run the job, the
bare command or the pipeline. envbuilder.api.run_project is this function with the build step filled in
(api.build_project); `run --image` calls this module directly because envbuilder.api imports the resolver's
models (~0.15 s, more than the whole run path may cost).
Must not import pydantic, rich or the docker SDK at module level, nor envbuilder.api, build or the CLI: the
build step is a callable the caller passes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from envbuilder.errors import DockerError, ProjectError, UsageError
from envbuilder.imagelayout import LABEL_PLAN_HASH, LABEL_PROJECT
from envbuilder.run.artifacts import ArtifactsHome, make_run_folder, place_run
from envbuilder.run.container import execute_run, host_has_nvidia
from envbuilder.run.record import plan_summary
from envbuilder.run.spec import RunOptions, run_spec

if TYPE_CHECKING:
    from envbuilder.run.result import ProjectRun


class RunRequest(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """What to run from the project: one job (with options.args), a bare command, or the whole pipeline."""

    job: str | None = None
    command: tuple[str, ...] = ()
    pipeline: bool = False
    skip: tuple[str, ...] = ()  # pipeline jobs left out
    from_checkpoint: str | None = None  # resumes the pipeline's first job that has a resume-arg


class ProjectImage(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """The image a run uses, and what is known of how it was built."""

    ref: str
    plan: Mapping[str, Any] | None = None  # plan_summary(): torch, flavour, Python and plan hash, as the store keeps it
    project_name: str | None = None
    build: Any = None  # envbuilder.api.ProjectBuild when this run built (or found) the image from the project


BuildStep = Callable[[str, "str | None"], ProjectImage]  # (source, git commit or ref) -> the project's image


def run_project(
    source: str,
    what: RunRequest,
    *,
    settings: Any,
    ref: str | None = None,
    options: RunOptions | None = None,
    image: str | None = None,
    build: BuildStep | None = None,
    docker: Any = None,
    on_image: Callable[[ProjectImage], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    on_job: Callable[[str], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    has_nvidia: Callable[[], bool] = host_has_nvidia,
    on_start: Callable[[Any], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_pull: Callable[[str], None] | None = None,
) -> ProjectRun:
    """Run `what` from the project at `source` in `image` (used as it is), or in the image `build` makes.

    on_image is told the image before anything runs; on_job, each pipeline job as it starts; on_line gets
    the jobs' output; on_warning, what the user should know (a local job that mounts the Docker socket, a
    damaged run store moved aside); on_start, each run's record as soon as it is recorded (its id); on_progress,
    each state of a progress bar a job redraws before its line ends; on_pull, an --image that is pulled because it
    is not here. Raises EnvbuilderError before anything runs when the project, job or image
    is wrong, or when a remote project's jobs ask for what options.trust does not grant (untrusted-config).
    """
    if image is None and build is None:
        raise UsageError("usage", "no image to run in", "pass an image, or use envbuilder.api.run_project to build one")
    project_dir, commit = project_folder(source, ref, settings)
    config = job = None
    if what.pipeline or what.job:
        from envbuilder.project.config import load_config

        config = load_config(project_dir)
        if what.job:
            job = config.job(what.job)  # an unknown job fails now, not after a build
        elif not config.jobs:
            raise UsageError("usage", f"{source} declares no jobs",
                             "add [tool.envbuilder.jobs.NAME] with a command to its config")
        _check_trust(source, project_dir, config, what, options, on_warning)
    if docker is None:
        from envbuilder.docker.engine import Docker

        docker = Docker(settings.docker_binary)
    chosen = existing_image(docker, image, on_pull=on_pull) if image is not None else build(source, commit or ref)
    if on_image:
        on_image(chosen)
    from envbuilder.run.store import RunStore

    store = RunStore.from_settings(settings, on_notice=on_warning)
    home = ArtifactsHome.of(source, project_dir, settings)
    # A checkout from git is the fetched commit as it is; a local folder says what it has.
    git = (commit, False) if commit else _git_state(project_dir)
    if what.pipeline:
        from envbuilder.run.pipeline import run_pipeline

        result: Any = run_pipeline(
            chosen.ref, project_dir, config, docker=docker, store=store, skip=what.skip,
            from_checkpoint=what.from_checkpoint, options=options, plan=chosen.plan,
            project_name=chosen.project_name, has_nvidia=has_nvidia, on_line=on_line, on_job=on_job,
            on_start=on_start, on_progress=on_progress,
            home=home, git=git)
    else:
        placed = place_run(store, home, what.job, job, options, git=git)
        spec = run_spec(chosen.ref, project_dir, job=job, job_name=what.job, command=what.command,
                        options=placed.options, plan=chosen.plan, project_name=chosen.project_name,
                        has_nvidia=has_nvidia)
        make_run_folder(placed)
        result = execute_run(spec._replace(run_id=placed.run_id, origin=placed.origin), docker=docker, store=store,
                             on_line=on_line, on_progress=on_progress,
                             on_start=on_start)
    from envbuilder.run.result import ProjectRun  # loaded by then: the executor imports it while the job runs

    return ProjectRun(chosen, result)


def _git_state(project_dir: Path) -> tuple[str | None, bool | None]:
    from envbuilder.run.gitstate import git_state

    return git_state(project_dir)


def _check_trust(source: str, project_dir: Path, config: Any, what: RunRequest, options: RunOptions | None,
                 on_warning: Callable[[str], None] | None) -> None:
    """Refuse what a remote project's jobs may not do without a grant; warn about a local job's risky mounts."""
    from envbuilder.project.gitsource import looks_like_git_url
    from envbuilder.run.trust import Trust, check_jobs

    names = [what.job] if what.job else [n for n in config.pipeline_order() if n not in what.skip]
    trust = Trust(remote=looks_like_git_url(source), grants=(options or RunOptions()).trust)
    for warning in check_jobs({n: config.jobs[n] for n in names if n in config.jobs}, project_dir, trust,
                              source=source):
        if on_warning:
            on_warning(warning)


def project_folder(source: str, ref: str | None, settings: Any) -> tuple[Path, str | None]:
    """(the folder the project is read from and mounted, the commit when it came from git)."""
    if ref is None and Path(source).is_dir():
        return Path(source), None  # the hot path: no git, and no pydantic models to import
    from envbuilder.project.gitsource import fetch_project, looks_like_git_url

    if ref is None and not looks_like_git_url(source):
        raise ProjectError("project-not-found", f"no such folder: {source}", "pass the project folder or a git URL")
    fetched = fetch_project(source, ref, settings)
    return Path(fetched.path), fetched.commit


def existing_image(docker: Any, ref: str, *, on_pull: Callable[[str], None] | None = None) -> ProjectImage:
    """An image given by name, used as it is (pulled first when it is not here, on_pull told so); its labels
    say how it was built when envbuilder built it. A failed pull raises the engine's diagnosed error."""
    info = docker.image_inspect(ref)
    if info is None:
        if on_pull:
            on_pull(ref)
        docker.pull(ref, what=f"pulling {ref} (not available locally)")
        info = docker.image_inspect(ref)
    if info is None:
        raise DockerError("image-not-found", f"image {ref} is not available locally, even after a pull",
                          "build it with `envbuilder build`, or drop --image to build it now")
    labels = (info.get("Config") or {}).get("Labels") or {}
    plan = None
    if labels.get(LABEL_PLAN_HASH):
        plan = plan_summary(image_labels=labels)
    return ProjectImage(ref, plan, labels.get(LABEL_PROJECT) or None)


"""The Python API that host applications embed: each function is one step a CLI command takes.

detect -> inspect -> resolve is composed here so that the CLI, `build`, `run` and GUI plugins share
exactly the same path from a project to a Plan. Heavy modules are imported inside functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.settings import Settings

# Values are imported for annotations only: `envbuilder run --image` goes through run_project and must not load
# the resolver's pydantic models (about 0.15 s) that plan_project and build_project need.
if TYPE_CHECKING:
    from envbuilder.host.types import HostInfo
    from envbuilder.project.spec import ProjectSpec
    from envbuilder.resolve.matrix import Matrix
    from envbuilder.resolve.plan import Plan, ResolveRequest, Target, TargetFlags
    from envbuilder.build.image import BuiltImage
    from envbuilder.run.launch import ProjectImage, ProjectRun, RunRequest
    from envbuilder.run.spec import RunOptions
    from envbuilder.docker.engine import Engine
    from envbuilder.render.network import NetworkOptions


def load_settings_matrix(settings: Settings) -> Matrix:
    """The installed matrix (from `compat update`) when there is one, else the packaged one."""
    from envbuilder.resolve.matrix import load_matrix

    return load_matrix(override=settings.matrix_override)


def detect_for(flags: TargetFlags) -> HostInfo | None:
    """Detect the host unless the flags declare the whole target (a GPU-less CI resolving for a cloud GPU)."""
    from envbuilder.host.probes import detect_host

    if flags.gpu is not None and flags.os is not None and flags.arch is not None:
        return None
    return detect_host()


def read_project(source: str, *, ref: str | None = None, settings: Settings) -> ProjectSpec:
    from envbuilder.project.gitsource import inspect_source

    return inspect_source(source, ref, settings)


def plan_project(
    source: str,
    *,
    ref: str | None = None,
    flags: TargetFlags | None = None,
    request: ResolveRequest | None = None,
    settings: Settings,
    host: HostInfo | None = None,
    matrix: Matrix | None = None,
    torch_index: str | None = None,
    index_required: bool = True,
) -> tuple[ProjectSpec, Plan]:
    """Read the project, detect (or take) the target, and resolve its plan. Raises EnvbuilderError.

    torch_index: a mirror that replaces the flavour's PyTorch index (--torch-index-url). Its torch-family
    pages are read first, so that the plan only picks builds the mirror really serves. When it cannot be read,
    index_required decides between an error (build, run) and a warning in the plan (render, resolve).
    """
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags
    from envbuilder.resolve.resolver import resolve
    from envbuilder.resolve.target import target_for

    flags = TargetFlags() if flags is None else flags
    request = ResolveRequest() if request is None else request
    project = read_project(source, ref=ref, settings=settings)
    matrix = matrix or load_settings_matrix(settings)
    if host is None:
        host = detect_for(flags)
    target: Target = target_for(host, flags, matrix)
    available = None
    unread = None
    if torch_index:
        from envbuilder.errors import EnvbuilderError
        from envbuilder.index.snapshot import snapshot_index

        try:
            available = snapshot_index(torch_index)
        except EnvbuilderError as exc:
            # A build needs the mirror anyway, so it fails here, early; a render may be for another network.
            if index_required:
                raise
            unread = f"{exc.message}; resolved from the matrix alone, so the mirror may not serve this build"
    plan = resolve(project, target, matrix, request, available)
    if unread:
        plan = plan.model_copy(update={"warnings": plan.warnings + (unread,)})
    return project, plan


@dataclass(frozen=True)
class ProjectBuild:
    """What build_project did: the project it read, the plan it resolved, and the image it built or found."""

    project: ProjectSpec
    plan: Plan
    image: BuiltImage

    def to_json(self) -> dict:
        return {**self.image.to_json(), "python": self.plan.python, "torch": self.plan.torch.local,
                "flavor": self.plan.torch.flavor}


def build_project(
    source: str,
    *,
    ref: str | None = None,
    flags: TargetFlags | None = None,
    request: ResolveRequest | None = None,
    network: NetworkOptions | None = None,
    settings: Settings,
    tag: str | None = None,
    dockerfile: Path | None = None,
    netrc: Path | None = None,
    lock: Path | None = None,
    no_cache: bool = False,
    on_line: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> ProjectBuild:
    """Read, resolve and build SOURCE's image, or find it: an unchanged project returns its image at once.

    The one path from a project to an image, for `envbuilder build`, `run` and host applications.
    network: the network flags (mirrors, find-links, CA bundle, proxies, base image); dockerfile: an edited
    Dockerfile to build instead of rendering one; lock: a requirements lock to install exactly, by hash.
    """
    from envbuilder.build.image import build_image
    from envbuilder.render.network import NetworkOptions
    from envbuilder.resolve.plan import ResolveRequest

    network = network or NetworkOptions()
    request = ResolveRequest() if request is None else request
    if engine is None:
        from envbuilder.docker.engine import Docker

        engine = Docker(settings.docker_binary)
    request = pin_base_python(request, network, engine)
    spec, plan = plan_project(source, ref=ref, flags=flags, request=request, settings=settings,
                              torch_index=network.torch_index_url)
    locked = None
    if lock is not None:
        from envbuilder.build.lockfile import load_lock

        locked = load_lock(lock, plan)
    built = build_image(
        plan, network.render_options(netrc=netrc is not None), project_dir=Path(spec.source.path),
        settings=settings, docker=engine, tag=tag, dockerfile_override=dockerfile, network=network.network,
        proxies=network.proxy_env(), ca_cert=Path(network.ca_cert) if network.ca_cert else None, netrc=netrc,
        on_line=on_line, force=no_cache, locked=locked,
    )
    return ProjectBuild(spec, plan, built)


def pin_base_python(request: ResolveRequest, network: NetworkOptions, engine: Engine) -> ResolveRequest:
    """With a base image and no Python asked for, the base decides the interpreter: resolve for it rather
    than fail the image's Python check mid-build. A Python the user asked for is kept."""
    if not network.base_image or request.python is not None:
        return request
    from envbuilder.build.base import base_python

    return request.model_copy(update={"python": base_python(engine, network.base_image)})


def run_project(
    source: str,
    what: RunRequest,
    *,
    ref: str | None = None,
    options: RunOptions | None = None,
    image: str | None = None,
    flags: TargetFlags | None = None,
    request: ResolveRequest | None = None,
    network: NetworkOptions | None = None,
    settings: Settings,
    engine: Engine | None = None,
    on_build_line: Callable[[str], None] | None = None,
    on_image: Callable[[ProjectImage], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    on_job: Callable[[str], None] | None = None,
) -> ProjectRun:
    """Run a job, a bare command or the pipeline (`what`) from SOURCE, in `image` as it is or in the project's
    image, built by build_project when it is missing or stale. The one path for `envbuilder run`, `pipeline`
    and host applications; flags, request and network only matter when the image is built.
    on_image is told the image (and, when built here, its ProjectBuild) before anything runs.
    """
    from envbuilder.run.launch import ProjectImage, run_project as run_in_image
    from envbuilder.run.record import plan_summary

    if engine is None:
        from envbuilder.docker.engine import Docker

        engine = Docker(settings.docker_binary)

    def build(project_source: str, commit: str | None) -> ProjectImage:
        made = build_project(project_source, ref=commit, flags=flags, request=request, network=network,
                             settings=settings, on_line=on_build_line, engine=engine)
        return ProjectImage(made.image.image, plan_summary(made.plan, plan_hash=made.image.plan_hash),
                            made.plan.project_name, made)

    return run_in_image(source, what, settings=settings, ref=ref, options=options, image=image,
                        build=build, docker=engine, on_image=on_image, on_line=on_line, on_job=on_job)

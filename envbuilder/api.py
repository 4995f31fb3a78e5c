"""The Python API that host applications embed: each function is one step a CLI command takes.

detect -> inspect -> resolve is composed here so that the CLI, `build`, `run` and GUI plugins share
exactly the same path from a project to a Plan. Heavy modules are imported inside functions.
"""

from __future__ import annotations

from envbuilder.host.probes import HostInfo
from envbuilder.resolve.matrix import Matrix, load_matrix
from envbuilder.resolve.plan import Plan, ResolveRequest, Target, TargetFlags
from envbuilder.project.inspect import ProjectSpec
from envbuilder.settings import Settings


def load_settings_matrix(settings: Settings) -> Matrix:
    """The installed matrix (from `compat update`) when there is one, else the packaged one."""
    return load_matrix(override=settings.matrix_override)


def detect_for(flags: TargetFlags, settings: Settings | None = None) -> HostInfo | None:
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
    flags: TargetFlags = TargetFlags(),
    request: ResolveRequest = ResolveRequest(),
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
    from envbuilder.resolve.resolver import resolve, target_for

    project = read_project(source, ref=ref, settings=settings)
    matrix = matrix or load_settings_matrix(settings)
    if host is None:
        host = detect_for(flags, settings)
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

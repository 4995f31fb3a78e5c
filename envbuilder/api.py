"""The Python API that host applications embed: each function is one step a CLI command takes.

detect -> inspect -> resolve is composed here so that the CLI, `build`, `run` and GUI plugins share
exactly the same path from a project to a Plan. Heavy modules are imported inside functions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuilder.settings import Settings

# Values are imported for annotations only: `envbuilder run --image` goes through run_project and must not load
# the resolver's pydantic models (about 0.15 s) that plan_project and build_project need.
if TYPE_CHECKING:
    from envbuilder.defaults import EffectiveDefaults, Layer
    from envbuilder.host.types import HostInfo
    from envbuilder.notices import Notice
    from envbuilder.project.spec import ProjectSpec
    from envbuilder.resolve.matrix import Matrix
    from envbuilder.resolve.plan import Plan, ResolveRequest, Target, TargetFlags
    from envbuilder.resolve.python_fit import PythonFit
    from envbuilder.resolve.served import IndexSnapshot
    from envbuilder.build.image import BuiltImage
    from envbuilder.build.images import ImageEntry, PruneResult
    from envbuilder.build.bundle import WrittenBundle
    from envbuilder.run.launch import ProjectImage, RunRequest
    from envbuilder.run.result import ProjectRun
    from envbuilder.run.runrecord import RunRecord
    from envbuilder.run.spec import RunOptions
    from envbuilder.cluster.submit import SubmitRequest, Submission
    from envbuilder.docker.engine import Engine
    from envbuilder.render.network import NetworkOptions
    from envbuilder.build.labels import ImageFit
    from envbuilder.build.registry import RegistryOptions


def load_settings_matrix(settings: Settings) -> Matrix:
    """The installed matrix (from `compat update`) when there is one, else the packaged one."""
    from envbuilder.resolve.matrix import load_matrix

    return load_matrix(override=settings.matrix_override)


def declares_target(flags: TargetFlags) -> bool:
    """Whether the flags declare the whole target, so that nothing about the host is probed."""
    return flags.gpu is not None and flags.os is not None and flags.arch is not None


def detect_for(flags: TargetFlags) -> HostInfo | None:
    """Detect the host unless the flags declare the whole target (a GPU-less CI resolving for a cloud GPU)."""
    if declares_target(flags):
        return None
    from envbuilder.host.probes import detect_host  # only when probing: it loads subprocess and the parsers

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
    network: NetworkOptions | None = None,
    project: ProjectSpec | None = None,
    netrc: Path | None = None,
) -> tuple[ProjectSpec, Plan]:
    """Read the project, detect (or take) the target, and resolve its plan. Raises EnvbuilderError.

    torch_index: a mirror that replaces the flavour's PyTorch index (--torch-index-url; network's when not
    given). Its torch-family pages are read first, so that the plan only picks builds the mirror really serves.
    When it cannot be read, index_required decides between an error (build, run) and a warning in the plan.
    Without a mirror, torch wheels in network.find_links folders limit the plan the same way (_served_torch).
    Then the project's whole dependency set is checked with uv on the Pythons the chosen torch build allows
    (check_python_fit), from network's indexes (PyPI by default), unless request.offline: the plan takes the
    highest Python on which everything installs. Offline or with no index reachable, the matrix alone decides,
    and the plan warns that the other dependencies were not checked.
    network is completed from the project's [defaults] (project_network); `project`: SOURCE already read.
    Credentials in torch_index are used to read it and left out of the plan; without them, the mirror's login
    comes from `netrc` (a build's --netrc file), else $NETRC or ~/.netrc.
    """
    from envbuilder.resolve.plan import ResolveRequest, TargetFlags
    from envbuilder.resolve.resolver import resolve
    from envbuilder.resolve.target import target_for

    flags = TargetFlags() if flags is None else flags
    request = ResolveRequest() if request is None else request
    project = project if project is not None else read_project(source, ref=ref, settings=settings)
    network = project_network(project, network)
    torch_index = torch_index or network.torch_index_url
    matrix = matrix or load_settings_matrix(settings)
    if host is None:
        host = detect_for(flags)
    target: Target = target_for(host, flags, matrix)
    available, unread = _served_torch(torch_index, network.find_links, index_required, netrc)
    if torch_index:  # the plan (its JSON, labels, records) names the mirror without credentials
        from envbuilder.redact import split_credentials

        torch_index = split_credentials(torch_index)[0]
    plan = resolve(project, target, matrix, request, available, torch_index_url=torch_index)
    fit = check_python_fit(project, plan, matrix, available, settings=settings, network=network)
    if fit is not None:
        # A pure second pass: the same choice of torch, on the Python the check found (or a conflict).
        plan = resolve(project, target, matrix, request, available, torch_index_url=torch_index, python_fit=fit)
    if unread:
        plan = plan.model_copy(update={"warnings": plan.warnings + (unread,)})
    return project, plan


def _served_torch(torch_index: str | None, find_links: tuple[str, ...], index_required: bool,
                  netrc: Path | None = None) -> tuple[IndexSnapshot | None, Notice | None]:
    """What the build will install torch from, read before resolving so that the plan only picks what is served:
    the --torch-index-url mirror, else the torch wheels of the --find-links folders (a wheelhouse without the
    plan's Python is refused now, naming the Pythons it has, not mid-build). (snapshot, the notice of a mirror
    that could not be read when index_required is False)."""
    from envbuilder.errors import EnvbuilderError
    from envbuilder.index.snapshot import snapshot_index, snapshot_wheelhouse
    from envbuilder.notices import Notice

    if not torch_index:
        return snapshot_wheelhouse(find_links), None
    try:
        return snapshot_index(torch_index, netrc_file=netrc), None
    except EnvbuilderError as exc:
        # A build needs the mirror anyway, so it fails here, early; a render may be for another network.
        if index_required:
            raise
        return None, Notice("mirror-unread", f"{exc.message}; resolved from the matrix alone, so the mirror may not "
                            "serve this build", exc.hint)


def project_network(project: ProjectSpec, network: NetworkOptions | None) -> NetworkOptions:
    """`network` (flags over the environment over the user config) with the project's own [defaults] filling
    what it leaves unset: the lowest layer of envbuilder.defaults, merged by the same rule."""
    from envbuilder.defaults import given_layer, merge
    from envbuilder.project.config import defaults_layer
    from envbuilder.render.network import NetworkOptions

    network = network if network is not None else NetworkOptions()
    layer, _ = defaults_layer(Path(project.source.path))
    if layer is None:
        return network
    return NetworkOptions(**merge([layer, given_layer(network.model_dump())]).fields())


def effective_defaults(source: str | None, layers: Iterable[Layer | None], *, ref: str | None = None,
                       settings: Settings) -> EffectiveDefaults:
    """The defaults a command run on SOURCE gets: its project's [defaults] under `layers` (the user config's, the
    environment's and the flags', as envbuilder.cli.netopts reads them). A git URL is fetched (its project
    layer counts too); SOURCE None leaves the project layer out."""
    from envbuilder.defaults import EffectiveDefaults, merge

    project, where = None, None
    if source is not None:
        from envbuilder.project.config import defaults_layer
        from envbuilder.run.launch import project_folder

        project, where = defaults_layer(project_folder(source, ref, settings)[0])
    paths = tuple(settings.config_paths())
    found = next((path for path in paths if path.is_file()), None)
    return EffectiveDefaults(merge([project, *layers]), where, found, paths)


def check_python_fit(project: ProjectSpec, plan: Plan, matrix: Matrix, available: IndexSnapshot | None = None, *,
                     settings: Settings, network: NetworkOptions | None = None) -> PythonFit | None:
    """Whether the project's whole dependency set installs alongside the plan's torch, on which Python (highest
    first, stopping at the first that installs). None when there is nothing to check besides the torch family.
    Answers are cached under the data dir (envbuilder.index.installability); offline gives a warning only."""
    from envbuilder.index.installability import check_installability
    from envbuilder.resolve.python_fit import InstallReport, fit_from_report
    from envbuilder.resolve.resolver import install_requests, plan_pins

    requests = install_requests(project, plan, matrix, available,
                                index_url=network.index_url if network is not None else None,
                                extra_index_urls=network.extra_index_urls if network is not None else (),
                                find_links=network.find_links if network is not None else ())
    if not requests:
        return None
    probes, seconds = [], 0.0
    for install in requests:  # one request per run of Pythons whose requirement set is the same
        report = check_installability(install, settings, offline=plan.request.offline)
        if not report.checked:
            return fit_from_report(report)
        probes += report.probes
        seconds += report.seconds
        if probes and probes[-1].installs:
            break
    return fit_from_report(InstallReport(True, report.platform, tuple(probes), seconds=seconds), plan_pins(plan))


class ProjectBuild(NamedTuple):  # not a dataclass: `run --image` imports this module (envbuilder.run's docstring)
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
    registry: RegistryOptions | None = None,
    cache_from: tuple[str, ...] = (),
    cache_to: str | None = None,
    platform: str | None = None,
    extra_tags: tuple[str, ...] = (),
) -> ProjectBuild:
    """Read, resolve and build SOURCE's image, or find it: an unchanged project returns its image at once.

    The one path from a project to an image, for `envbuilder build`, `run` and host applications.
    network: the network flags (mirrors, find-links, CA bundle, proxies, base image); dockerfile: an edited
    Dockerfile to build instead of rendering one; lock: a requirements lock to install exactly, by hash.
    registry: where to reuse the image from (the content-addressed tag) and push it; None: the `registry`
    default (envbuilder.defaults), for reuse only. cache_from/cache_to: registry layer caches; platform: "linux/arm64" (buildx).
    """
    from envbuilder.build.image import build_image, credentials_netrc
    from envbuilder.build.inputs import check_image_tag
    from envbuilder.resolve.plan import ResolveRequest

    for name in (tag, *extra_tags):  # before resolving, which may ask an index: a bad tag is known at once
        check_image_tag(name)
    from envbuilder.build.base import pin_base_python
    from envbuilder.build.labels import build_labels
    from envbuilder.build.spec import BuildRequestOptions

    engine = engine or _engine_for(settings)
    spec = read_project(source, ref=ref, settings=settings)
    network = project_network(spec, network)  # the base image (and the registry) may be the project's default
    request = pin_base_python(ResolveRequest() if request is None else request, network.base_image, engine)
    spec, plan = plan_project(source, ref=ref, flags=flags, request=request, settings=settings, network=network,
                              project=spec, netrc=netrc)
    locked = None
    if lock is not None:
        from envbuilder.build.lockfile import load_lock

        locked = load_lock(lock, plan)
    if registry is None and network.registry:
        from envbuilder.build.registry import RegistryOptions

        registry = RegistryOptions(network.registry, push=False)
    extra = BuildRequestOptions(labels=build_labels(plan, Path(spec.source.path), load_settings_matrix(settings)),
                                cache_from=tuple(cache_from), cache_to=cache_to, platform=platform,
                                extra_tags=tuple(extra_tags))
    # Credentials in the URL options reach the build as its netrc secret only (a temporary 0600 file).
    with credentials_netrc(network.credentials(), netrc) as build_netrc:
        built = build_image(
            plan, network.render_options(netrc=netrc is not None), project_dir=Path(spec.source.path),
            settings=settings, docker=engine, tag=tag, dockerfile_override=dockerfile, network=network.network,
            proxies=network.proxy_env(), ca_cert=Path(network.ca_cert) if network.ca_cert else None,
            netrc=build_netrc, on_line=on_line, force=no_cache, locked=locked, registry=registry, extra=extra,
        )
    return ProjectBuild(spec, plan, built)


def login_registry(registry: str, username: str, password: str, *, ca_cert: Path | None = None,
                   settings: Settings, engine: Engine | None = None) -> str:
    """`envbuilder login`: store the registry credentials in Docker's config (docker login), trusting ca_cert for
    the registry first when given. The docker CLI's answer."""
    from envbuilder.build.registry import login

    return login(engine or _engine_for(settings), registry, username, password, ca_cert=ca_cert)


def inspect_image(ref: str, *, settings: Settings, engine: Engine | None = None, flags: TargetFlags | None = None,
                  host: HostInfo | None = None, pull: bool = False) -> ImageFit:
    """`envbuilder image inspect`: the image's labels and whether it runs on this host's GPU and driver (or on the
    target the flags declare). pull: fetch it first when it is not here."""
    from envbuilder.build.labels import image_fit
    from envbuilder.errors import DockerError
    from envbuilder.resolve.plan import TargetFlags
    from envbuilder.resolve.target import target_for

    engine = engine or _engine_for(settings)
    info = engine.image_inspect(ref)
    if info is None and pull:
        engine.pull(ref, what=f"inspecting {ref}")
        info = engine.image_inspect(ref)
    if info is None:
        raise DockerError("image-not-found", f"image {ref} is not available locally",
                          "pull it first, or pass --pull")
    flags = TargetFlags() if flags is None else flags
    matrix = load_settings_matrix(settings)
    target = target_for(host if host is not None else detect_for(flags), flags, matrix)
    return image_fit(ref, info, target, matrix)


def project_image(made: ProjectBuild) -> ProjectImage:
    """What a run (local or on a cluster) keeps of the image build_project made or found."""
    from envbuilder.run.launch import ProjectImage
    from envbuilder.run.record import plan_summary

    return ProjectImage(made.image.image, plan_summary(made.plan, plan_hash=made.image.plan_hash),
                        made.plan.project_name, made)


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
    on_warning: Callable[[str], None] | None = None,
    on_start: Callable[[RunRecord], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_pull: Callable[[str], None] | None = None,
) -> ProjectRun:
    """Run a job, a bare command or the pipeline (`what`) from SOURCE, in `image` as it is or in the project's
    image, built by build_project when it is missing or stale. The one path for `envbuilder run`, `pipeline`
    and host applications; flags, request and network only matter when the image is built.
    on_image is told the image (and, when built here, its ProjectBuild) before anything runs; on_start, each
    run's record once it is recorded; on_progress, a job's progress bar as it is redrawn; on_pull, an `image`
    pulled because it is not here (envbuilder.run.launch.run_project).
    """
    from envbuilder.run.launch import run_project as run_in_image

    if image is not None and image.startswith("@"):
        from envbuilder.build.registry import expand_image_ref

        image = expand_image_ref(image, network.registry if network is not None else _machine_registry(settings))
    engine = engine or _engine_for(settings)
    build = _image_builder(flags=flags, request=request, network=network, settings=settings, engine=engine,
                           on_line=on_build_line)
    return run_in_image(source, what, settings=settings, ref=ref, options=options, image=image,
                        build=lambda project_source, commit: build(project_source, commit, flags), docker=engine,
                        on_image=on_image, on_line=on_line, on_job=on_job, on_warning=on_warning, on_start=on_start, on_progress=on_progress, on_pull=on_pull)


def submit_project(
    source: str,
    what: SubmitRequest,
    *,
    ref: str | None = None,
    flags: TargetFlags | None = None,
    request: ResolveRequest | None = None,
    network: NetworkOptions | None = None,
    settings: Settings,
    engine: Engine | None = None,
    on_build_line: Callable[[str], None] | None = None,
    on_image: Callable[[ProjectImage], None] | None = None,
) -> Submission:
    """Submit a job or command (`what`) from SOURCE to a cluster (envbuilder.cluster.submit.submit_job), in
    `what.image` or in the project's image built for the cluster's GPU: declared `flags` win, else the target
    the profile and the job's resources give (the user's machine may have no GPU)."""
    from envbuilder.cluster.submit import submit_job

    engine = engine or _engine_for(settings)
    build = _image_builder(flags=None, request=request, network=network, settings=settings, engine=engine,
                           on_line=on_build_line)

    def build_for_cluster(project_source: str, commit: str | None, cluster_flags: TargetFlags) -> ProjectImage:
        return build(project_source, commit, flags if flags is not None and not flags.empty else cluster_flags)

    return submit_job(source, what, settings=settings, matrix=load_settings_matrix(settings), ref=ref,
                      build=build_for_cluster, docker=engine, on_image=on_image)


class ProjectBundle(NamedTuple):  # not a dataclass, as ProjectBuild
    """What bundle_project did: the build it bundled (built here or found) and the bundle file it wrote."""

    build: ProjectBuild
    bundle: WrittenBundle

    def to_json(self) -> dict:
        return {**self.bundle.to_json(), "image": self.build.image.image, "plan_hash": self.build.image.plan_hash,
                "cached": self.build.image.cached, "torch": self.build.plan.torch.local, "python": self.build.plan.python}


def bundle_project(
    source: str,
    *,
    output: Path,
    ref: str | None = None,
    flags: TargetFlags | None = None,
    request: ResolveRequest | None = None,
    network: NetworkOptions | None = None,
    settings: Settings,
    dockerfile: Path | None = None,
    netrc: Path | None = None,
    lock: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    engine: Engine | None = None,
) -> ProjectBundle:
    """Build SOURCE's image as build_project does (or find it), then write the air-gap bundle of it to `output`:
    the image and its local base, the lock, the wheelhouse and the manifest (see envbuilder.build.bundle)."""
    from envbuilder.build.bundle import write_bundle

    engine = engine or _engine_for(settings)
    made = build_project(source, ref=ref, flags=flags, request=request, network=network, settings=settings,
                         dockerfile=dockerfile, netrc=netrc, lock=lock, on_line=on_line, engine=engine)
    network = project_network(made.project, network)
    written = write_bundle(made.image, made.plan, network.render_options(), docker=engine, output=Path(output),
                           lock=lock, check_plan=dockerfile is None,
                           ca_cert=Path(network.ca_cert) if network.ca_cert else None, proxies=network.proxy_env(),
                           on_step=on_step)
    return ProjectBundle(made, written)


def list_project_images(source: str | None, *, settings: Settings, engine: Engine | None = None) -> list[ImageEntry]:
    """The images built from SOURCE's checkout (a folder, or a git URL), newest first; None: every envbuilder image."""
    from envbuilder.build.images import list_images, source_checkout

    return list_images(engine or _engine_for(settings), source_checkout(source) if source is not None else None)


def prune_project_images(source: str | None, *, keep: int = 1, dry_run: bool = False, settings: Settings,
                         engine: Engine | None = None, on_removed: Callable[[ImageEntry], None] | None = None) -> PruneResult:
    """Remove the superseded images of SOURCE's checkout (None: of every checkout), keeping the newest `keep` of
    each, and never an image that a run recorded as running or queued uses (the run store, read only)."""
    from envbuilder.build.images import image_ids, prune_images
    from envbuilder.run.store import RunStore

    engine = engine or _engine_for(settings)
    store = RunStore.from_settings(settings)
    active = [record.image for status in ("running", "queued") for record in store.list_runs(limit=None, status=status)]
    return prune_images(engine, list_project_images(source, settings=settings, engine=engine), keep=keep,
                        in_use=image_ids(engine, active), dry_run=dry_run, on_removed=on_removed)


def _image_builder(*, flags: TargetFlags | None, request: ResolveRequest | None, network: NetworkOptions | None,
                   settings: Settings, engine: Engine, on_line: Callable[[str], None] | None):
    """What `run` and `submit` build with when they need the project's image: build_project, kept as ProjectImage."""
    def build(project_source: str, commit: str | None, chosen: TargetFlags | None) -> ProjectImage:
        return project_image(build_project(project_source, ref=commit, flags=chosen, request=request, network=network,
                                           settings=settings, on_line=on_line, engine=engine))

    return build


def _machine_registry(settings: Settings) -> str | None:
    """The `registry` default of the user config and the environment (no project: `run --image` reads none)."""
    from envbuilder.defaults import machine_defaults

    return machine_defaults(settings.config_paths(), os.environ).value("registry")


def _engine_for(settings: Settings) -> Engine:
    from envbuilder.docker.engine import Docker

    return Docker(settings.docker_binary)

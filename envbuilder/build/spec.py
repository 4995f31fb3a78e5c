"""A build as a value: `BuildSpec` (the Dockerfile, ignore file, context, tags, labels, build args, secrets,
network and key) and the pure function that makes it from a plan and what the build was asked to do.

Everything that decides what gets built is settled here, before any process starts, so it can be tested
without Docker and the executor (build/image.py) only carries it out. Pure: no I/O; the Dockerfile override,
context digest and base-image ids arrive as values. Must not import docker or the CLI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envbuilder.build.key import base_images, build_key, checkout_digest, checkout_identity, image_repo, key_tag
from envbuilder.imagelayout import LABEL_BUILD_KEY, LABEL_CHECKOUT, LABEL_PLAN_HASH, LABEL_PROJECT
from envbuilder.render import CA_SECRET_ID, NETRC_SECRET_ID, RenderOptions
from envbuilder.render.network import LockedPackage, proxy_build_args
from envbuilder.resolve.plan import Plan, plan_digest


@dataclass(frozen=True)
class BuildRequestOptions:
    """What a build is asked to do beyond the plan's render options: names, network, secrets, cache."""

    tag: str | None = None  # also tag the image NAME[:TAG]
    network: str | None = None  # docker --network for the build: "host" reaches mirrors on loopback
    proxies: Mapping[str, str] = field(default_factory=dict)  # proxy variables, either spelling
    ca_cert: Path | None = None  # CA bundle (PEM), a BuildKit secret
    netrc: Path | None = None  # index credentials, a BuildKit secret
    no_cache: bool = False
    extra_tags: tuple[str, ...] = ()  # more local names, after `tag`
    # Labels given at build time (`--label`), not written in the Dockerfile: what they say (when, from which
    # commit) must change neither the build key nor BuildKit's layer cache.
    labels: Mapping[str, str] = field(default_factory=dict)
    cache_from: tuple[str, ...] = ()
    cache_to: str | None = None
    platform: str | None = None  # "linux/arm64"


@dataclass(frozen=True)
class BuildSpec:
    """One build, decided: what the executor writes, serves and asks BuildKit to do."""

    dockerfile: str  # the text to build
    ignore_file: str  # written as Dockerfile.dockerignore, which BuildKit prefers over the context's own
    key: str  # build key, sha256 hex
    plan_hash: str
    context: Path  # the project folder
    tags: tuple[str, ...]  # the key tag first, then :latest and the user's tag
    labels: Mapping[str, str]
    build_args: Mapping[str, str]
    secrets: Mapping[str, Path]  # BuildKit secret id -> file
    network: str | None
    no_cache: bool
    wheelhouses: Mapping[Path, str]  # local --find-links folders -> the loopback URL the Dockerfile names
    cache_from: tuple[str, ...] = ()
    cache_to: str | None = None
    platform: str | None = None

    @property
    def image(self) -> str:
        """The content-addressed reference, envbuilder/<slug>:<key16>."""
        return self.tags[0]


def served_options(options: RenderOptions, urls: Mapping[Path, str]) -> RenderOptions:
    """The render options as the build sees them: each served local wheelhouse replaced by its loopback URL."""
    links = tuple(loc if "://" in loc else urls.get(Path(loc).expanduser(), loc) for loc in options.find_links)
    return options.model_copy(update={"find_links": links})


def dockerfile_text(plan: Plan, options: RenderOptions, locked: Sequence[LockedPackage] | None,
                    override: str | None) -> str:
    """The Dockerfile to build: the user's edited copy when given, else the rendered one."""
    if override is not None:
        return override
    from envbuilder.render.dockerfile import render_dockerfile

    return render_dockerfile(plan, options, tuple(locked) if locked is not None else None)


def build_spec(
    plan: Plan,
    *,
    dockerfile: str,
    ignore_file: str,
    context: Path,
    context_digest: str,
    base_ids: Mapping[str, str],
    wheelhouses: Mapping[Path, str],
    request: BuildRequestOptions,
    keyed_dockerfile: str | None = None,
) -> BuildSpec:
    """The build of `dockerfile` over `context`. base_ids: the identity (key.base_identity) of every image the
    Dockerfile starts from (see base_images); they are part of the key, as a new base changes the image.
    keyed_dockerfile: the text the key is taken over when it is not `dockerfile` itself (the same Dockerfile
    rendered without secret mounts, so that passing a CA bundle or credentials leaves the key as it is)."""
    keyed = dockerfile if keyed_dockerfile is None else keyed_dockerfile
    key = build_key(keyed, ignore_file, context_digest, {ref: base_ids.get(ref, "") for ref in base_images(keyed)})
    project = plan.project_name or context.name
    checkout = checkout_digest(checkout_identity(str(context), plan.project.git_url if plan.project else None))
    repo = image_repo(project, checkout)
    plan_hash = plan_digest(plan)
    secrets: dict[str, Path] = {}
    if request.ca_cert is not None:
        secrets[CA_SECRET_ID] = request.ca_cert
    if request.netrc is not None:
        secrets[NETRC_SECRET_ID] = request.netrc
    # A served wheelhouse is on this machine's loopback, which only the host network reaches.
    network = "host" if wheelhouses else request.network
    return BuildSpec(
        dockerfile=dockerfile, ignore_file=ignore_file, key=key, plan_hash=plan_hash, context=context,
        tags=tuple(dict.fromkeys((key_tag(repo, key), f"{repo}:latest",
                                  *([request.tag] if request.tag else []), *request.extra_tags))),
        labels={**request.labels, LABEL_BUILD_KEY: key, LABEL_PLAN_HASH: plan_hash, LABEL_PROJECT: project,
                LABEL_CHECKOUT: checkout},
        build_args=proxy_build_args(request.proxies), secrets=secrets,
        network=network if network in ("host", "none") else None, no_cache=request.no_cache,
        wheelhouses=dict(wheelhouses), cache_from=tuple(request.cache_from), cache_to=request.cache_to,
        platform=request.platform,
    )

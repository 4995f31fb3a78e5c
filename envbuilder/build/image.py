"""Build a plan's image: find it by its key (a no-op rebuild), or carry out its BuildSpec with BuildKit.

`build_image` gathers what the key needs (the context digest, the base images' local ids), has build/spec.py
decide the build, and returns at once, without starting the docker CLI, when an image with that key exists.
Otherwise `run_build` serves local wheelhouses (`--find-links DIR`) read-only on loopback for the build's
duration (so gigabytes of wheels never enter the context), writes the Dockerfile and its ignore file, runs
BuildKit through the engine, keeps a log of every line, and tags the image only when the build succeeded: a
failed or interrupted (Ctrl-C) build leaves the previous image and tags as they were.
Must not import the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.build.context import context_notices, ignore_file_text, ignore_patterns, survey_context
from envbuilder.build.inputs import check_ca_bundle, check_image_tag
from envbuilder.build.key import KEY_TAG_LENGTH, base_identity, base_images
from envbuilder.build.progress import BuildProgress, BuildStep
from envbuilder.build.registry import (
    RegistryOptions,
    content_ref,
    find_in_registry,
    pull_reused,
    push_image,
    push_refs,
)
from envbuilder.build.spec import BuildRequestOptions, BuildSpec, build_spec, dockerfile_text, served_options
from envbuilder.errors import EnvbuilderError, ProjectError, UsageError
from envbuilder.imagelayout import LABEL_BASE, LABEL_PYTHON
from envbuilder.notices import Notice
from envbuilder.redact import netrc_text
from envbuilder.render import CA_SECRET_ID, RenderOptions
from envbuilder.render.dockerfile import default_ignores
from envbuilder.render.network import LockedPackage
from envbuilder.resolve.plan import Plan
from envbuilder.settings import Settings

if TYPE_CHECKING:
    from envbuilder.docker.engine import Engine

BUILD_TIMEOUT_S = 3 * 3600
_FAILURE_LINES = 2000


@dataclass(frozen=True)
class BuiltImage:
    image: str  # the content-addressed reference, envbuilder/<slug>:<key16>
    image_id: str
    plan_hash: str
    build_key: str  # full sha256 hex
    cached: bool  # True: an image with this key existed and no build ran
    log: Path | None  # this build's log; for a cached result, the log of the build that made the image
    seconds: float
    tags: tuple[str, ...] = ()  # every tag applied: the key tag, :latest, the user's --tag
    steps: tuple[BuildStep, ...] = ()
    reused: str | None = None  # REGISTRY/REPO:TAG pulled instead of building (built elsewhere)
    digest: str | None = None  # the registry's manifest digest of the content-addressed reference
    pushed: tuple[str, ...] = ()  # references pushed by this build
    notices: tuple[Notice, ...] = ()  # about the context: secrets in it, its size (build.context.context_notices)
    bases: tuple[str, ...] = ()  # the base images the Dockerfile starts from
    # (path relative to the context, signature) of every context entry, as walked for the key (build.memo)
    context_signatures: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def to_json(self) -> dict:
        return {
            "image": self.image, "image_id": self.image_id, "plan_hash": self.plan_hash, "cached": self.cached,
            "log": str(self.log) if self.log else None, "build_key": self.build_key, "seconds": round(self.seconds, 3),
            "tags": list(self.tags), "reused": self.reused, "digest": self.digest, "pushed": list(self.pushed),
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "notices": [dataclasses.asdict(n) for n in self.notices],
        }


def build_image(
    plan: Plan,
    options: RenderOptions,
    *,
    project_dir: Path,
    settings: Settings,
    docker: Engine,
    tag: str | None = None,
    dockerfile_override: Path | None = None,
    network: str | None = None,
    proxies: Mapping[str, str] | None = None,
    ca_cert: Path | None = None,
    netrc: Path | None = None,
    on_line: Callable[[str], None] | None = None,
    force: bool = False,
    timeout: float | None = BUILD_TIMEOUT_S,
    locked: tuple[LockedPackage, ...] | None = None,
    registry: RegistryOptions | None = None,
    extra: BuildRequestOptions | None = None,
) -> BuiltImage:
    """Build (or find) the plan's image. Returns at once, without the docker CLI, when the key's image exists.

    `options.find_links` entries that are local folders are served on loopback for the build (host network).
    `force` rebuilds with --no-cache. Ctrl-C kills the build, keeps the log and the previous image, re-raises.
    `locked` (a lock checked against the plan) makes the installs exactly the lock's files, by hash.
    `registry`: a missing image is pulled from registry.repository when it holds the content-addressed tag
    (unless reuse is off), and with registry.push the image is pushed there. `extra`: more local tags, build-time
    labels, --cache-from/--cache-to and --platform (its tag, network, proxies and secrets are taken from above).
    What the context walk finds (secrets, a large context) is reported through on_line, cached build or not,
    and kept in BuiltImage.notices.
    """
    started = time.monotonic()
    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise ProjectError("project-not-found", f"{project_dir} is not a folder", "pass the project's folder")
    check_image_tag(tag)
    if ca_cert is not None:
        ca_cert = check_ca_bundle(ca_cert)
    request = dataclasses.replace(
        extra or BuildRequestOptions(),
        tag=tag, network=network, proxies=dict(proxies or {}), no_cache=force,
        ca_cert=Path(ca_cert).resolve() if ca_cert is not None else None,
        netrc=Path(netrc).resolve() if netrc is not None else None)
    keyed_options = options  # as the user's options say: secrets given or not, the key stays the same
    options = options.model_copy(update={"ca_cert": options.ca_cert or ca_cert is not None,
                                         "netrc": options.netrc or netrc is not None})
    patterns = ignore_patterns(project_dir, default_ignores(plan))
    survey = survey_context(project_dir, patterns, cache=_digest_cache(settings, project_dir))
    digest, notices = survey.digest, context_notices(survey)
    for notice in notices:  # before the lookup: a cached image holds the same files
        if on_line:
            on_line(f"# envbuilder: warning: {notice.message}. Hint: {notice.hint}")
    override = dockerfile_override.read_text(encoding="utf-8") if dockerfile_override else None
    bases: dict[str, str] = {}

    def spec_for(urls: Mapping[Path, str]) -> BuildSpec:
        text = dockerfile_text(plan, served_options(options, urls), locked, override)
        keyed = override if override is not None else dockerfile_text(
            plan, served_options(keyed_options.model_copy(update={"ca_cert": False, "netrc": False}), urls),
            locked, None)
        for ref in base_images(keyed):
            if ref not in bases:
                bases[ref] = _base_identity(docker, ref)
        return build_spec(plan, dockerfile=text, ignore_file=ignore_file_text(patterns), context=project_dir,
                          context_digest=digest, base_ids=bases, wheelhouses=urls, request=request,
                          keyed_dockerfile=keyed)

    spec = spec_for(_planned_wheelhouses(options))
    registry = registry if registry is not None and registry.repository else None
    if not force:
        found = find_built(spec, docker, settings)
        if found is None and registry is not None and registry.reuse:
            found = _reuse(spec, docker, registry)
        if found is not None:
            if registry is not None and registry.push:
                found = _ensure_pushed(found, spec, docker, registry, on_line)
            return dataclasses.replace(found, seconds=time.monotonic() - started, notices=notices, bases=tuple(bases),
                                       context_signatures=survey.signatures)
    built = run_build(spec, docker, settings, respec=spec_for, on_line=on_line, timeout=timeout)
    if registry is not None and registry.push:
        pushed = push_image(docker, built.image_id, push_refs(registry, built.build_key), on_line=on_line)
        built = dataclasses.replace(built, digest=pushed.digest, pushed=pushed.refs)
    return dataclasses.replace(built, seconds=time.monotonic() - started, notices=notices, bases=tuple(bases),
                               context_signatures=survey.signatures)


@contextlib.contextmanager
def credentials_netrc(credentials: Mapping[str, tuple[str, str | None]], netrc: Path | None) -> Iterator[Path | None]:
    """The build's netrc secret: `netrc` as given when no URL carries credentials; else a temporary file (0600)
    holding a line per credentialed host and then the given file, removed when the build is done.

    A host named both in a URL and in the given file is refused: which login wins differs between uv, pip and
    curl (first or last entry), and a build must not depend on it."""
    if not credentials:
        yield netrc
        return
    given = ""
    if netrc is not None:
        given = Path(netrc).read_text(encoding="utf-8", errors="replace")
        words = given.split()
        both = sorted(set(credentials) & {words[i + 1].lower() for i, w in enumerate(words[:-1]) if w == "machine"})
        if both:
            raise UsageError("credentials-unusable", f"{both[0]} has credentials both in a URL option and in {netrc}",
                             "keep one: the URL without user:password@, or the file without that machine")
    fd, name = tempfile.mkstemp(prefix="envbuilder-netrc-")  # 0600, and only this process knows its name
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(netrc_text(dict(credentials)) + given)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _reuse(spec: BuildSpec, docker: Engine, registry: RegistryOptions) -> BuiltImage | None:
    """The image another machine built and pushed under the spec's content-addressed tag, pulled; else None."""
    assert registry.repository is not None
    ref = content_ref(registry.repository, spec.key)
    digest = find_in_registry(docker, ref)
    if digest is None:
        return None
    image_id = pull_reused(docker, ref, spec.tags)
    return BuiltImage(spec.image, image_id, spec.plan_hash, spec.key, True, None, 0.0, spec.tags, reused=ref,
                      digest=digest)


def _ensure_pushed(found: BuiltImage, spec: BuildSpec, docker: Engine, registry: RegistryOptions,
                   on_line: Callable[[str], None] | None) -> BuiltImage:
    """A found image with --push: pushed unless the registry already has it (the extra tags always are)."""
    assert registry.repository is not None
    refs = push_refs(registry, spec.key)
    digest = found.digest if found.reused else find_in_registry(docker, refs[0])
    if digest is not None and len(refs) == 1:
        return dataclasses.replace(found, digest=digest)
    todo = refs if digest is None else refs[1:]
    pushed = push_image(docker, found.image_id, todo, on_line=on_line)
    return dataclasses.replace(found, digest=digest or pushed.digest, pushed=pushed.refs)


def find_built(spec: BuildSpec, docker: Engine, settings: Settings) -> BuiltImage | None:
    """The spec's image when one with its key exists (its other tags brought up to date), else None."""
    existing = docker.image_inspect(spec.image)
    if existing is None:
        return None
    for ref in spec.tags[1:]:
        if (docker.image_inspect(ref) or {}).get("Id") != existing["Id"]:
            docker.tag(existing["Id"], ref)
    return BuiltImage(spec.image, existing["Id"], spec.plan_hash, spec.key, True, _last_log(settings, spec.key),
                      0.0, spec.tags)


def run_build(spec: BuildSpec, docker: Engine, settings: Settings, *,
              respec: Callable[[Mapping[Path, str]], BuildSpec],
              on_line: Callable[[str], None] | None = None, timeout: float | None = BUILD_TIMEOUT_S) -> BuiltImage:
    """Carry out a BuildSpec: serve its wheelhouses, write its files, run BuildKit with a log, then tag.

    respec: remakes the spec for other wheelhouse URLs, used when a folder's derived port is taken (that build
    then names another URL, and so gets another key)."""
    from envbuilder.index.server import serve_wheelhouse, wheelhouse_port

    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        urls = {w: stack.enter_context(serve_wheelhouse(w, port=wheelhouse_port(w))) for w in spec.wheelhouses}
        if urls != dict(spec.wheelhouses):
            spec = respec(urls)
        log_path, steps = _build_logged(spec, docker, settings, on_line, timeout)
    info = docker.image_inspect(spec.image)
    if info is None:
        raise EnvbuilderError("build-no-image", f"the build finished but {spec.image} is missing",
                              f"read the log {log_path}", context={"log": str(log_path)})
    for ref in spec.tags[1:]:
        docker.tag(info["Id"], ref)
    return BuiltImage(spec.image, info["Id"], spec.plan_hash, spec.key, False, log_path,
                      time.monotonic() - started, spec.tags, steps)


def _build_logged(spec: BuildSpec, docker: Engine, settings: Settings, on_line: Callable[[str], None] | None,
                  timeout: float | None) -> tuple[Path, tuple[BuildStep, ...]]:
    """Run BuildKit over the spec, every line into a new log; a failure names the log and re-raises."""
    from envbuilder.docker.buildkit import BuildRequest

    started = time.monotonic()
    dockerfile = _write_build_files(spec, settings)
    request = BuildRequest(dockerfile=dockerfile, context=spec.context, tag=spec.image, build_args=spec.build_args,
                           secrets=spec.secrets, network=spec.network, labels=spec.labels, no_cache=spec.no_cache,
                           cache_from=spec.cache_from, cache_to=spec.cache_to, platform=spec.platform)
    log_path = _new_log_path(settings, spec.key)
    progress = BuildProgress()
    # The failing step's lines, for explain_build_failure: the end of a failed build is where its cause is.
    tail: deque[str] = deque(maxlen=_FAILURE_LINES)
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:

        def line_sink(line: str) -> None:
            log.write(line + "\n")
            tail.append(line)
            progress.feed(line)
            if on_line:
                on_line(line)

        # Our own lines start with "# " (BuildKit's with "#N "), so a display can tell them apart.
        line_sink(f"# envbuilder: building {spec.image} (plan {spec.plan_hash}) from {spec.context}")
        line_sink(f"# envbuilder: Dockerfile {dockerfile}, log {log_path}")
        try:
            docker.build(request, on_line=line_sink, timeout=timeout)
        except KeyboardInterrupt:
            log.write(f"# envbuilder: interrupted after {time.monotonic() - started:.1f} s; no tag was applied\n")
            raise
        except EnvbuilderError as exc:
            exc = _explained(exc, tail, spec, docker)
            log.write(f"# envbuilder: failed: {exc}\n")
            raise exc.replaced(
                hint=f"{exc.hint + '; ' if exc.hint else ''}the full log is {log_path}",
                context={**exc.context, "log": str(log_path), "build_key": spec.key},
            ) from None
        log.write(f"# envbuilder: built {spec.image} in {time.monotonic() - started:.1f} s\n")
    return log_path, progress.steps


def _explained(diagnosed: EnvbuilderError, lines: Sequence[str], spec: BuildSpec, docker: Engine) -> EnvbuilderError:
    """The failure with its cause named from the log (the host and package of a failed download...)."""
    from envbuilder.build.failure import (
        BuildFacts,
        explain_build_failure,
        failed_step,
        plan_python_of,
    )

    step = failed_step(lines)
    pulling_base = step is not None and step.stage == "internal" and step.command.startswith("load metadata for ")
    bases = _local_bases(docker) if pulling_base else ()
    froms = base_images(spec.dockerfile)
    facts = BuildFacts(plan_python=plan_python_of(spec.dockerfile), base_image=froms[0] if froms else None,
                       proxies=spec.build_args, ca_cert=CA_SECRET_ID in spec.secrets, local_bases=bases)
    return explain_build_failure(lines, diagnosed, facts)


def _local_bases(docker: Engine) -> tuple[tuple[str, str], ...]:
    """(image, Python) of the base images on this machine (`envbuilder base bootstrap` labels them).

    Images built FROM a base inherit its labels, so the label alone would also name every project image; a base
    made by `docker import` is one layer, which is what tells the base itself apart."""
    try:
        found = docker.images_labelled(LABEL_BASE)
        bases = [image for image in found if len(((docker.image_inspect(image.get("Id", "")) or {})
                                                   .get("RootFS") or {}).get("Layers") or ()) == 1]
    except EnvbuilderError:
        return ()  # only a hint depends on it
    return tuple((tag, (image.get("Labels") or {}).get(LABEL_PYTHON, "?")) for image in bases
                 for tag in image.get("RepoTags") or () if tag != "<none>:<none>")


def _write_build_files(spec: BuildSpec, settings: Settings) -> Path:
    build_dir = settings.data_dir / "builds" / spec.key[:KEY_TAG_LENGTH]
    build_dir.mkdir(parents=True, exist_ok=True)
    dockerfile = build_dir / "Dockerfile"
    dockerfile.write_text(spec.dockerfile, encoding="utf-8")
    # BuildKit reads <Dockerfile>.dockerignore in preference to the context's .dockerignore.
    (build_dir / "Dockerfile.dockerignore").write_text(spec.ignore_file, encoding="utf-8")
    return dockerfile


def _planned_wheelhouses(options: RenderOptions) -> dict[Path, str]:
    """Local --find-links folders and the loopback URL each will be served at (derived from its path)."""
    folders = [f for loc in options.find_links if "://" not in loc and (f := Path(loc).expanduser()).is_dir()]
    if not folders:
        return {}  # the usual case: no need to load the index server (http.server) on a no-op rebuild
    from envbuilder.index.server import loopback_url, wheelhouse_port

    return {f: loopback_url(wheelhouse_port(f)) for f in folders}


def _base_identity(docker: Engine, ref: str) -> str:
    """key.base_identity of a base: asks the registry only when the base is not here (a fresh machine)."""
    if "@" in ref:
        return base_identity(ref, None)
    info = docker.image_inspect(ref)
    if info is not None:
        return base_identity(ref, info)
    try:
        return base_identity(ref, None, docker.registry_digest(ref))
    except EnvbuilderError:
        return ""  # no registry reachable: the build pulling it will say so


def _digest_cache(settings: Settings, project_dir: Path) -> Path:
    name = hashlib.sha256(str(project_dir).encode()).hexdigest()[:16]
    return settings.data_dir / "cache" / f"context-{name}.json"


def _new_log_path(settings: Settings, key: str) -> Path:
    settings.private_dir(settings.logs_dir)  # build logs can quote private index URLs and paths: 0700
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return settings.logs_dir / f"build-{key[:KEY_TAG_LENGTH]}-{stamp}.log"


def _last_log(settings: Settings, key: str) -> Path | None:
    logs = find_logs(settings, key)
    return logs[-1] if logs else None


def find_logs(settings: Settings, key: str) -> Sequence[Path]:
    """Every log of builds with this key, oldest first."""
    return sorted(settings.logs_dir.glob(f"build-{key[:KEY_TAG_LENGTH]}-*.log"))


__all__ = ["BuiltImage", "build_image", "credentials_netrc", "find_built", "find_logs", "run_build"]

"""Build a plan's image: content-addressed tags, cached no-op rebuilds, streamed progress and build logs.

The build key is a sha256 over what decides the image's bytes: the Dockerfile text (rendered, or the user's
edited copy), the ignore file, a digest of the context files it lets through, and the local ids of the base
images. CA bundles, credentials and proxies are left out: they reach the build as BuildKit secrets and
predefined proxy args, which change no layer. The image is tagged `envbuilder/<project>:<key[:16]>`, so an
unchanged project finds its image with one inspect call and never starts the docker CLI.

A local wheelhouse (`--find-links DIR`) is served read-only on a loopback HTTP port for the build's
duration and the build uses host networking, so gigabytes of wheels never enter the build context. The
port is derived from the folder's path, which keeps the rendered Dockerfile (and so the key and Docker's
layer cache) the same from one build to the next. Must not import the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from envbuilder.build.context import context_digest, default_ignores, ignore_file_text, ignore_patterns
from envbuilder.docker.engine import BuildRequest, Docker
from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.plan import Plan, plan_digest
from envbuilder.render import CA_SECRET_ID, LABEL_PREFIX, NETRC_SECRET_ID, RenderOptions
from envbuilder.render.network import LockedPackage
from envbuilder.settings import Settings

IMAGE_REPO_PREFIX = "envbuilder"
KEY_TAG_LENGTH = 16
BUILD_TIMEOUT_S = 3 * 3600
LABEL_BUILD_KEY = f"{LABEL_PREFIX}.build-key"
LABEL_PLAN_HASH = f"{LABEL_PREFIX}.plan-hash"
LABEL_PROJECT = f"{LABEL_PREFIX}.project"
# Docker's predefined proxy args: usable in RUN without an ARG line, and kept out of `docker history`.
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
# Ports for served wheelhouses: high, unprivileged, below the usual ephemeral range (32768+ on Linux).
_WHEELHOUSE_PORTS = (20000, 32000)


@dataclass(frozen=True)
class BuildStep:
    """One BuildKit vertex as the progress stream reported it."""

    number: int
    title: str  # "[deps 3/6] RUN uv pip install ..."
    status: str = "running"  # running | done | cached | error
    seconds: float | None = None


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

    def to_json(self) -> dict:
        return {
            "image": self.image, "image_id": self.image_id, "plan_hash": self.plan_hash, "cached": self.cached,
            "log": str(self.log) if self.log else None, "build_key": self.build_key, "seconds": round(self.seconds, 3),
            "tags": list(self.tags),
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }


# --- names and keys (pure) -------------------------------------------------------------------------------
def slug(name: str) -> str:
    """A Docker repository path component for a project name: lowercase [a-z0-9] runs joined by '-'."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:64].rstrip("-") or "project"


def image_repo(project_name: str) -> str:
    return f"{IMAGE_REPO_PREFIX}/{slug(project_name)}"


def build_key(dockerfile: str, ignore_file: str, context: str, base_ids: Mapping[str, str]) -> str:
    """sha256 hex over everything that decides the image's bytes (never secrets, proxies or credentials)."""
    h = hashlib.sha256()
    for part in ("dockerfile", dockerfile, "ignore", ignore_file, "context", context):
        h.update(part.encode() + b"\0")
    for ref in sorted(base_ids):
        h.update(f"base\0{ref}\0{base_ids[ref]}\0".encode())
    return h.hexdigest()


def base_images(dockerfile: str) -> tuple[str, ...]:
    """The images a Dockerfile starts from (FROM lines), leaving out references to its own stages."""
    stages: set[str] = set()
    found: list[str] = []
    for line in _logical_lines(dockerfile):
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            continue
        ref = args[0]
        if ref.lower() not in stages and ref != "scratch" and ref not in found:
            found.append(ref)
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
    return tuple(found)


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not pending:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + stripped
        pending = ""
    if pending:
        yield pending


# --- progress (pure) -------------------------------------------------------------------------------------
_STEP_RE = re.compile(r"^#(\d+) (\[[^\]]*\] .*|\S.*)$")
_DONE_RE = re.compile(r"^#(\d+) DONE (\d+(?:\.\d+)?)s$")
_CACHED_RE = re.compile(r"^#(\d+) CACHED$")
_ERROR_RE = re.compile(r"^#(\d+) (?:ERROR|CANCELED)\b")
_OUTPUT_RE = re.compile(r"^#(\d+) (\d+\.\d+) (.*)$")
_NOISE_RE = re.compile(r"^#\d+ (sha256:[0-9a-f]+|\d+\.\d+ *$)")


def is_step_header(line: str) -> bool:
    """A line that starts or ends a step ("#7 [torch 1/1] RUN ...", "#7 DONE 12.6s", "#7 CACHED", "#7 ERROR ...")."""
    return bool(_STEP_HEADER_RE.match(line))


_STEP_HEADER_RE = re.compile(r"^#\d+ (\[[^\]]*\] |DONE \d|CACHED$|ERROR|CANCELED|exporting to image)")


class BuildProgress:
    """Folds BuildKit's plain progress lines into steps: what runs now, what was cached, how long each took."""

    def __init__(self) -> None:
        self._steps: dict[int, BuildStep] = {}
        self.current: BuildStep | None = None
        self.last_output: str = ""

    def feed(self, line: str) -> BuildStep | None:
        """Take one line; return the step it changed, if any."""
        line = line.rstrip()
        if match := _DONE_RE.match(line):
            return self._update(int(match[1]), status="done", seconds=float(match[2]))
        if match := _CACHED_RE.match(line):
            return self._update(int(match[1]), status="cached", seconds=0.0)
        if match := _ERROR_RE.match(line):
            return self._update(int(match[1]), status="error")
        if match := _OUTPUT_RE.match(line):
            self.last_output = match[3]
            return None
        if _NOISE_RE.match(line):
            return None
        if match := _STEP_RE.match(line):
            number, text = int(match[1]), match[2]
            if number in self._steps:  # "#5 transferring context: 2B done", "#7 extracting sha256:..."
                self.last_output = text
                return None
            step = BuildStep(number, text)
            self._steps[number] = step
            self.current = step
            self.last_output = ""
            return step
        return None

    def _update(self, number: int, **changes) -> BuildStep | None:
        step = self._steps.get(number)
        if step is None:
            return None
        step = dataclasses.replace(step, **changes)
        self._steps[number] = step
        if self.current and self.current.number == number:
            self.current = step
        return step

    @property
    def steps(self) -> tuple[BuildStep, ...]:
        return tuple(self._steps[n] for n in sorted(self._steps))

    def step_titled(self, needle: str) -> BuildStep | None:
        """The first step whose title contains `needle` (e.g. "torch==")."""
        return next((s for s in self.steps if needle in s.title), None)


# --- wheelhouses on loopback -----------------------------------------------------------------------------
def is_local_dir(location: str) -> bool:
    return "://" not in location and Path(location).expanduser().is_dir()


def wheelhouse_port(folder: Path) -> int:
    """A port derived from the folder's real path: the same folder gets the same URL on every build."""
    digest = hashlib.sha256(str(Path(folder).expanduser().resolve()).encode()).digest()
    low, high = _WHEELHOUSE_PORTS
    return low + int.from_bytes(digest[:4], "big") % (high - low)


@functools.cache
def _quiet_handler() -> type:
    # http.server is imported here, not with the module: a cached build serves nothing
    import http.server

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
            pass

        def do_PUT(self) -> None:  # read-only: only GET and HEAD are served
            self.send_error(405)

        do_POST = do_DELETE = do_PUT

    return QuietHandler


@contextlib.contextmanager
def serve_wheelhouse(folder: Path, *, port: int | None = None) -> Iterator[str]:
    """Serve a folder read-only on 127.0.0.1 (its derived port, else any free one); yield its URL."""
    import http.server

    folder = Path(folder).expanduser().resolve()
    handler = functools.partial(_quiet_handler(), directory=str(folder))
    wanted = wheelhouse_port(folder) if port is None else port
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", wanted), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name=f"wheelhouse:{folder}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# --- the build -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Prepared:
    dockerfile: str
    ignore_file: str
    key: str
    options: RenderOptions


def build_image(
    plan: Plan,
    options: RenderOptions,
    *,
    project_dir: Path,
    settings: Settings,
    docker: Docker,
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
) -> BuiltImage:
    """Build (or find) the plan's image. Returns at once, without the docker CLI, when the key's image exists.

    `options.find_links` entries that are local folders are served on loopback for the build (host network).
    `force` rebuilds with --no-cache. Ctrl-C kills the build, keeps the log and the previous image, re-raises.
    `locked` (a lock checked against the plan) makes the installs exactly the lock's files, by hash.
    """
    started = time.monotonic()
    project_dir = Path(project_dir).resolve()
    if not project_dir.is_dir():
        raise EnvbuilderError("project-not-found", f"{project_dir} is not a folder", "pass the project's folder")
    if ca_cert is not None and not Path(ca_cert).is_file():
        raise EnvbuilderError("ca-cert-missing", f"CA bundle {ca_cert} does not exist", "pass a PEM file to --ca-cert")
    options = options.model_copy(update={"ca_cert": options.ca_cert or ca_cert is not None,
                                         "netrc": options.netrc or netrc is not None})
    wheelhouses = [Path(loc).expanduser() for loc in options.find_links if is_local_dir(loc)]
    if wheelhouses:
        network = "host"  # the build reaches the served wheelhouse on 127.0.0.1
    planned = {w: f"http://127.0.0.1:{wheelhouse_port(w)}/" for w in wheelhouses}

    defaults = default_ignores(plan)
    patterns = ignore_patterns(project_dir, defaults)
    context = context_digest(project_dir, patterns, cache=_digest_cache(settings, project_dir))
    plan_hash = plan_digest(plan)

    def prepare(urls: Mapping[Path, str]) -> _Prepared:
        served = options.model_copy(update={"find_links": tuple(
            urls[Path(loc).expanduser()] if is_local_dir(loc) else loc for loc in options.find_links)})
        text = dockerfile_override.read_text(encoding="utf-8") if dockerfile_override else _render(plan, served, locked)
        ignore = ignore_file_text(patterns)
        bases = {ref: _local_id(docker, ref) for ref in base_images(text)}
        return _Prepared(text, ignore, build_key(text, ignore, context, bases), served)

    prepared = prepare(planned)
    repo = image_repo(plan.project_name or project_dir.name)
    key_ref = f"{repo}:{prepared.key[:KEY_TAG_LENGTH]}"
    extra_tags = [f"{repo}:latest", *([tag] if tag else [])]

    if not force:
        existing = docker.image_inspect(key_ref)
        if existing is not None:
            for ref in extra_tags:
                if (docker.image_inspect(ref) or {}).get("Id") != existing["Id"]:
                    docker.tag(existing["Id"], ref)
            return BuiltImage(key_ref, existing["Id"], plan_hash, prepared.key, True,
                              _last_log(settings, prepared.key), time.monotonic() - started, (key_ref, *extra_tags))

    with contextlib.ExitStack() as stack:
        actual = {w: stack.enter_context(serve_wheelhouse(w, port=wheelhouse_port(w))) for w in wheelhouses}
        if actual != planned:  # a derived port was taken: this build gets a new URL, and so a new key
            prepared = prepare(actual)
            key_ref = f"{repo}:{prepared.key[:KEY_TAG_LENGTH]}"
        build_dir = settings.data_dir / "builds" / prepared.key[:KEY_TAG_LENGTH]
        build_dir.mkdir(parents=True, exist_ok=True)
        dockerfile = build_dir / "Dockerfile"
        dockerfile.write_text(prepared.dockerfile, encoding="utf-8")
        # BuildKit reads <Dockerfile>.dockerignore in preference to the context's .dockerignore.
        (build_dir / "Dockerfile.dockerignore").write_text(prepared.ignore_file, encoding="utf-8")

        secrets: dict[str, Path] = {}
        if ca_cert is not None:
            secrets[CA_SECRET_ID] = Path(ca_cert).resolve()
        if netrc is not None:
            secrets[NETRC_SECRET_ID] = Path(netrc).resolve()
        request = BuildRequest(
            dockerfile=dockerfile,
            context=project_dir,
            tag=key_ref,
            build_args=_proxy_args(proxies or {}),
            secrets=secrets,
            network=network if network in ("host", "none") else None,
            labels={LABEL_BUILD_KEY: prepared.key, LABEL_PLAN_HASH: plan_hash,
                    LABEL_PROJECT: plan.project_name or project_dir.name},
            no_cache=force,
        )
        log_path = _new_log_path(settings, prepared.key)
        progress = BuildProgress()
        with open(log_path, "w", encoding="utf-8", buffering=1) as log:

            def line_sink(line: str) -> None:
                log.write(line + "\n")
                progress.feed(line)
                if on_line:
                    on_line(line)

            # Our own lines start with "# " (BuildKit's with "#N "), so a display can tell them apart.
            line_sink(f"# envbuilder: building {key_ref} (plan {plan_hash}) from {project_dir}")
            line_sink(f"# envbuilder: Dockerfile {dockerfile}, log {log_path}")
            try:
                docker.build(request, on_line=line_sink, timeout=timeout)
            except KeyboardInterrupt:
                log.write(f"# envbuilder: interrupted after {time.monotonic() - started:.1f} s; no tag was applied\n")
                raise
            except EnvbuilderError as exc:
                log.write(f"# envbuilder: failed: {exc}\n")
                raise dataclasses.replace(
                    exc,
                    hint=f"{exc.hint + '; ' if exc.hint else ''}the full log is {log_path}",
                    context={**exc.context, "log": str(log_path), "build_key": prepared.key},
                ) from None
            log.write(f"# envbuilder: built {key_ref} in {time.monotonic() - started:.1f} s\n")

    info = docker.image_inspect(key_ref)
    if info is None:
        raise EnvbuilderError("build-no-image", f"the build finished but {key_ref} is missing",
                              f"read the log {log_path}", context={"log": str(log_path)})
    for ref in extra_tags:
        docker.tag(info["Id"], ref)
    return BuiltImage(key_ref, info["Id"], plan_hash, prepared.key, False, log_path,
                      time.monotonic() - started, (key_ref, *extra_tags), progress.steps)


def _render(plan: Plan, options: RenderOptions, locked: tuple[LockedPackage, ...] | None) -> str:
    from envbuilder.render.dockerfile import render_dockerfile

    return render_dockerfile(plan, options, locked)


def _local_id(docker: Docker, ref: str) -> str:
    info = docker.image_inspect(ref)
    return info["Id"] if info else "absent"


def _proxy_args(proxies: Mapping[str, str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for key, value in proxies.items():
        if key.upper() not in PROXY_ARGS:
            raise EnvbuilderError("bad-proxy-arg", f"{key} is not a proxy variable",
                                  f"pass only {', '.join(PROXY_ARGS)} (either case)")
        if value:
            args[key.upper()] = value
            args[key.lower()] = value
    return args


def _digest_cache(settings: Settings, project_dir: Path) -> Path:
    name = hashlib.sha256(str(project_dir).encode()).hexdigest()[:16]
    return settings.data_dir / "cache" / f"context-{name}.json"


def _new_log_path(settings: Settings, key: str) -> Path:
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return settings.logs_dir / f"build-{key[:KEY_TAG_LENGTH]}-{stamp}.log"


def _last_log(settings: Settings, key: str) -> Path | None:
    logs = find_logs(settings, key)
    return logs[-1] if logs else None


def find_logs(settings: Settings, key: str) -> Sequence[Path]:
    """Every log of builds with this key, oldest first."""
    return sorted(settings.logs_dir.glob(f"build-{key[:KEY_TAG_LENGTH]}-*.log"))


__all__ = [
    "BuildProgress", "BuildStep", "BuiltImage", "base_images", "build_image", "build_key", "image_repo",
    "is_step_header", "serve_wheelhouse", "slug", "wheelhouse_port", "find_logs",
]

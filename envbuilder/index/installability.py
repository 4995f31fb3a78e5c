"""Installability: does a project's whole dependency set install on a candidate Python? Asks uv and the indexes.

For each Python, highest first, `uv pip compile` resolves the set for the target platform (pylock output, the
plan's pins as constraints); a package uv could only satisfy with an sdist is then looked up on its index page
(PEP 691 JSON, else PEP 503 HTML): wheels for other Pythons mean compiled code with no wheel for this one.
Index pages are cached under the data dir (index-cache/, keyed by index URL and package, with a TTL) and uv's
cache lives there too (uv-cache/); whole verdicts are kept as well (index-cache/verdicts/, keyed by everything
they depend on), so resolving the same project again asks nobody. Index access trusts the system CA store (uv's
system certificates; Python's default SSL context), which is what works behind an intercepting proxy.

The decision and its words are envbuilder.resolve.python_fit (pure); this module does the I/O and parses
uv's text. Must not import docker, the CLI, or the resolver's modules other than python_fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html.parser
import json
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from envbuilder.index.snapshot import index_request
from envbuilder.proc import CommandResult, run_command
from envbuilder.redact import netrc_text, redact_url, split_credentials, url_credentials
from envbuilder.resolve.python_fit import (Blocker, InstallReport, InstallRequest, PythonProbe, not_checked,
                                           wheel_blocker)
from envbuilder.settings import Settings
from envbuilder.tomlparser import tomllib

PYPI_SIMPLE = "https://pypi.org/simple"
PAGE_TTL_S = 24 * 3600.0
PROBE_TIMEOUT_S = 300.0
PAGE_TIMEOUT_S = 20.0
# PEP 691's recommended Accept header: JSON when the index speaks it, its HTML otherwise.
ACCEPT = ("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, "
          "text/html;q=0.01")
# uv's words for "could not reach the index": the check then says "not checked" instead of blaming a package.
_UNREACHABLE = re.compile(r"error sending request|Failed to fetch|dns error|tcp connect error|Connection refused"
                          r"|failed to lookup address|UnknownIssuer|invalid peer certificate|timed out", re.IGNORECASE)


# `--format pylock.toml` arrived in uv 0.6.15; an older uv rejects the flag, which is not the project's fault.
_UV_TOO_OLD = re.compile(r"invalid value '?pylock\.toml|unexpected argument '--format'")


def find_uv() -> str | None:
    """The uv that the `uv` package installed next to envbuilder, else the first on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


# --- index pages --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexFile:
    filename: str
    yanked: bool = False
    requires_python: str | None = None


class _LinkParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.files: list[IndexFile] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        found = dict(attrs)
        path = urllib.parse.urlsplit(found.get("href") or "").path
        name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
        if name:
            self.files.append(IndexFile(name, "data-yanked" in found, found.get("data-requires-python")))


def parse_index_page(body: str, content_type: str) -> tuple[IndexFile, ...]:
    """The files a PEP 691 JSON or PEP 503 HTML project page lists."""
    if "json" in content_type:
        files = json.loads(body).get("files", [])
        return tuple(IndexFile(f["filename"], bool(f.get("yanked")), f.get("requires-python")) for f in files)
    parser = _LinkParser()
    parser.feed(body)
    return tuple(parser.files)


def _open(url: str, timeout: float) -> tuple[str, str]:
    """GET url (credentials in it become a Basic header, never part of a message); returns (body, content type)."""
    bare, user, password = split_credentials(url)
    request = index_request(bare, ACCEPT, user, password)
    # The default context loads the system store (and honours SSL_CERT_FILE): an intercepting proxy's CA works.
    with urllib.request.urlopen(request, timeout=timeout, context=ssl.create_default_context()) as response:
        return response.read().decode("utf-8", "replace"), response.headers.get("Content-Type", "")


class TtlStore:
    """JSON answers on disk that expire: `fetched_at` inside each file, compared with the clock on reading."""

    def __init__(self, root: Path, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.root, self.ttl_s, self.clock = Path(root), ttl_s, clock

    def load(self, relative: str) -> dict | None:
        try:
            record = json.loads((self.root / relative).read_text(encoding="utf-8"))
            return record if self.clock() - record["fetched_at"] < self.ttl_s else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, relative: str, record: dict) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**record, "fetched_at": self.clock()}), encoding="utf-8")
        tmp.replace(path)  # a resolve reading at the same time sees the old answer or the new, never half of one


def _digest(text: str) -> str:
    # Hashing the full URL keeps credentials out of file names; the redacted URL is kept inside for people.
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class IndexPages:
    """Project pages of the configured indexes, cached under `cache_dir`, one folder per index URL."""

    def __init__(self, cache_dir: Path, ttl_s: float = PAGE_TTL_S, *, timeout: float = PAGE_TIMEOUT_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.timeout = TtlStore(cache_dir, ttl_s, clock), timeout

    def files(self, index_url: str, name: str) -> tuple[IndexFile, ...] | None:
        """The files the index lists for the project; None when it has no such project or cannot be read."""
        relative = f"{_digest(index_url.rstrip('/'))}/{canonicalize_name(name)}.json"
        cached = self.store.load(relative)
        if cached is not None:
            return tuple(IndexFile(**f) for f in cached["files"])
        try:
            body, content_type = _open(f"{index_url.rstrip('/')}/{canonicalize_name(name)}/", self.timeout)
            files = parse_index_page(body, content_type)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        self.store.save(relative, {"index": redact_url(index_url), "files": [f.__dict__ for f in files]})
        return files


# --- uv's output --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LockedDist:
    """One package of uv's pylock output: whether uv found a wheel for the target, and where it came from."""

    name: str
    version: str
    has_wheel: bool
    has_sdist: bool
    index: str | None


def parse_pylock(text: str) -> tuple[LockedDist, ...]:
    """The packages of a pylock.toml (PEP 751) as uv writes it; direct URL, VCS and directory entries are skipped."""
    data = tomllib.loads(text)
    found = []
    for package in data.get("packages", []):
        if "version" not in package:
            continue
        found.append(LockedDist(canonicalize_name(package["name"]), str(package["version"]),
                                bool(package.get("wheels")), "sdist" in package, package.get("index")))
    return tuple(found)


# A requirement as uv prints it: name, optional extras, optional comma-joined specifiers ("numpy<1.27,>=1.19").
_OP = r"(?:==|>=|<=|!=|~=|>|<)[^\s,]+"
_SPEC = rf"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]*\])?(?:{_OP}(?:,{_OP})*)?"
_DEPENDS = re.compile(rf"(?:all versions of |(?<=\s))(?P<who>{_SPEC}) depends? on (?P<dep>{_SPEC})")
_NOT_FOUND = re.compile(rf"(?P<who>{_SPEC}) was not found in the package registry")
_NO_VERSION = re.compile(rf"there is no version of (?P<who>{_SPEC})")
_REQUIRED = re.compile(rf"you require (?P<who>{_SPEC})")
_NO_WHEEL = re.compile(rf"(?P<who>{_SPEC}) has no wheels with a matching "
                       r"(?P<tag>Python ABI|Python implementation|platform) tag")


def _split(spec: str) -> tuple[str, str]:
    """("torchtext", "0.16.0") for "torchtext==0.16.0"; a range or bare name keeps no version."""
    name, sep, rest = spec.partition("==")
    if sep and "," not in rest:
        return canonicalize_name(name.split("[")[0]), rest
    bare = re.split(r"[=<>!~\[]", spec, maxsplit=1)[0]
    return canonicalize_name(bare), ""


def parse_uv_failure(text: str, platform_label: str = "") -> tuple[Blocker, ...]:
    """Blockers from uv's "No solution found" explanation ("Because torchtext==0.16.0 depends on torch==2.1.0 ...").

    A wheel-only release with no wheel for the target is worded as python_fit.wheel_blocker words it, so the
    two ways of finding one missing wheel merge into one reason.
    """
    flat = " ".join(line.strip() for line in text.splitlines())
    # "all versions of torchtext depend on ..." names no version; the user's own exact pin supplies it.
    pinned = dict(_split(m["who"]) for m in _REQUIRED.finditer(flat))
    blockers: dict[Blocker, None] = {}
    for match in _NO_WHEEL.finditer(flat):
        package, version = _split(match["who"])
        why = f"has no {platform_label} wheels" if match["tag"] == "platform" and platform_label else "has no wheels"
        blockers[Blocker(package, version, "no-wheel", why)] = None
    for match in _DEPENDS.finditer(flat):
        package, version = _split(match["who"])
        version = version or pinned.get(package, "")
        dep = match["dep"]
        if dep.lower().startswith("python") and not dep.lower().startswith("python-"):
            blockers[Blocker(package, version, "requires-python", f"requires Python {dep[6:]}")] = None
        else:
            blockers[Blocker(package, version, "conflict", f"requires {dep}", needs=dep)] = None
    for pattern, why in ((_NOT_FOUND, "is not on the configured indexes"), (_NO_VERSION, "has no such release")):
        for match in pattern.finditer(flat):
            package, version = _split(match["who"])
            blockers[Blocker(package, version, "missing", why)] = None
    return tuple(blockers)


def redact_text(text: str) -> str:
    """uv's output with every URL's credentials replaced by ***."""
    return re.sub(r"[a-z][a-z0-9+.-]*://[^\s'\"]+", lambda m: redact_url(m.group()), text)


# --- the probe ----------------------------------------------------------------------------------------------
def compile_argv(uv: str, request: InstallRequest, python: str, requirements: Path, constraints: Path | None,
                 cache_dir: Path) -> list[str]:
    argv = [uv, "pip", "compile", str(requirements), "--python-version", python,
            "--python-platform", request.platform.uv, "--format", "pylock.toml", "--no-header",
            "--cache-dir", str(cache_dir), "--index-url", request.index_url or PYPI_SIMPLE]
    for url in request.extra_index_urls:
        argv += ["--extra-index-url", url]
    for link in request.find_links:
        argv += ["--find-links", link]
    if constraints is not None:
        argv += ["--constraint", str(constraints)]
    return argv


UV_ENV = {
    "UV_PYTHON_DOWNLOADS": "never",  # a probe must not fetch interpreters: uv only needs one to build sdists
    "UV_SYSTEM_CERTS": "1",  # the platform's store, where an intercepting proxy's CA is installed
    "UV_NATIVE_TLS": "1",  # the same for older uv (newer uv warns only when it is set alone)
    "UV_HTTP_RETRIES": "1",  # an unreachable index answers "not checked" in seconds, not after three retries
    "NO_COLOR": "1",
}


def _probe_one(uv: str, request: InstallRequest, python: str, workdir: Path, settings: Settings,
               pages: IndexPages, timeout: float) -> PythonProbe | CommandResult:
    """One Python's verdict, or the CommandResult when uv could not ask the index at all.

    Index credentials reach uv through a .netrc in the probe's private folder (its NETRC), never its command
    line, which every user of the machine can read in the process list."""
    requirements = workdir / "requirements.in"
    requirements.write_text("".join(f"{r}\n" for r in request.requirements), encoding="utf-8")
    constraints = None
    if request.pins:
        constraints = workdir / "constraints.txt"
        constraints.write_text("".join(f"{p}\n" for p in request.pins), encoding="utf-8")
    credentials = url_credentials((request.index_url, *request.extra_index_urls, *request.find_links))
    env = dict(UV_ENV)
    if credentials:
        (workdir / "netrc").write_text(netrc_text(credentials), encoding="utf-8")
        (workdir / "netrc").chmod(0o600)  # in a 0700 folder of its own already; uv, like curl, may check
        env["NETRC"] = str(workdir / "netrc")
    bare = dataclasses.replace(request, index_url=request.index_url and split_credentials(request.index_url)[0],
                               extra_index_urls=tuple(split_credentials(u)[0] for u in request.extra_index_urls),
                               find_links=tuple(split_credentials(u)[0] for u in request.find_links))
    argv = compile_argv(uv, bare, python, requirements, constraints, settings.data_dir / "uv-cache")
    result = run_command(argv, timeout=timeout, env=env, cwd=workdir)
    if not result.ok:
        if result.missing or result.timed_out or _UV_TOO_OLD.search(result.stderr) or (
                _UNREACHABLE.search(result.stderr) and "No solution found" not in result.stderr):
            return result
        raw = redact_text(result.stderr.strip())
        return PythonProbe(python, False, parse_uv_failure(raw, request.platform.label), raw=raw)
    dists = parse_pylock(result.stdout)
    blockers = []
    for dist in dists:
        if dist.has_wheel or not dist.has_sdist:
            continue
        files = _files_for(dist, request, pages)
        blocker = files is not None and wheel_blocker(dist.name, dist.version, (f.filename for f in files),
                                                      python, request.platform)
        if blocker:
            blockers.append(blocker)
    resolved = tuple(f"{d.name}=={d.version}" for d in dists)
    return PythonProbe(python, not blockers, tuple(blockers), resolved)


def _files_for(dist: LockedDist, request: InstallRequest, pages: IndexPages):
    """The release's files from the index uv took it from, else from each configured index in turn."""
    indexes = [dist.index] if dist.index else []
    indexes += [u for u in (request.index_url or PYPI_SIMPLE, *request.extra_index_urls) if u not in indexes]
    for index_url in indexes:
        files = pages.files(index_url, dist.name)
        if files is not None:
            return files
    return None


# Bump when what a verdict means changes, so that answers cached by an older envbuilder are not reused.
VERDICT_FORMAT = 1


def _verdict_key(request: InstallRequest, python: str) -> str:
    """Everything the answer depends on: the set, the pins, the indexes (hashed), the platform and the Python.

    uv revalidates every index page it has cached (about 2.5 s for 30 dependencies behind a proxy), so a whole
    answer is kept too: a second resolve of the same project within the TTL asks nobody.
    """
    inputs = [VERDICT_FORMAT, sorted(request.requirements), sorted(request.pins), request.index_url,
              list(request.extra_index_urls), list(request.find_links), request.platform.uv, python]
    return f"{_digest(json.dumps(inputs))}.json"


def _probe_from_record(record: dict | None) -> PythonProbe | None:
    if record is None:
        return None
    try:
        probe = record["probe"]
        return PythonProbe(probe["python"], probe["installs"], tuple(Blocker(**b) for b in probe["blockers"]),
                           tuple(probe["resolved"]), probe["raw"])
    except (KeyError, TypeError):
        return None


def check_installability(request: InstallRequest, settings: Settings, *, offline: bool = False,
                         uv: str | None = None, timeout: float = PROBE_TIMEOUT_S, ttl_s: float = PAGE_TTL_S,
                         stop_at_first: bool = True) -> InstallReport:
    """Probe request.pythons highest first until one installs everything (or all, with stop_at_first=False).

    Never raises for the outside world: offline, no uv, an unreachable index or a timeout give a report with
    checked=False and a note, so the caller falls back to the matrix alone with a warning.
    """
    platform = request.platform.uv
    if offline:
        return not_checked(platform, "offline")
    uv = uv or find_uv()
    if not uv:
        return not_checked(platform, "uv was not found")
    try:
        url_credentials((request.index_url, *request.extra_index_urls, *request.find_links))
    except ValueError as exc:  # the build refuses them too (credentials-unusable), with a hint
        return not_checked(platform, str(exc))
    started = time.monotonic()
    cache = settings.data_dir / "index-cache"
    pages, verdicts = IndexPages(cache, ttl_s), TtlStore(cache / "verdicts", ttl_s)
    probes: list[PythonProbe] = []
    with tempfile.TemporaryDirectory(prefix="envbuilder-fit-") as tmp:
        for python in request.pythons:
            key = _verdict_key(request, python)
            outcome = _probe_from_record(verdicts.load(key))
            if outcome is None:
                outcome = _probe_one(uv, request, python, Path(tmp), settings, pages, timeout)
                if isinstance(outcome, CommandResult):
                    return not_checked(platform, _why_not_checked(outcome, timeout))
                verdicts.save(key, {"probe": dataclasses.asdict(outcome)})
            probes.append(outcome)
            if outcome.installs and stop_at_first:
                break
    return InstallReport(True, platform, tuple(probes), seconds=round(time.monotonic() - started, 2))


def _why_not_checked(result: CommandResult, timeout: float) -> str:
    if result.missing:
        return "uv could not be run"
    if result.timed_out:
        return f"uv did not answer in {timeout:.0f}s"
    if _UV_TOO_OLD.search(result.stderr):
        return "this uv cannot write pylock.toml; uv 0.6.15 or newer can"
    cause = next((line.strip() for line in reversed(result.stderr.splitlines()) if "cause:" in line), "")
    return "no index reachable" + (f": {redact_text(cause.removeprefix('cause:').strip())}" if cause else "")


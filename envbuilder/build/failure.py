"""Why a build failed, from its log: `explain_build_failure` reads the failing BuildKit step's output (pip's,
uv's or BuildKit's own error lines) and returns a typed error that names the cause, the host and the package,
with a hint, instead of the failing `RUN` line.

The causes, in the order they are tried (the first that explains the step wins):
- the base image's Python is not the plan's (the Dockerfile's own check prints it);
- a wheel exists on the mirror, but not for the plan's Python (uv lists the Pythons it found);
- TLS verification failed (an intercepting proxy whose CA the build was not given);
- the proxy could not be reached (pip says so; uv only says "connection refused", so a connection failure
  to a host the proxies cover is read as the proxy's);
- the host does not resolve, refuses, times out, or answers with an HTTP error;
- the index has no such package (a 404 page: uv's "not found in the package registry", pip's
  "from versions: none"), or pip ignored a plain-http index;
- pulling the base image failed (no registry): the hint names the local base images that would serve.
Anything else keeps the engine's diagnosis (envbuilder.docker.diagnose). Lines come from real builds on
this machine: tests/data/build-failures/. Pure text in, error out: must not import docker, subprocess
wrappers or the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from envbuilder.errors import DockerError, EnvbuilderError
from envbuilder.redact import redact_url

# BuildKit's plain progress: "#6 [python 1/1] RUN ..." opens a step, "#6 7.261 text" is its output,
# "#6 ERROR: ..." ends it. The docker 20.10 client says "executor failed running [...]"; buildx says
# `process "..." did not complete successfully`.
_STEP_LINE = re.compile(r"^#(\d+) (.*)$")
_TIMESTAMP = re.compile(r"^\d+\.\d+ ?")
_HEADER = re.compile(r"^\[(?P<stage>[\w.-]+) \d+/\d+\] (?P<command>.*)$|^\[internal\] (?P<internal>.*)$")
_URL = re.compile(r"https?://[^\s`'\")]+")


@dataclass(frozen=True)
class BuildFacts:
    """What the build was asked to do, for the causes' hints: nothing here is read from the log."""

    plan_python: str | None = None
    base_image: str | None = None
    proxies: Mapping[str, str] = field(default_factory=dict)  # the proxy build args, either spelling
    ca_cert: bool = False  # a CA bundle was given (--ca-cert / --host-ca)
    local_bases: Sequence[tuple[str, str]] = ()  # (image, its Python) of local base images


@dataclass(frozen=True)
class FailedStep:
    """The BuildKit step that failed: its stage ("python", "torch"...; "internal" for BuildKit's own),
    its command, and its output lines without the step number and timestamps."""

    stage: str
    command: str
    output: tuple[str, ...]
    error: str  # BuildKit's ERROR line

    @property
    def text(self) -> str:
        """The output as one string, uv's wrapped lines joined (its messages wrap at 80 columns)."""
        return " ".join(line.strip(" │╰─▶×├") for line in self.output if line.strip())


def failed_step(lines: Iterable[str]) -> FailedStep | None:
    """The step whose "#N ERROR:" line ends the log's build, with every line it printed; None when none failed."""
    by_step: dict[str, list[str]] = {}
    headers: dict[str, str] = {}
    failed: tuple[str, str] | None = None
    for line in lines:
        match = _STEP_LINE.match(line.rstrip("\n"))
        if not match:
            continue
        number, rest = match.groups()
        if rest.startswith("ERROR: ") or rest == "ERROR":
            failed = (number, rest[len("ERROR: "):])
        elif rest.startswith("["):
            headers[number] = rest
        elif not rest.startswith(("sha256:", "DONE ", "CACHED", "...")):
            by_step.setdefault(number, []).append(_TIMESTAMP.sub("", rest, count=1))
    if failed is None:
        return None
    number, error = failed
    header = _HEADER.match(headers.get(number, ""))
    if header is None:
        stage, command = "", headers.get(number, "")
    elif header.group("internal") is not None:
        stage, command = "internal", header.group("internal")
    else:
        stage, command = header.group("stage"), header.group("command")
    return FailedStep(stage, command, tuple(by_step.get(number, ())), error)


def explain_build_failure(lines: Iterable[str], diagnosed: EnvbuilderError, facts: BuildFacts = BuildFacts()) -> EnvbuilderError:
    """The error that names why the build failed, or `diagnosed` (the engine's reading) when the log does not say."""
    step = failed_step(lines)
    if step is None:
        return diagnosed
    for cause in _CAUSES:
        found = cause(step, facts)
        if found is not None:
            return found
    return diagnosed


# --- the causes ---------------------------------------------------------------------------------------------
def _base_python(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    match = re.search(r"envbuilder: the base image has Python (\S+), the plan needs (\S+)", step.text)
    if not match:
        return None
    has, needs = match.groups()
    base = facts.base_image or "the base image"
    return DockerError(
        "base-python-mismatch", f"{base} has Python {has}, but the plan is for Python {needs}",
        f"drop --python (a base image decides the plan's Python) or pass --python {has}; for Python {needs}, "
        f"pass a --base-image that has it", context={"base_python": has, "plan_python": needs})


def _no_wheel_for_python(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    text = step.text
    tags = re.search(r"You require CPython (\d+\.\d+) \(`cp\d+`\), but we only found wheels for `([^`]+)` "
                     r"\(v([^)]+)\) with the following Python (?:implementation|ABI) tags?: ((?:`[^`]+`,? ?)+)", text)
    if tags:
        needs, package, version, found = tags.groups()
        pythons = sorted({_python_of(t) for t in re.findall(r"`([^`]+)`", found)} - {None}, key=_version_key)
    else:
        bare = re.search(r"Because (\S+?)==(\S+) has no wheels with a matching Python (?:implementation|ABI) tag "
                         r"\(e\.g\., `cp(\d)(\d+)`\)", text)
        if not bare:
            return None
        package, version, major, minor = bare.groups()
        needs, pythons = f"{major}.{minor}", []
    where = _found_on(text, package) or _indexes(step.command)
    has = f"wheels for Python {', '.join(pythons)} only" if pythons else "no wheel for it"
    return DockerError(
        "no-wheel-for-python", f"{package} {version} on {where} has {has}; the plan needs Python {needs}",
        f"add the cp{needs.replace('.', '')} wheels to the mirror, or build for a Python it has "
        f"(--python X.Y with a --base-image of that Python)",
        context={"package": package, "version": version, "pythons": pythons, "plan_python": needs})


def _tls(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    text = step.text
    match = (re.search(r"invalid peer certificate: (\w+)", text)
             or re.search(r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: ([^(]+?) \(_ssl", text))
    if not match:
        return None
    url = _failed_url(step)
    host = _host(url) if url else _pip_pool_host(text) or "the index"
    hint = (f"the CA bundle given to the build does not vouch for {host}'s certificate: pass the bundle with "
            "your proxy's CA (--ca-cert FILE, or --host-ca)" if facts.ca_cert else
            f"pass --ca-cert FILE (or --host-ca) so the build trusts the CA that signed {host}'s certificate "
            "(an intercepting proxy's)")
    return DockerError("tls-untrusted", f"downloading {_package(step, url)} from {host} failed TLS verification "
                       f"({match.group(1).strip()})", hint, context=_where(step, url))


def _proxy(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    text = step.text
    pip = re.search(r"ProxyError\('([^']+)'", text)
    url = _failed_url(step)
    proxy = _proxy_for(url, facts.proxies) if url else None
    if pip:
        why = pip.group(1).rstrip(".").lower()
    elif proxy and (cause := _connection_cause(text)) is not None:
        why = f"{cause[0]} (the build reaches {_host(url)} through the proxy)"
    elif re.search(r"unsuccessful tunnel|tunnel error", text, re.IGNORECASE):
        why = "the proxy refused the tunnel"
    else:
        return None
    proxy = proxy or next((v for k, v in sorted(facts.proxies.items()) if v), None)
    named = f"the proxy {redact_url(proxy)}" if proxy else "the build's proxy"
    return DockerError(
        "proxy-unreachable", f"downloading {_package(step, url)} failed: {named}: {why}",
        "check --http-proxy/--https-proxy (HTTP(S)_PROXY); list hosts the build reaches directly (a loopback "
        "mirror) in --no-proxy", context=_where(step, url))


def _connection(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    text = step.text
    url = _failed_url(step)
    status = (re.search(r"HTTP status (?:client|server) error \((\d+)[^)]*\) for url \((\S+?)\)", text)
              or re.search(r"HTTP error (\d+) while getting (\S+)", text)
              or re.search(r"(\d{3}) (?:Client|Server) Error: [^:]*for url: (\S+)", text))
    if status:
        code, url = status.group(1), status.group(2)
        why, hint = f"HTTP {code}", f"{_host(url)} answered HTTP {code}: check the URL and the mirror's access rules"
    else:
        cause = _connection_cause(text)
        if cause is None:
            return None
        why, kind = cause
        hint = _connection_hint(kind, _host(url) if url else "the index", url)
    return DockerError("download-failed", f"could not download {_package(step, url)} from "
                       f"{_host(url) if url else 'the index'}: {why}", hint, context=_where(step, url))


def _not_found(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    text = step.text
    ignored = re.search(r"The repository located at (\S+) is not a trusted or secure host and is being ignored", text)
    if ignored:
        host = ignored.group(1)
        return DockerError("index-insecure", f"pip ignored the index at {host}: it is plain http and not localhost",
                           "serve the mirror over https, or reach it on loopback (127.0.0.1) with --network host",
                           context={"host": host})
    uv = re.search(r"Because (\S+) was not found in the package registry", text)
    pip = re.search(r"Could not find a version that satisfies the requirement (\S+) \(from versions: none\)", text)
    if not (uv or pip):
        return None
    package = uv.group(1) if uv else pip.group(1)
    indexes = _indexes(step.command) or _looking_in(text) or "the build's indexes"
    return DockerError(
        "package-not-found", f"{package} is not on {indexes}",
        "the index answered but lists no such package: check that --index-url/--torch-index-url/--find-links "
        "name the mirror's simple index (…/simple) and that it mirrors this package",
        context={"package": package, "step": step.stage})


def _base_pull(step: FailedStep, facts: BuildFacts) -> EnvbuilderError | None:
    if step.stage != "internal" or not step.command.startswith("load metadata for "):
        return None
    image = step.command[len("load metadata for "):].strip()
    if re.search(r"pull access denied|repository does not exist|manifest unknown|not found", step.error):
        return DockerError("image-not-found", f"the base image {image} is not on this machine, and the registry "
                           f"does not have it", local_base_hint(facts.local_bases, facts.plan_python, reachable=True),
                           context={"image": image})
    if not re.search(r"dial tcp|no such host|i/o timeout|TLS handshake timeout|connection refused|"
                     r"connection reset|failed to do request", step.error):
        return None
    host = re.search(r"lookup (\S+?)(?: on \S+)?: no such host", step.error)
    why = f"{host.group(1)} does not resolve" if host else step.error.rsplit(": ", 1)[-1]
    return DockerError("registry-unreachable", f"could not pull the base image {image}: {why}",
                       local_base_hint(facts.local_bases, facts.plan_python), context={"image": image})


def local_base_hint(bases: Sequence[tuple[str, str]], python: str | None, *, reachable: bool = False) -> str:
    """Name the local base images that would serve as --base-image, the plan's Python first."""
    first = "check the image name" if reachable else "no registry is reachable"
    if not bases:
        return f"{first}; make a local base with `envbuilder base bootstrap`, then pass --base-image"
    ordered = sorted(bases, key=lambda b: (b[1] != python, b[0]))
    named = ", ".join(f"--base-image {image} (Python {py})" for image, py in ordered[:3])
    if ordered[0][1] == python:
        return f"{first}; a local base has the plan's Python: {named}"
    return f"{first}; a local base would serve (the plan then uses its Python): {named}"


_CAUSES = (_base_python, _no_wheel_for_python, _tls, _proxy, _connection, _not_found, _base_pull)


# --- reading pip's and uv's lines ---------------------------------------------------------------------------
def _connection_cause(text: str) -> tuple[str, str] | None:
    """(what happened, kind) for a failed connection in pip's or uv's words."""
    dns = re.search(r"failed to lookup address information: ([^`]+?)(?:$| Caused by| error)|"
                    r"\[Errno -[235]\] ([^')]+)|NameResolutionError", text)
    if dns:
        return f"the host does not resolve ({(dns.group(1) or dns.group(2) or 'name resolution failed').strip()})", "dns"
    if re.search(r"Connection refused", text):
        return "connection refused", "refused"
    if re.search(r"timed out|ConnectTimeoutError|operation timed out", text, re.IGNORECASE):
        return "the connection timed out", "timeout"
    if re.search(r"Connection reset by peer|connection closed before message completed", text, re.IGNORECASE):
        return "the connection was reset", "reset"
    return None


def _connection_hint(kind: str, host: str, url: str | None) -> str:
    if kind == "dns":
        known = {"download.pytorch.org": "--torch-index-url", "pypi.org": "--index-url", "files.pythonhosted.org": "--index-url"}
        if host in known:
            return (f"this network cannot reach {host}: point {known[host]} at a mirror (a wheel folder served with "
                    "`envbuilder index serve` works)")
        return f"check the host name in the URL ({redact_url(url) if url else host}); the build resolves names as Docker's network does"
    if kind == "refused":
        loopback = host.split(":")[0] in ("127.0.0.1", "localhost", "::1", "[::1]")
        return (f"nothing listens at {host}: start the mirror (`envbuilder index serve`), check the port"
                + ("; a loopback mirror needs the build on the host network (--network host)" if loopback else ""))
    return f"{host} did not answer in time: check the network or the proxy (--https-proxy), or use a mirror"


def _failed_url(step: FailedStep) -> str | None:
    """The URL the installer failed on: uv's "Failed to fetch: `URL`", pip's "Could not fetch URL URL:" or
    a retried pip request (its path, on the index it was looking in)."""
    text = step.text
    for pattern in (r"Failed to (?:fetch|download):? `([^`]+)`", r"error sending request for url \((\S+?)\)",
                    r"Could not fetch URL (\S+): ", r"HTTP status (?:client|server) error \(\d+[^)]*\) for url \((\S+?)\)"):
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    retried = re.search(r"after connection broken by .*?\)': (\S+)", text)
    if retried:
        path = retried.group(1)
        if "://" in path:
            return path
        pool = _pip_pool_host(text)
        base = _looking_in(text)
        if pool:
            return f"https://{pool}{path}"
        if base:
            parts = urlsplit(base)
            return f"{parts.scheme}://{parts.netloc}{path}"
    return None


def _pip_pool_host(text: str) -> str | None:
    match = re.search(r"HTTPS?ConnectionPool\(host='([^']+)', port=(\d+)\)", text)
    if not match:
        return None
    host, port = match.groups()
    return host if port in ("80", "443") else f"{host}:{port}"


def _looking_in(text: str) -> str | None:
    match = re.search(r"Looking in indexes: (\S+)", text)
    return redact_url(match.group(1).rstrip(",")) if match else None


def _found_on(text: str, package: str) -> str | None:
    match = re.search(rf"`{re.escape(package)}` was found on (\S+?),", text)
    return redact_url(match.group(1)) if match else None


def _indexes(command: str) -> str:
    """The indexes and find-links a failing install command names, in its order."""
    urls = [redact_url(u) for u in re.findall(r"--(?:index-url|extra-index-url|find-links)[ =](\S+)", command)]
    return ", ".join(dict.fromkeys(urls))


def _package(step: FailedStep, url: str | None) -> str:
    """The package being fetched: the simple-index page or file it failed on, else what pip could not find."""
    if url:
        path = urlsplit(url).path.rstrip("/")
        name = path.rsplit("/", 1)[-1]
        if name.endswith((".whl", ".tar.gz", ".zip")):
            return name.split("-", 1)[0]
        if name and name not in ("simple", "cpu") and "." not in name:
            return name
    pip = re.search(r"No matching distribution found for (\S+)", step.text)
    if pip:
        return pip.group(1)
    return f"the {step.stage} step's packages" if step.stage else "packages"


def _host(url: str | None) -> str:
    if not url:
        return "the index"
    netloc = urlsplit(url).netloc
    return netloc.rsplit("@", 1)[-1] or url


def _proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    """The proxy a request to `url` goes through, honouring NO_PROXY as curl, pip and uv read it."""
    lowered = {k.lower(): v for k, v in proxies.items() if v}
    parts = urlsplit(url)
    proxy = lowered.get(f"{parts.scheme}_proxy") or lowered.get("all_proxy")
    if not proxy:
        return None
    host = (parts.hostname or "").lower()
    for entry in (e.strip().lower() for e in lowered.get("no_proxy", "").split(",")):
        entry = entry.split(":")[0].lstrip(".")
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return None
    return proxy


def _where(step: FailedStep, url: str | None) -> dict:
    return {"url": redact_url(url) if url else None, "host": _host(url) if url else None, "step": step.stage}


def plan_python_of(dockerfile: str) -> str | None:
    """The plan's Python, from the label a rendered Dockerfile carries (an edited one may not)."""
    match = re.search(r'org\.envbuilder\.python="([\d.]+)"', dockerfile)
    return match.group(1) if match else None


def _python_of(tag: str) -> str | None:
    match = re.fullmatch(r"cp(\d)(\d+)\w*", tag)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


__all__ = ["BuildFacts", "FailedStep", "explain_build_failure", "failed_step", "local_base_hint", "plan_python_of"]

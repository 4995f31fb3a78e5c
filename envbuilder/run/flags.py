"""The container options users type on `run` and `shell` beyond the job's own: --publish, --cpus, --memory and
--env-file, parsed into values RunOptions carries (envbuilder.run.spec puts them in the RunSpec).

They are flags only, by design: a project's config cannot set them, so a project from a git URL can never
publish a port on the host or lift the limits its user set (docs/security.md). Pure but for reading --env-file
files; variable names follow the one rule in envbuilder.quantities. Must not import docker, pydantic, the run
store or the CLI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from envbuilder.errors import EnvbuilderError
from envbuilder.quantities import is_env_name, parse_size_bytes

MIN_MEMORY = 6 * 1024**2  # the engine refuses a smaller --memory ("Minimum memory limit allowed is 6MB")


class PublishedPort(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """`--publish [IP:]HOST:CONTAINER[/tcp|udp]`: a container port reachable on the host, as `docker run -p`."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""  # "": every interface, Docker's default for -p

    def as_tuple(self) -> tuple[str, int, int, str]:
        return (self.host_ip, self.host_port, self.container_port, self.protocol)

    def __str__(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"{host + ':' if host else ''}{self.host_port}:{self.container_port}/{self.protocol}"



def load_env_files(paths: Iterable[str | os.PathLike[str]], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The variables of `--env-file` files, later files over earlier ones; every bad line of every file is
    reported at once, each with its file and line number."""
    env: dict[str, str] = {}
    problems: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")  # -sig: a BOM left by a Windows editor is no name
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise EnvbuilderError("env-file-unreadable", f"--env-file {path}: {reason}",
                                  "pass a readable text file of NAME=VALUE lines", {"path": str(path)}) from None
        found, bad = parse_env_file(text, environ)
        env.update(found)
        problems += [f"{path}:{line}: {why}" for line, why in bad]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise EnvbuilderError("bad-env-file", f"--env-file has lines that are not NAME=VALUE: {shown}",
                              "write one NAME=VALUE per line (NAME: letters, digits, _; not starting with a digit); "
                              "# starts a comment", {"problems": problems})
    return env


def parse_env_file(text: str, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """(variables, [(line number, what is wrong)]) of `docker run --env-file` text: NAME=VALUE lines, the value
    taken as written (quotes included, as Docker does); a bare NAME takes the variable from `environ` (skipped
    when unset); blank lines and lines starting with # are ignored; leading whitespace is dropped."""
    env: dict[str, str] = {}
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not is_env_name(name):
            shown = name if len(name) <= 40 else name[:37] + "..."  # a value never shows: it may be a secret
            bad.append((number, f"{shown!r} is not a variable name" if sep else f"{shown!r} is not NAME=VALUE"))
        elif sep:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env, bad


def parse_publish_arg(text: str) -> PublishedPort:
    """`[IP:]HOST:CONTAINER[/tcp|udp]` (an IPv6 address in brackets) from the command line."""
    spec, _, protocol = text.strip().partition("/")
    protocol = protocol.lower() or "tcp"
    host_ip = ""
    if spec.startswith("["):
        address, bracket, spec = spec[1:].partition("]")
        host_ip, spec = address, spec.removeprefix(":") if bracket else "!"
    parts = spec.split(":")
    if len(parts) == 3 and not host_ip:
        host_ip, parts = parts[0], parts[1:]
    if protocol not in ("tcp", "udp") or len(parts) != 2 or not all(_port(p) for p in parts) or not _ip(host_ip):
        raise EnvbuilderError("bad-publish", f"--publish {text!r} is not [IP:]HOST:CONTAINER[/tcp|udp]",
                              "e.g. --publish 6006:6006 or --publish 127.0.0.1:8888:8888 (ports 1-65535)")
    return PublishedPort(int(parts[0]), int(parts[1]), protocol, host_ip)


def _ip(text: str) -> bool:
    import ipaddress

    try:
        return not text or bool(ipaddress.ip_address(text))
    except ValueError:
        return False


def _port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def check_publish(ports: Sequence[PublishedPort]) -> tuple[PublishedPort, ...]:
    seen = [(p.host_ip, p.host_port, p.protocol) for p in ports]
    dupes = sorted({f"{p[1]}/{p[2]}" for p in seen if seen.count(p) > 1})
    if dupes:
        raise EnvbuilderError("bad-publish", f"host port {', '.join(dupes)} is published twice",
                              "give each --publish its own host port")
    return tuple(ports)


def parse_cpus(text: str | float | None) -> float | None:
    """`--cpus 1.5`: how many CPUs' worth of time the job may use (`docker run --cpus`)."""
    if text is None:
        return None
    try:
        cpus = float(text)
    except ValueError:
        cpus = float("nan")
    if not (cpus >= 0.01 and cpus < float("inf")):
        raise EnvbuilderError("bad-cpus", f"--cpus {text!r}: expected a number of CPUs, at least 0.01",
                              "e.g. --cpus 2 or --cpus 0.5")
    return cpus


def parse_memory(text: str | None) -> str | None:
    """`--memory 4g`: the job's memory limit (`docker run --memory`), in Docker's size syntax; at least 6 MiB."""
    if text is None:
        return None
    try:
        size = parse_size_bytes(text)
    except ValueError:
        size = -1
    if size < MIN_MEMORY:
        raise EnvbuilderError("bad-memory", f"--memory {text!r}: expected a size of at least 6m in Docker's syntax",
                              "e.g. --memory 4g or --memory 512m")
    return text.strip().lower()

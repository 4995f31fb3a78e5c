"""`envbuilder run PATH --image IMAGE [OPTIONS] -- CMD ...` parsed without click, so the run starts sooner.

A bare `docker run` costs about 0.35 s; `envbuilder run --image` does the same and records the run, and
importing click alone would add about 25 ms to it. This module reads that one shape of command line with
RUN_OPTIONS, a table derived from the click command (envbuilder.cli.run_cmd.run) and kept equal to it by
tests/test_runargs.py, which also regenerates it (`python tests/test_runargs.py --write`). Anything else (a job
name, an option it does not know, a value click would refuse or reword, -h) is left to click: plain_run answers
None and nothing has happened yet. The run itself is envbuilder.cli.run_flow.run_command, as with click.

Must not import click, pydantic or the resolver.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from envbuilder.cli.group_args import group_args

# (option strings, parameter name, kind, default, choices); kinds: "value", "multiple", "flag", "switch" (a
# --x/--no-x pair: the first strings turn it on, the choices the off ones), "path" (a folder path).
# Generated from the click command by tests/test_runargs.py; edit the click options, then regenerate.
RUN_OPTIONS: tuple[tuple[tuple[str, ...], str, str, Any, tuple[str, ...]], ...] = (
    (("--target-os",), "target_os", "value", None, ("linux", "windows", "macos")),
    (("--target-arch",), "target_arch", "value", None, ("x86_64", "aarch64", "arm64")),
    (("--gpu",), "gpu", "value", None, ("none", "nvidia", "amd", "apple")),
    (("--cuda-driver",), "cuda_driver", "value", None, ()),
    (("--compute-capability",), "compute_capability", "multiple", (), ()),
    (("--gpu-arch",), "gpu_arch", "multiple", (), ()),
    (("--python",), "python_pin", "value", None, ()),
    (("--extra",), "extras", "multiple", (), ()),
    (("--cuda-compat",), "cuda_compat", "value", "auto", ("auto", "strict", "minor")),
    (("--flavor",), "flavor", "value", None, ()),
    (("--with",), "with_packages", "multiple", (), ()),
    (("--with-requirements",), "with_files", "multiple", (), ()),
    (("--offline",), "offline", "flag", False, ()),
    (("--index-url",), "index_url", "value", None, ()),
    (("--extra-index-url",), "extra_index_urls", "multiple", (), ()),
    (("--torch-index-url",), "torch_index_url", "value", None, ()),
    (("--find-links",), "find_links", "multiple", (), ()),
    (("--ca-cert",), "ca_cert", "value", None, ()),
    (("--host-ca",), "host_ca", "switch", None, ("--no-host-ca",)),
    (("--http-proxy",), "http_proxy", "value", None, ()),
    (("--https-proxy",), "https_proxy", "value", None, ()),
    (("--no-proxy",), "no_proxy", "value", None, ()),
    (("--network",), "network_mode", "value", None, ("default", "host", "none")),
    (("--base-image",), "base_image", "value", None, ()),
    (("--image",), "image", "value", None, ()),
    (("--mount",), "mounts", "multiple", (), ()),
    (("--artifacts",), "artifacts", "path", None, ()),
    (("--env",), "env", "multiple", (), ()),
    (("--env-file",), "env_files", "multiple", (), ()),
    (("--gpus",), "gpus", "value", None, ()),
    (("--publish", "-p"), "publish", "multiple", (), ()),
    (("--cpus",), "cpus", "value", None, ()),
    (("--memory",), "memory", "value", None, ()),
    (("--rw",), "rw", "flag", False, ()),
    (("--trust",), "trust", "multiple", (), ()),
    (("--allow-mounts",), "allow_mounts", "flag", False, ()),
    (("--ref",), "ref", "value", None, ()),
    (("--resume",), "resume", "value", None, ()),
    (("--stop-on-nan",), "stop_on_nan", "flag", False, ()),
    (("--detach", "-d"), "detach", "flag", False, ()),
    (("--interactive", "-i"), "interactive", "flag", False, ()),
    (("--tty", "-t"), "tty", "flag", False, ()),
    (("--json",), "as_json", "flag", False, ()),
)
# Options whose default comes from the environment when the flag is absent (click's envvar=).
RUN_OPTION_ENVVARS = {"offline": "ENVBUILDER_OFFLINE"}
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}  # click's BOOL
_TARGET = ("target_os", "target_arch", "gpu", "cuda_driver", "compute_capability", "gpu_arch", "python_pin", "extras",
           "cuda_compat", "flavor", "with_packages", "with_files", "offline")
_NETWORK = ("index_url", "extra_index_urls", "torch_index_url", "find_links", "ca_cert", "host_ca", "http_proxy",
            "https_proxy", "no_proxy", "network_mode", "base_image")


class PlainRun(NamedTuple):  # not a dataclass, which costs ~1 ms to define: this is on `run --image`'s path
    """A `run --image ... -- CMD` command line, parsed: the group's options and the run's values."""

    data_dir: str | None
    docker: str | None
    verbose: bool
    path: str
    values: dict[str, Any]  # parameter name -> value, as click would pass them
    command: tuple[str, ...]


def plain_run(args: Sequence[str]) -> PlainRun | None:
    """The parsed command line when it is a plain `run --image ... -- CMD`, else None (click parses it)."""
    group = group_args(args)
    rest = list(group.rest) if group is not None else []
    if not rest or rest[0] != "run" or "--" not in rest:
        return None
    own, command = rest[1: rest.index("--")], tuple(rest[rest.index("--") + 1:])
    parsed = _run_values(own)
    if parsed is None or not command:
        return None
    path, values = parsed
    if not values["image"]:
        return None  # a project build first: the resolver is loaded anyway, and click costs little beside it
    return PlainRun(group.data_dir, group.docker, group.verbose, path, values, command)


_BY_STRING = {s: option for option in RUN_OPTIONS for s in (*option[0], *(option[4] if option[2] == "switch" else ()))}


def _run_values(own: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
    values: dict[str, Any] = {name: default for _, name, _, default, _ in RUN_OPTIONS}
    given: set[str] = set()
    positional: list[str] = []
    tokens = list(own)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("-") or token == "-":
            positional.append(token)
            continue
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        option = _BY_STRING.get(name)
        if option is None:
            return None  # --help, a combined -it, an option of a job: click's to parse
        strings, dest, kind, _, choices = option
        given.add(dest)
        if kind in ("flag", "switch"):
            if eq:
                return None
            values[dest] = name in strings
            continue
        if eq:
            value = inline
        elif tokens and not tokens[0].startswith("-"):
            value = tokens.pop(0)
        else:
            return None
        if choices and value not in choices:
            return None
        if kind == "multiple":
            values[dest] = (*values[dest], value)
        elif kind == "path":
            if os.path.exists(value) and not os.path.isdir(value):
                return None
            values[dest] = Path(value)
        else:
            values[dest] = value
    for dest, variable in RUN_OPTION_ENVVARS.items():
        raw = os.environ.get(variable)
        if dest not in given and raw:
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                return None
            values[dest] = word in _TRUE
    if len(positional) != 1:
        return None
    return positional[0], values


def run_plain(parsed: PlainRun) -> int | None:
    """Carry out the parsed run as `envbuilder run` does (envbuilder.cli.run_flow.run_command), its failures said
    by envbuilder.cli.failures. None, before anything ran, when a flag's value needs click's words."""
    from envbuilder.cli.failures import guarded
    from envbuilder.cli.network_flags import network_layers
    from envbuilder.cli.run_flow import check_mode, run_command
    from envbuilder.errors import EnvbuilderError
    from envbuilder.settings import Settings

    values = dict(parsed.values)
    settings = Settings.from_env(parsed.data_dir, parsed.docker)
    try:
        _, defaults = network_layers(settings, **{name: values.pop(name) for name in _NETWORK})
        mode = check_mode(values.pop("detach"), values.pop("interactive"), values.pop("tty"))
    except EnvbuilderError:
        return None
    for name in _TARGET:  # only a project's own image is resolved: run --image never reads them
        values.pop(name)
    container = {**{k: values.pop(k) for k in ("mounts", "artifacts", "env", "env_files", "gpus", "publish", "cpus",
                                                 "memory", "rw", "trust", "allow_mounts")},
                 "network_mode": defaults.value("network")}
    return guarded(lambda: run_command(
        settings=settings, verbose=parsed.verbose, path=parsed.path, job=None, args=(), command=parsed.command,
        image=values.pop("image"), ref=values.pop("ref"), resume=values.pop("resume"),
        stop_on_nan=values.pop("stop_on_nan"), mode=mode, target=_unused, network=_unused,
        as_json=values.pop("as_json"), container=container) or 0, _argv(parsed))


def _unused():
    raise AssertionError("run --image resolves nothing")


def _argv(parsed: PlainRun) -> list[str]:
    """What guarded reads: -v and --json before the command's `--`."""
    own = ["-v"] if parsed.verbose else []
    return [*own, *(["--json"] if parsed.values.get("as_json") else []), "--", *parsed.command]

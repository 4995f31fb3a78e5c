"""Locks that need the outside world: resolving a plan's full package set by running `uv pip compile`, and
reading a lock file for a locked build.

render/lock.py owns everything pure about locks (the text, uv's argument list, parsing uv's output and lock
files); this module only runs uv and reads files, then hands the text to it. Must not import docker or the CLI.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from envbuilder.errors import EnvbuilderError
from envbuilder.render import RenderOptions
from envbuilder.render.lock import check_lock, compile_argv, lock_requirements, parse_compile_output, read_lock
from envbuilder.render.network import LockedPackage
from envbuilder.resolve.plan import Plan

RESOLVE_TIMEOUT_S = 900.0


def find_uv() -> str | None:
    """uv next to this interpreter (the venv envbuilder runs in), else the first on PATH."""
    beside = Path(sys.executable).parent / ("uv.exe" if os.name == "nt" else "uv")
    return str(beside) if beside.is_file() else shutil.which("uv")


def resolve_lock(plan: Plan, options: RenderOptions, *, uv: str | None = None, timeout: float = RESOLVE_TIMEOUT_S,
                 netrc: Path | None = None) -> tuple[LockedPackage, ...]:
    """Resolve the plan's full package set for its target with hashes, by running `uv pip compile`.
    netrc: index credentials for uv (its NETRC), so that no URL on its command line carries them."""
    from envbuilder.proc import run_command

    uv = uv or find_uv()
    if not uv:
        raise EnvbuilderError("uv-missing", "uv is needed to resolve a lock and was not found",
                              "install it (`pip install uv`) or put it on PATH")
    env = {"UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    if options.ca_cert_path:
        env.update(SSL_CERT_FILE=options.ca_cert_path)
    if netrc is not None:
        env.update(NETRC=str(netrc))
    requirements = "".join(f"{r}\n" for r in lock_requirements(plan, options))
    result = run_command(compile_argv(plan, options, uv), timeout=timeout, env=env, stdin_data=requirements)
    if result.timed_out:
        raise EnvbuilderError("lock-timeout", f"uv pip compile did not finish in {timeout:.0f}s",
                              "check that the indexes are reachable")
    if result.missing:
        raise EnvbuilderError("uv-missing", f"could not run {uv}: {result.stderr}", "install uv or put it on PATH")
    if not result.ok:
        tail = result.tail(15)
        hint = "check --index-url/--torch-index-url and the project's pins"
        if re.search(r"certificate|UnknownIssuer|invalid peer", tail, re.IGNORECASE):
            hint = "pass --ca-cert FILE (or --host-ca) so uv trusts your proxy's certificate authority"
        raise EnvbuilderError("lock-unresolvable", f"uv pip compile failed: {tail}", hint,
                              context={"argv": list(result.argv)})
    return parse_compile_output(result.stdout)


def load_lock(path: Path, plan: Plan) -> tuple[LockedPackage, ...]:
    """Read a requirements-format lock file and check it against the plan (see render.lock.check_lock)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise EnvbuilderError("lock-unreadable", f"cannot read {path}: {exc.strerror}",
                              "pass the file `envbuilder lock -o` wrote") from None
    return check_lock(plan, read_lock(text, str(path)), str(path))

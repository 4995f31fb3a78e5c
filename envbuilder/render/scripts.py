"""Render a Plan as an install script: bash (Linux, macOS) and PowerShell (Windows). Pure; no I/O.

The scripts make a virtual environment with the plan's Python, install the same pins from the same
indexes as the Dockerfile (see network.install_steps), and end by checking the installed torch.
They use pip, which every Python has; pip has no index priority, so torch's exact +local pin is what
keeps it on the flavour's build. Every interpolated value is quoted (quoting.sh_quote / ps_quote).
Must not import docker or proc.
"""

from __future__ import annotations

import json
import re

from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.plan import Plan, plan_digest
from envbuilder.render import RenderOptions
from envbuilder.render.network import InstallStep, default_index_url, install_steps
from envbuilder.render.quoting import one_line, ps_quote, sh_quote

DEFAULT_SCRIPT_VENV = "runtime/venv"


def render_bash(plan: Plan, options: RenderOptions) -> str:
    """A bash script that installs `plan` into a venv (options.venv, default runtime/venv)."""
    q = sh_quote
    lines = [
        "#!/usr/bin/env bash",
        *_header(plan, "#"),
        "set -euo pipefail",
        "",
        *(f"{name}={q(value)}" for name, value in zip(("VENV", "PYTHON_VERSION", "TORCH_EXPECTED"),
                                                       _script_values(plan, options))),
    ]
    if options.ca_cert_path:
        lines += [
            "# The CA bundle that signs this network's TLS (an intercepting proxy or a private index).",
            f"export PIP_CERT={q(options.ca_cert_path)}",
            'export SSL_CERT_FILE="$PIP_CERT" REQUESTS_CA_BUNDLE="$PIP_CERT"',
        ]
    lines += [
        "",
        "# The first interpreter with the plan's X.Y: $ENVBUILDER_PYTHON, pythonX.Y, python3, python.",
        "find_python() {",
        '    local candidate',
        '    for candidate in "${ENVBUILDER_PYTHON:-}" "python${PYTHON_VERSION}" python3 python; do',
        '        [ -n "$candidate" ] || continue',
        '        command -v "$candidate" >/dev/null 2>&1 || continue',
        '        if [ "$("$candidate" -c \'import sys; print(*sys.version_info[:2], sep=chr(46))\' 2>/dev/null)" = "$PYTHON_VERSION" ]; then',
        '            printf \'%s\\n\' "$candidate"',
        "            return 0",
        "        fi",
        "    done",
        "    return 1",
        "}",
        'if ! PYTHON="$(find_python)"; then',
        '    echo "envbuilder: Python ${PYTHON_VERSION} not found (tried \\$ENVBUILDER_PYTHON, python${PYTHON_VERSION}, python3, python)" >&2',
        "    exit 1",
        "fi",
        "",
        'echo "envbuilder: creating ${VENV} with $("$PYTHON" --version 2>&1)"',
        '"$PYTHON" -m venv -- "$VENV"',
        'VENV_PYTHON="$VENV/bin/python"',
        '[ -x "$VENV_PYTHON" ] || VENV_PYTHON="$VENV/Scripts/python.exe"  # Git Bash on Windows',
        "",
    ]
    steps = install_steps(plan, options)
    lines += _bash_pip("pip", ("--upgrade", "pip"), steps[0], options, with_extras=False)
    for step in steps:
        lines += ["", f"echo {q('envbuilder: installing ' + ' '.join(step.requirements))}"]
        lines += _bash_pip(step.name, step.requirements, step, options)
    lines += [
        "",
        'installed="$("$VENV_PYTHON" -c \'import torch; print(torch.__version__)\')"',
        'if [ "$installed" != "$TORCH_EXPECTED" ]; then',
        '    echo "envbuilder: expected torch ${TORCH_EXPECTED}, found ${installed}" >&2',
        "    exit 1",
        "fi",
        'echo "envbuilder: torch ${installed} installed in ${VENV}"',
    ]
    return "\n".join(lines) + "\n"


def _script_values(plan: Plan, options: RenderOptions) -> tuple[str, str, str]:
    """What both scripts set first: the venv folder, the plan's X.Y Python and the torch version to expect."""
    return options.venv or DEFAULT_SCRIPT_VENV, _python_version(plan), plan.torch.local


def render_powershell(plan: Plan, options: RenderOptions) -> str:
    """A PowerShell script (Windows PowerShell 5.1 or pwsh 7) that installs `plan` into a venv."""
    q = ps_quote
    lines = [
        *_header(plan, "#"),
        "$ErrorActionPreference = 'Stop'",
        "Set-StrictMode -Version 3.0",
        "",
        *(f"${name} = {q(value)}" for name, value in zip(("Venv", "PythonVersion", "TorchExpected"),
                                                          _script_values(plan, options))),
    ]
    if options.ca_cert_path:
        lines += [
            "# The CA bundle that signs this network's TLS (an intercepting proxy or a private index).",
            f"$env:PIP_CERT = {q(options.ca_cert_path)}",
            "$env:SSL_CERT_FILE = $env:PIP_CERT",
            "$env:REQUESTS_CA_BUNDLE = $env:PIP_CERT",
        ]
    lines += [
        "",
        "# Windows PowerShell 5.1 drops the double quotes inside native arguments (PEP 508 markers use them),",
        "# so no project value travels on a command line: each goes through an environment variable as JSON.",
        "$PipFromEnv = 'import json, os, runpy, sys; sys.argv = [''pip''] + json.loads(os.environ[''ENVBUILDER_PIP_ARGS'']); "
        "runpy.run_module(''pip'', run_name=''__main__'', alter_sys=True)'",
        "$VenvFromEnv = 'import os, venv; venv.create(os.environ[''ENVBUILDER_VENV''], with_pip=True)'",
        "",
        "# Native commands do not stop the script on failure; check every exit code.",
        "function Invoke-Checked {",
        "    param([string]$Exe, [string[]]$Arguments)",
        "    & $Exe @Arguments",
        "    if ($LASTEXITCODE -ne 0) { throw \"envbuilder: $Exe failed with exit code $LASTEXITCODE\" }",
        "}",
        "",
        "# The first interpreter with the plan's X.Y: $env:ENVBUILDER_PYTHON, the py launcher, python.",
        "$Python = $null",
        "$PythonArgs = @()",
        "$Candidates = @()",
        "if ($env:ENVBUILDER_PYTHON) { $Candidates += ,@($env:ENVBUILDER_PYTHON) }",
        "$Candidates += ,@('py', \"-$PythonVersion\")",
        "$Candidates += ,@('python')",
        "foreach ($Candidate in $Candidates) {",
        "    $Exe = $Candidate[0]",
        "    $Rest = @($Candidate | Select-Object -Skip 1)",
        "    if (-not (Get-Command $Exe -ErrorAction SilentlyContinue)) { continue }",
        "    # Windows PowerShell turns a native command's stderr into a (here terminating) error: catch it.",
        "    try { $Found = & $Exe @Rest -c 'import sys; print(*sys.version_info[:2], sep=chr(46))' 2>$null } catch { continue }",
        "    if ($LASTEXITCODE -eq 0 -and \"$Found\".Trim() -eq $PythonVersion) { $Python = $Exe; $PythonArgs = $Rest; break }",
        "}",
        "if (-not $Python) { throw \"envbuilder: Python $PythonVersion not found (tried `$env:ENVBUILDER_PYTHON, py -$PythonVersion, python)\" }",
        "",
        "Write-Host \"envbuilder: creating $Venv with Python $PythonVersion\"",
        "$env:ENVBUILDER_VENV = $Venv",
        "Invoke-Checked $Python ($PythonArgs + @('-c', $VenvFromEnv))",
        "$VenvPython = Join-Path $Venv 'Scripts/python.exe'",
        "if (-not (Test-Path -LiteralPath $VenvPython)) { $VenvPython = Join-Path $Venv 'bin/python' }",
        "",
    ]
    steps = install_steps(plan, options)
    lines += _ps_pip(("--upgrade", "pip"), steps[0], options, with_extras=False)
    for step in steps:
        lines += ["", f"Write-Host {q('envbuilder: installing ' + ' '.join(step.requirements))}"]
        lines += _ps_pip(step.requirements, step, options)
    lines += [
        "",
        "$Installed = (& $VenvPython -c 'import torch; print(torch.__version__)')",
        "if ($LASTEXITCODE -ne 0) { throw 'envbuilder: torch does not import' }",
        "$Installed = \"$Installed\".Trim()",
        "if ($Installed -ne $TorchExpected) { throw \"envbuilder: expected torch $TorchExpected, found $Installed\" }",
        "Write-Host \"envbuilder: torch $Installed installed in $Venv\"",
    ]
    return "\r\n".join("\r\n".join(line.split("\n")) for line in lines) + "\r\n"


def _pip_args(requirements, step: InstallStep, options: RenderOptions, with_extras: bool = True) -> list[str]:
    args = ["--index-url", step.index_url or default_index_url(options)]
    if with_extras:
        for url in step.extra_index_urls:
            args += ["--extra-index-url", url]
    for link in step.find_links:
        args += ["--find-links", link]
    return [*args, *requirements]


def _bash_pip(name: str, requirements, step: InstallStep, options: RenderOptions, with_extras: bool = True) -> list[str]:
    del name
    args = _pip_args(requirements, step, options, with_extras)
    out = ['"$VENV_PYTHON" -m pip install \\']
    pairs = _group_flags(args)
    for i, part in enumerate(pairs):
        tail = " \\" if i < len(pairs) - 1 else ""
        out.append("    " + " ".join(sh_quote(a) for a in part) + tail)
    return out


def _ps_pip(requirements, step: InstallStep, options: RenderOptions, with_extras: bool = True) -> list[str]:
    args = ["install", *_pip_args(requirements, step, options, with_extras)]
    pairs = _group_flags(args)
    body = ",\n    ".join(", ".join(json.dumps(a) for a in part) for part in pairs)
    return [f"$env:ENVBUILDER_PIP_ARGS = {ps_quote('[' + chr(10) + '    ' + body + chr(10) + ']')}",
            "Invoke-Checked $VenvPython @('-c', $PipFromEnv)"]


def _group_flags(args: list[str]) -> list[list[str]]:
    """[--flag, value] pairs and single requirements, one per line."""
    groups: list[list[str]] = []
    i = 0
    while i < len(args):
        if args[i].startswith("--") and i + 1 < len(args) and args[i] in ("--index-url", "--extra-index-url", "--find-links"):
            groups.append([args[i], args[i + 1]])
            i += 2
        else:
            groups.append([args[i]])
            i += 1
    return groups


def _header(plan: Plan, comment: str) -> list[str]:
    return [
        f"{comment} Generated by envbuilder from plan {plan_digest(plan)}: torch {one_line(plan.torch.local)} "
        f"({one_line(plan.torch.flavor)}), Python {plan.python}, {plan.target.os}/{plan.target.arch}.",
        f"{comment} Re-render instead of editing (`envbuilder render`).",
    ]


def _python_version(plan: Plan) -> str:
    if not re.fullmatch(r"\d+\.\d+", plan.python):
        raise EnvbuilderError("render-unsafe-value", f"plan python {plan.python!r} is not X.Y",
                              "the plan's python is a version such as 3.11")
    return plan.python

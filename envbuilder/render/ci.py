"""Render a CI workflow for a project's plan: a GitHub Actions workflow or a GitLab CI file.

The workflow does on a CI runner what a developer does by hand, through the envbuilder CLI: resolve for the
declared target (a GPU-less runner resolving for a cloud GPU: every target field is a flag, nothing is
detected), reuse the image pushed under the plan's content-addressed tag or build and push it
(`envbuilder build --push REG/REPO`, with the registry as layer cache), run the project's tests inside that
image (pinned by digest), and optionally a short smoke job on a runner with the target's GPU.

Pure: text from a Plan and CiOptions, no I/O. Every value written into the YAML or a shell line is checked
here (one line, a shell word) and quoted, so a hostile project name or flag stays data.
Must not import docker, proc or the CLI.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Literal

from envbuilder import __version__
from envbuilder.errors import UsageError
from envbuilder.render.quoting import sh_quote
from envbuilder.resolve.plan import Plan
from envbuilder.values import Value

CiProvider = Literal["github", "gitlab"]
DEFAULT_TEST_COMMAND = "python -m pytest -q -p no:cacheprovider"
CACHE_TAG = "buildcache"  # the registry tag that holds the BuildKit layer cache, beside the content-addressed tags
RUNNER_PYTHON = "3.12"  # the Python envbuilder itself runs on in CI (not the image's)
GITLAB_DOCKER = "docker:27"  # client with buildx, and the matching docker-in-docker engine as a service

_REGISTRY = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)+")
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]*")
# The image reference the build step writes for later jobs: the pushed digest, so every job runs the very
# image that was built or reused, even if the tag moves meanwhile.
_IMAGE_FROM_JSON = ("python3 -c 'import json, os, sys; d = json.load(open(sys.argv[1])); "
                    "print(sys.argv[2] + os.environ[\"ENVBUILDER_REGISTRY\"] + \"@\" + d[\"digest\"])'")


class CiOptions(Value):
    """What the workflow is asked to do beyond the plan."""

    image_name: str  # the repository name under the default registry (the project's slug)
    project_dir: str = "."  # the project's folder relative to the repository root
    registry: str | None = None  # REGISTRY_HOST/PATH to push to; None: ghcr.io/<owner>/<name> or $CI_REGISTRY_IMAGE/<name>
    test_command: str = DEFAULT_TEST_COMMAND
    smoke_job: str | None = None  # a job of the project's config to run briefly on a GPU runner
    smoke_runner: tuple[str, ...] = ()  # runs-on labels / GitLab tags; () picks one from the target
    smoke_timeout_minutes: int = 30
    install: str = f"envbuilder=={__version__}"  # how the runner installs envbuilder (a pip requirement)
    branches: tuple[str, ...] = ("main",)  # pushes to these run the workflow (pull requests always do)


def target_args(plan: Plan) -> tuple[str, ...]:
    """The CLI flags that make `resolve`/`build` decide this plan on any machine, with nothing detected."""
    target, request = plan.target, plan.request
    args = ["--target-os", target.os, "--target-arch", target.arch, "--gpu", target.gpu]
    if target.gpu == "nvidia":
        if target.cuda_driver:
            args += ["--cuda-driver", target.cuda_driver]
        for cc in target.compute_capabilities:
            args += ["--compute-capability", cc]
    if target.gpu == "amd":
        for arch in target.gpu_archs:
            args += ["--gpu-arch", arch]
    if request.python:
        args += ["--python", request.python]
    for extra in request.extras:
        args += ["--extra", extra]
    if request.cuda_compat != "auto":  # auto is the default
        args += ["--cuda-compat", request.cuda_compat]
    if request.flavor:
        args += ["--flavor", request.flavor]
    return tuple(args)


def render_ci(plan: Plan, options: CiOptions, provider: CiProvider) -> str:
    """The workflow text for `provider`."""
    _check(plan, options)
    if provider == "github":
        return _github(plan, options)
    if provider == "gitlab":
        return _gitlab(plan, options)
    raise UsageError("ci-unsafe-value", f"unknown CI provider {provider!r}", "use github or gitlab")


# --- checks ------------------------------------------------------------------------------------------------


def _check(plan: Plan, options: CiOptions) -> None:
    if plan.target.os != "linux":
        raise UsageError("ci-target-undeclared", f"CI images are Linux images; the plan is for {plan.target.os}",
                         "pass --target-os linux")
    if options.registry is not None and not _REGISTRY.fullmatch(options.registry):
        raise UsageError("ci-unsafe-value", f"--registry {options.registry!r} is not REGISTRY_HOST/PATH",
                         "name the host and the repository, lowercase, without a tag: ghcr.io/org/project")
    if options.registry is not None and not _is_host(options.registry.split("/", 1)[0]):
        raise UsageError("ci-unsafe-value", f"--registry {options.registry!r} does not start with a registry host",
                         "include the host, e.g. docker.io/org/project or registry.example.com:5000/project")
    if options.smoke_job is not None and not _JOB.fullmatch(options.smoke_job):
        raise UsageError("ci-unsafe-value", f"--smoke-job {options.smoke_job!r} is not a job name",
                         "name a job of the project's config, e.g. train")
    for label in options.smoke_runner:
        if not _LABEL.fullmatch(label):
            raise UsageError("ci-unsafe-value", f"runner label {label!r} is not a plain label", "use letters, digits, - _ . : /")
    for branch in options.branches:
        if not _LABEL.fullmatch(branch):
            raise UsageError("ci-unsafe-value", f"branch {branch!r} is not a plain branch name", "use letters, digits, - _ . /")
    for what, value in (("--test-command", options.test_command), ("--install", options.install),
                        ("the project folder", options.project_dir), ("the image name", options.image_name)):
        if not value.strip() or any(c in value for c in "\n\r\0"):
            raise UsageError("ci-unsafe-value", f"{what} {value!r} must be one non-empty line", "pass a single line")
    try:
        shlex.split(options.test_command)
    except ValueError as exc:
        raise UsageError("ci-unsafe-value", f"--test-command {options.test_command!r}: {exc}",
                         "quote it as a shell command line") from None
    if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*", options.image_name):
        raise UsageError("ci-unsafe-value", f"image name {options.image_name!r} is not a repository name",
                         "lowercase letters and digits joined by . _ -")
    if not 1 <= options.smoke_timeout_minutes <= 360:
        raise UsageError("ci-unsafe-value", "--smoke-timeout must be 1 to 360 minutes", "a smoke job is short")


def _is_host(part: str) -> bool:
    return "." in part or ":" in part or part == "localhost"


# --- the shell lines both providers run --------------------------------------------------------------------


def _words(args) -> str:
    return " ".join(sh_quote(a) for a in args)


def _commands(plan: Plan, options: CiOptions) -> dict[str, str]:
    """Each step's shell line; $PROJECT_DIR, $ENVBUILDER_REGISTRY and $ENVBUILDER_IMAGE come from the workflow."""
    target = _words(target_args(plan))
    cache = '"$ENVBUILDER_REGISTRY:' + CACHE_TAG + '"'
    test = _words(shlex.split(options.test_command))
    gpus = "all" if plan.target.gpu in ("nvidia", "amd") else "none"
    return {
        "install": 'python3 -m pip install "$ENVBUILDER_INSTALL"',
        "resolve": f'envbuilder resolve "$PROJECT_DIR" {target}',
        "build": (f'envbuilder build "$PROJECT_DIR" {target} --push "$ENVBUILDER_REGISTRY" '
                  f"--cache-from {cache} --cache-to {cache} --json > envbuilder-build.json"),
        "github_output": _IMAGE_FROM_JSON + ' envbuilder-build.json image= >> "$GITHUB_OUTPUT"',
        "gitlab_output": _IMAGE_FROM_JSON + " envbuilder-build.json ENVBUILDER_IMAGE= > image.env",
        "test": f'envbuilder run "$PROJECT_DIR" --image "$ENVBUILDER_IMAGE" --gpus none -- {test}',
        "smoke": (f'envbuilder run "$PROJECT_DIR" {sh_quote(options.smoke_job)} --image "$ENVBUILDER_IMAGE" --gpus {gpus}'
                  if options.smoke_job else ""),
    }


def _header(plan: Plan, provider: CiProvider, comment: str = "#") -> str:
    target = plan.target
    gpu = {"none": "no GPU", "nvidia": "NVIDIA", "amd": "AMD", "apple": "Apple"}[target.gpu]
    if target.compute_capabilities:
        gpu += f" (compute capability {', '.join(target.compute_capabilities)})"
    if target.cuda_driver:
        gpu += f", driver {target.cuda_driver}"
    lines = [
        f"envbuilder CI for {plan.project_name or 'the project'}: torch {plan.torch.local}, Python {plan.python}, "
        f"{target.os}/{target.arch}, {gpu}.",
        f"Rendered by `envbuilder ci {provider}` (envbuilder {__version__}); render it again rather than edit it.",
        "The image is keyed by content: a push that changes nothing the image holds pulls the image pushed",
        "before instead of building it, and a changed plan reuses unchanged layers through the registry cache.",
    ]
    return "".join(f"{comment} {_one_line(line)}\n" for line in lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _q(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


# --- GitHub Actions ----------------------------------------------------------------------------------------


def _github_setup(options: CiOptions, install: str) -> tuple[str, str]:
    """(the workflow env line naming the registry, the steps every job starts with: checkout, Python,
    envbuilder, the registry's name and the login)."""
    if options.registry:
        registry_env = f"  ENVBUILDER_REGISTRY: {_q(options.registry)}\n"
        host = options.registry.split("/", 1)[0]
        login_user, login_secret = "${{ secrets.REGISTRY_USERNAME }}", "${{ secrets.REGISTRY_PASSWORD }}"
        name_registry = ""
    else:
        registry_env, host = "", "ghcr.io"
        login_user, login_secret = "${{ github.actor }}", "${{ secrets.GITHUB_TOKEN }}"
        # GHCR wants lowercase repository paths; an owner's name may have capitals.
        name_registry = "      - name: Name the registry\n" + _gh_run(
            f'echo "ENVBUILDER_REGISTRY=ghcr.io/${{GITHUB_REPOSITORY_OWNER,,}}/{options.image_name}" >> "$GITHUB_ENV"')
    return registry_env, (
        "      - uses: actions/checkout@v4\n"
        "      - uses: actions/setup-python@v5\n"
        "        with:\n"
        f"          python-version: {_q(RUNNER_PYTHON)}\n"
        "      - name: Install envbuilder\n"
        f"{_gh_run(install)}"
        f"{name_registry}"
        "      - name: Log in to the registry\n"
        "        env:\n"
        f"          REGISTRY_USERNAME: {login_user}\n"
        f"          REGISTRY_PASSWORD: {login_secret}\n"
        + _gh_run(f'echo "$REGISTRY_PASSWORD" | docker login {sh_quote(host)} -u "$REGISTRY_USERNAME" --password-stdin')
    )


def _github(plan: Plan, options: CiOptions) -> str:
    run = _commands(plan, options)
    registry_env, setup = _github_setup(options, run['install'])
    branches = ", ".join(_q(b) for b in options.branches)
    text = _header(plan, "github") + (
        "name: envbuilder\n"
        "on:\n"
        "  push:\n"
        f"    branches: [{branches}]\n"
        "  pull_request:\n"
        "  workflow_dispatch:\n"
        "permissions:\n"
        "  contents: read\n"
        "  packages: write\n"
        "concurrency:\n"
        "  group: envbuilder-${{ github.workflow }}-${{ github.ref }}\n"
        "  cancel-in-progress: true\n"
        "env:\n"
        f"  PROJECT_DIR: {_q(options.project_dir)}\n"
        f"  ENVBUILDER_INSTALL: {_q(options.install)}\n"
        f"{registry_env}"
        "jobs:\n"
        "  image:\n"
        "    name: Reuse or build the image\n"
        "    # A pull request from a fork gets a read-only token: it can neither push nor pull a private image.\n"
        "    if: github.event_name != 'pull_request' || github.event.pull_request.head.repo.full_name == github.repository\n"
        "    runs-on: ubuntu-latest\n"
        "    timeout-minutes: 180\n"
        "    outputs:\n"
        "      image: ${{ steps.build.outputs.image }}\n"
        "    steps:\n"
        f"{setup}"
        "      - name: Resolve for the declared target (no GPU needed)\n"
        f"{_gh_run(run['resolve'])}"
        "      - name: Reuse the image by content hash, or build and push it\n"
        "        id: build\n"
        f"{_gh_run(run['build'], run['github_output'])}"
        "  test:\n"
        "    name: Tests in the image\n"
        "    needs: image\n"
        "    runs-on: ubuntu-latest\n"
        "    timeout-minutes: 60\n"
        "    env:\n"
        "      ENVBUILDER_IMAGE: ${{ needs.image.outputs.image }}\n"
        "    steps:\n"
        f"{setup}"
        "      - name: Run the project's tests inside the image\n"
        f"{_gh_run(run['test'])}"
    )
    if options.smoke_job:
        labels = options.smoke_runner or (("self-hosted", "linux", "gpu") if plan.target.gpu != "none" else ("ubuntu-latest",))
        text += (
            "  smoke:\n"
            f"    name: Smoke job {options.smoke_job}\n"
            "    needs: [image, test]\n"
            f"    runs-on: [{', '.join(_q(label) for label in labels)}]\n"
            f"    timeout-minutes: {options.smoke_timeout_minutes}\n"
            "    env:\n"
            "      ENVBUILDER_IMAGE: ${{ needs.image.outputs.image }}\n"
            "    steps:\n"
            f"{setup}"
            f"      - name: Run {options.smoke_job} briefly on the target's hardware\n"
            f"{_gh_run(run['smoke'])}"
        )
    return text


def _gh_run(*lines: str) -> str:
    """A step's `run:` as a literal block: shell text is never read as YAML."""
    return "        run: |\n" + "".join(f"          {line}\n" for line in lines)


# --- GitLab CI ---------------------------------------------------------------------------------------------


def _gitlab(plan: Plan, options: CiOptions) -> str:
    run = _commands(plan, options)
    if options.registry:
        registry = _q(options.registry)
        host = sh_quote(options.registry.split("/", 1)[0])
        login = f'echo "$REGISTRY_PASSWORD" | docker login {host} -u "$REGISTRY_USERNAME" --password-stdin'
    else:
        registry = _q(f"$CI_REGISTRY_IMAGE/{options.image_name}")
        login = 'echo "$CI_REGISTRY_PASSWORD" | docker login "$CI_REGISTRY" -u "$CI_REGISTRY_USER" --password-stdin'
    rules = " || ".join(f'$CI_COMMIT_BRANCH == {_q(b)}' for b in options.branches)
    text = _header(plan, "gitlab") + (
        "# Runs on docker-in-docker: the runner must allow privileged services.\n"
        "stages: [image, test, smoke]\n"
        "workflow:\n"
        "  rules:\n"
        '    - if: $CI_PIPELINE_SOURCE == "merge_request_event"\n'
        f"    - if: {rules}\n"
        '    - if: $CI_PIPELINE_SOURCE == "web"\n'
        "variables:\n"
        f"  PROJECT_DIR: {_q(options.project_dir)}\n"
        f"  ENVBUILDER_INSTALL: {_q(options.install)}\n"
        f"  ENVBUILDER_REGISTRY: {registry}\n"
        '  DOCKER_HOST: "tcp://docker:2376"\n'
        '  DOCKER_TLS_CERTDIR: "/certs"\n'
        '  DOCKER_TLS_VERIFY: "1"\n'
        '  DOCKER_CERT_PATH: "/certs/client"\n'
        "default:\n"
        f"  image: {GITLAB_DOCKER}\n"
        "  services:\n"
        f"    - {GITLAB_DOCKER}-dind\n"
        "  before_script:\n"
        "    - apk add --no-cache python3 py3-pip\n"
        "    - python3 -m venv /opt/envbuilder\n"
        '    - export PATH="/opt/envbuilder/bin:$PATH"\n'
        f"    - {_yaml_plain(run['install'])}\n"
        f"    - {_yaml_plain(login)}\n"
        "envbuilder-image:\n"
        "  stage: image\n"
        "  timeout: 3 hours\n"
        "  script:\n"
        f"    - {_yaml_plain(run['resolve'])}\n"
        f"    - {_yaml_plain(run['build'])}\n"
        f"    - {_yaml_plain(run['gitlab_output'])}\n"
        "  artifacts:\n"
        "    reports:\n"
        "      dotenv: image.env\n"
        "envbuilder-test:\n"
        "  stage: test\n"
        "  needs: [envbuilder-image]\n"
        "  script:\n"
        f"    - {_yaml_plain(run['test'])}\n"
    )
    if options.smoke_job:
        tags = options.smoke_runner or (("gpu",) if plan.target.gpu != "none" else ())
        text += (
            "envbuilder-smoke:\n"
            "  stage: smoke\n"
            "  needs: [envbuilder-image, envbuilder-test]\n"
            "  # The target's GPU is the runner's: a shell or docker executor with the NVIDIA toolkit, no dind.\n"
            "  services: []\n"
            "  variables:\n"
            '    DOCKER_HOST: ""\n'
            '    DOCKER_TLS_VERIFY: ""\n'
            f"  timeout: {options.smoke_timeout_minutes} minutes\n"
            + (f"  tags: [{', '.join(_q(t) for t in tags)}]\n" if tags else "")
            + "  script:\n"
            f"    - {_yaml_plain(run['smoke'])}\n"
        )
    return text


def _yaml_plain(line: str) -> str:
    """A shell line as a YAML sequence item: double-quoted, so ': ' and '#' inside it stay the command's."""
    return _q(line)

"""`envbuilder ci github|gitlab`: render a CI workflow that resolves for the declared target, reuses or builds
and pushes the image by content hash, runs the project's tests in it and, optionally, a short smoke job.

Thin: resolve the plan through envbuilder.api (no detection: CI runners have no GPU, so the target is
declared), render with envbuilder.render.ci, write or print.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from envbuilder.cli.options import target_options
from envbuilder.cli.output import settings_of


@click.command()
@click.argument("provider", type=click.Choice(["github", "gitlab"]))
@click.argument("source", default=".", metavar="[PATH]")
@target_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write to FILE (e.g. .github/workflows/envbuilder.yml or .gitlab-ci.yml) instead of stdout.")
@click.option("--registry", metavar="HOST/REPO",
              help="Push the image here. Default: ghcr.io/<owner>/<project> (GitHub), $CI_REGISTRY_IMAGE/<project> (GitLab).")
@click.option("--test-command", default=None, metavar="CMD",
              help="The project's tests, run inside the image. Default: python -m pytest -q -p no:cacheprovider.")
@click.option("--smoke-job", metavar="NAME", help="Also run job NAME of the project's config, briefly, on a GPU runner.")
@click.option("--smoke-runner", multiple=True, metavar="LABEL",
              help="Runner label (GitHub runs-on) or tag (GitLab) for the smoke job (repeatable). Default: self-hosted,linux,gpu / gpu.")
@click.option("--smoke-timeout", default=30, show_default=True, metavar="MINUTES", type=int, help="The smoke job's time limit.")
@click.option("--install", metavar="REQUIREMENT", help="How runners install envbuilder (pip). Default: this version.")
@click.option("--branch", "branches", multiple=True, metavar="NAME", help="Pushes to NAME run the workflow (repeatable). Default: main.")
@click.pass_context
def ci(ctx: click.Context, provider: str, source: str, flags, request, output: Path | None, registry: str | None,
       test_command: str | None, smoke_job: str | None, smoke_runner: tuple[str, ...], smoke_timeout: int,
       install: str | None, branches: tuple[str, ...]) -> None:
    """Render a GitHub Actions workflow or a GitLab CI file for the project at PATH.

    Declare the machine the image is for (--gpu nvidia --cuda-driver 570.86 --compute-capability 9.0, or
    --gpu none): CI resolves for it without a GPU. The workflow reuses the image pushed under the plan's
    content-addressed tag, building and pushing it only when the plan or the project changed.
    """
    from envbuilder.api import plan_project
    from envbuilder.build.key import slug
    from envbuilder.errors import UsageError
    from envbuilder.render.ci import CiOptions, render_ci

    if flags.gpu is None and not (flags.cuda_driver or flags.compute_capability or flags.gpu_arch):
        raise UsageError("ci-target-undeclared", "CI runners have no GPU to detect: declare the image's target",
                         "add --gpu nvidia --cuda-driver VERSION --compute-capability X.Y (or --gpu amd --gpu-arch gfxNNN, "
                         "or --gpu none)")
    # Linux x86_64 unless declared: what CI runners and the images they build are.
    flags = flags.model_copy(update={"os": flags.os or "linux", "arch": flags.arch or "x86_64"})
    project, plan = plan_project(source, flags=flags, request=request, settings=settings_of(ctx), index_required=False)
    values = {"image_name": slug(plan.project_name or Path(project.source.path).name),
              "project_dir": _repo_relative(Path(project.source.path)), "registry": registry,
              "smoke_job": smoke_job, "smoke_runner": smoke_runner, "smoke_timeout_minutes": smoke_timeout}
    values.update({k: v for k, v in (("test_command", test_command), ("install", install),
                                    ("branches", branches or None)) if v is not None})
    if smoke_job is not None:  # a typo fails here, not in CI an hour later
        from envbuilder.project.config import load_config

        load_config(Path(project.source.path)).job(smoke_job)
    text = render_ci(plan, CiOptions(**values), provider)
    if output is None:
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)


def _repo_relative(project_dir: Path) -> str:
    """The project's folder relative to the root of the git repository that holds it ("." at the root)."""
    here = project_dir.resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            relative = os.path.relpath(here, folder)
            return "." if relative == "." else Path(relative).as_posix()
    return "."

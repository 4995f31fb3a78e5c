"""Packages the project forgot (issue #8, item 7: --with, --with-requirements) and a folder that declares
nothing at all (item 8), through the CLI commands a user types."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from envbuilder.cli.options import target_options
from envbuilder.resolve.plan import Plan, plan_digest

PROJECTS = Path(__file__).parent / "data" / "projects"
CPU = ["--target-os", "linux", "--target-arch", "x86_64", "--gpu", "none"]


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "requirements.txt").write_text("torch>=2.4\nnumpy\n")
    (folder / "train.py").write_text("import einops, timm\n")
    return folder


def resolve(cli, folder, *args):
    result = cli("resolve", str(folder), *CPU, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_with_adds_packages_to_the_plan_and_says_so(cli, project):
    plain = resolve(cli, project)
    plan = resolve(cli, project, "--with", "einops", "--with", "timm>=1.0; sys_platform == 'linux'",
                   "--with", "pywin32; sys_platform == 'win32'")
    assert plain["dependencies"] == ["numpy"]
    assert plan["dependencies"] == ["numpy", "einops", "timm>=1.0"]
    assert plan["request"]["with_packages"] == ["einops", 'timm>=1.0; sys_platform == "linux"',
                                                'pywin32; sys_platform == "win32"']
    assert any(r.startswith("added with --with: einops") for r in plan["reasons"])
    assert plan_digest(Plan.model_validate(plan)) != plan_digest(Plan.model_validate(plain))


def test_with_requirements_reads_a_file_and_the_files_it_includes(cli, project, tmp_path):
    (tmp_path / "more.txt").write_text("# forgotten in requirements.txt\neinops>=0.7\n-r nested.txt\n")
    (tmp_path / "nested.txt").write_text("timm\neinops>=0.7\n")
    plan = resolve(cli, project, "--with-requirements", str(tmp_path / "more.txt"), "--with", "rich")
    assert plan["dependencies"] == ["numpy", "rich", "einops>=0.7", "timm"]


def test_with_a_torch_bound_constrains_the_torch_choice(cli, project):
    plan = resolve(cli, project, "--with", "torch<2.5")
    assert plan["torch"]["version"].startswith("2.4.")


@pytest.mark.parametrize("args, needle", [
    (["--with", "einops>>1"], "--with 'einops>>1' is not a requirement"),
    (["--with-requirements", "missing.txt"], "--with-requirements missing.txt: no such file"),
    (["--with-requirements", "{index}"], "has an index option"),
])
def test_bad_with_input_is_one_line_and_exit_2(cli, project, tmp_path, args, needle):
    index = tmp_path / "index.txt"
    index.write_text("--extra-index-url https://mirror.example/simple\neinops\n")
    args = [a.replace("{index}", str(index)) for a in args]
    result = cli("resolve", str(project), *CPU, *args)
    assert result.exit_code == 2
    assert needle in result.stderr and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_with_reaches_the_dockerfile_and_the_lock(cli, project):
    plain = cli("render", str(project), *CPU)
    dockerfile = cli("render", str(project), *CPU, "--with", "einops")
    lock = cli("render", str(project), *CPU, "--with", "einops", "--format", "lock")
    assert plain.exit_code == dockerfile.exit_code == lock.exit_code == 0, dockerfile.stderr + lock.stderr
    assert "einops" not in plain.stdout and "einops" in dockerfile.stdout
    assert "einops" in lock.stdout


@pytest.mark.parametrize("command", ["resolve", "render", "lock", "build", "run", "pipeline"])
def test_every_command_that_resolves_takes_with(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "--with PKG" in result.stdout and "--with-requirements FILE" in result.stdout


def test_the_shared_options_carry_with_on_the_request(tmp_path):
    (tmp_path / "extra.txt").write_text("einops\n")
    seen = {}

    @click.command()
    @target_options
    def probe(flags, request):
        seen["request"] = request

    result = CliRunner().invoke(probe, ["--with", "rich", "--with-requirements", str(tmp_path / "extra.txt"),
                                        "--with", "einops"])
    assert result.exit_code == 0, result.output
    assert seen["request"].with_packages == ("rich", "einops")


# --- item 8: a folder with no metadata --------------------------------------------------------------------------


def test_a_folder_without_metadata_is_an_error_with_a_hint(cli):
    result = cli("resolve", str(PROJECTS / "no-metadata"), *CPU)
    assert result.exit_code == 1
    assert "project-no-metadata:" in result.stderr and "declares no dependencies" in result.stderr
    assert "--with" in result.stderr and result.stderr.count("\n") == 1


def test_a_folder_without_metadata_resolves_with_with(cli):
    plan = resolve(cli, PROJECTS / "no-metadata", "--with", "einops")
    assert plan["dependencies"] == ["einops"]


@pytest.mark.parametrize("files, deps", [
    ({"requirements.txt": ""}, []),  # an empty requirements.txt says: nothing beyond torch
    ({"pyproject.toml": "[tool.ruff]\nline-length = 100\n"}, []),
    ({"requirements-gpu.txt": "einops\n"}, ["einops"]),  # the only requirements file there is, so it is read
    ({"environment.yml": "dependencies:\n  - python=3.11\n  - tqdm\n"}, ["tqdm"]),
])
def test_any_metadata_file_is_enough(cli, tmp_path, files, deps):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert resolve(cli, tmp_path)["dependencies"] == deps

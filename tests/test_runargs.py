"""The plain `run --image IMAGE -- CMD` path (envbuilder.cli.runargs): parsed without click, run as with click.

RUN_OPTIONS is derived from the click command; the first test keeps them equal (run this file as a script with
--write to regenerate the table). Parsing is checked against click's own on the same command lines, and each
shape the table does not cover is left to click. The runs themselves go through a FakeEngine, once through the
plain path and once through click, and must say the same things.

    python tests/test_runargs.py --write    # rewrite RUN_OPTIONS in envbuilder/cli/runargs.py from the click command
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGE = "envbuilder/base-python:3.11-bookworm"


def click_table() -> tuple:
    """RUN_OPTIONS as the click command declares them."""
    import click

    from envbuilder.cli.run_cmd import run

    rows = []
    for param in run.params:
        if not isinstance(param, click.Option):
            continue
        if param.secondary_opts:
            kind, extra = "switch", tuple(param.secondary_opts)
        elif param.is_flag:
            kind, extra = "flag", ()
        elif param.multiple:
            kind, extra = "multiple", ()
        elif isinstance(param.type, click.Path):
            kind, extra = "path", ()
        else:
            kind, extra = "value", tuple(getattr(param.type, "choices", ()) or ())
        default = param.get_default(click.Context(run), call=True)
        if kind == "multiple":
            default = ()
        elif kind == "flag":
            default = bool(default)
        elif not isinstance(default, (str, type(None))):  # click 8.2's UNSET: no default
            default = None
        rows.append((tuple(param.opts), param.name, kind, default, extra))
    return tuple(rows)


def test_the_table_is_the_click_commands_options():
    from envbuilder.cli.run_cmd import run
    from envbuilder.cli.runargs import RUN_OPTION_ENVVARS, RUN_OPTIONS

    assert RUN_OPTIONS == click_table(), "regenerate: python tests/test_runargs.py --write"
    envvars = {p.name: p.envvar for p in run.params if getattr(p, "envvar", None)}
    assert envvars == RUN_OPTION_ENVVARS


LINES = [
    ["run", "PROJ", "--image", IMAGE, "--", "true"],
    ["run", "--image", IMAGE, "PROJ", "--", "python", "-c", "print(1)", "--image", "x"],
    ["run", "PROJ", f"--image={IMAGE}", "--json", "-d", "--rw", "--gpus", "all", "--", "true"],
    ["run", "PROJ", "--image", IMAGE, "--mount", "/a:/b", "--mount=/c:/d:rw", "-p", "8080:80", "--env", "A=1",
     "--cpus", "2", "--memory", "4g", "--network", "host", "--no-host-ca", "--stop-on-nan", "--", "sh"],
    ["run", "PROJ", "--image", IMAGE, "--gpu", "nvidia", "--cuda-compat", "strict", "--offline", "--", "true"],
    ["run", "PROJ", "--image", IMAGE, "--artifacts", "ART", "--trust", "mounts", "--allow-mounts", "--", "true"],
]


@pytest.mark.parametrize("line", LINES, ids=lambda line: " ".join(line[2:5]))
def test_plain_parsing_gives_what_click_gives(line, tmp_path, monkeypatch):
    from envbuilder.cli.run_cmd import run
    from envbuilder.cli.runargs import plain_run

    monkeypatch.delenv("ENVBUILDER_OFFLINE", raising=False)
    line = [str(tmp_path / t) if t in ("PROJ", "ART") else t for t in line]
    parsed = plain_run(line)
    assert parsed is not None
    ctx = run.make_context("run", line[1:])
    clicked = dict(ctx.params)
    assert clicked.pop("path") == parsed.path and clicked.pop("job_and_args") == ()
    assert clicked == parsed.values
    assert list(parsed.command) == ctx.meta["envbuilder.after_dashdash"]


def test_the_offline_variable_reaches_the_values_as_click_reads_it(monkeypatch):
    from envbuilder.cli.runargs import plain_run

    line = ["run", ".", "--image", IMAGE, "--", "true"]
    for raw, expected in (("1", True), ("yes", True), ("0", False), ("off", False)):
        monkeypatch.setenv("ENVBUILDER_OFFLINE", raw)
        assert plain_run(line).values["offline"] is expected
    monkeypatch.setenv("ENVBUILDER_OFFLINE", "maybe")  # click refuses it: its words, not ours
    assert plain_run(line) is None


@pytest.mark.parametrize("line", [
    ["run", ".", "--", "true"],  # no --image: the project's image is resolved and built
    ["run", ".", "train", "--image", IMAGE, "--", "x"],  # a job name
    ["run", ".", "--image", IMAGE],  # no command
    ["run", ".", "--image", IMAGE, "--"],
    ["run", ".", "--image", IMAGE, "-it", "--", "sh"],  # combined short flags
    ["run", ".", "--image", IMAGE, "--help", "--", "sh"],
    ["run", ".", "--image", IMAGE, "--network", "bridge", "--", "sh"],  # not a choice: click says so
    ["run", ".", "--image", IMAGE, "--rw=yes", "--", "sh"],
    ["run", ".", "--image", IMAGE, "--epochs", "3", "--", "sh"],  # an unknown option
    ["run", ".", "--image", "--", "sh"],  # --image without its value
    ["--data-dir", "", "run", ".", "--image", IMAGE, "--", "sh"],
    ["--version"],
    ["build", ".", "--", "x"],
])
def test_every_other_command_line_is_left_to_click(line):
    from envbuilder.cli.runargs import plain_run

    assert plain_run(line) is None


def test_the_group_options_are_read(tmp_path):
    from envbuilder.cli.runargs import plain_run

    parsed = plain_run(["-v", "--data-dir", str(tmp_path), "--docker=/usr/bin/docker", "run", ".", "--image", IMAGE,
                        "--", "true"])
    assert (parsed.data_dir, parsed.docker, parsed.verbose) == (str(tmp_path), "/usr/bin/docker", True)
    (tmp_path / "file").write_text("")
    assert plain_run(["--data-dir", str(tmp_path / "file"), "run", ".", "--image", IMAGE, "--", "true"]) is None


def test_the_plain_path_loads_neither_click_nor_pydantic():
    code = ("import sys\nfrom envbuilder.cli.runargs import plain_run\n"
            "import envbuilder.cli.run_flow, envbuilder.cli.network_flags, envbuilder.cli.failures, envbuilder.api\n"
            f"assert plain_run(['run', '.', '--image', '{IMAGE}', '--', 'true']) is not None\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'click', 'pydantic', 'rich'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _said(text: str) -> list[str]:
    return [re.sub(r"r-\d{8}-\d{6}-[0-9a-f]{4}", "RUN", line) for line in text.splitlines()]


@pytest.mark.parametrize("exit_code", [0, 3])
def test_the_plain_path_and_click_run_and_say_the_same(cli, fake_engine, tmp_path, monkeypatch, exit_code):
    fake_engine.add_image(IMAGE)
    project = tmp_path / "proj"
    project.mkdir()
    line = ["run", str(project), "--image", IMAGE, "--env", "A=1", "--", "sh", "-c", "job"]

    def no_click(args):
        raise AssertionError("the plain path must not reach click")

    with monkeypatch.context() as patched:
        patched.setattr("envbuilder.cli.app.main", no_click)
        fake_engine.script(["hello from the job"], exit_code=exit_code)
        plain = cli(*line)
    monkeypatch.setattr("envbuilder.cli.runargs.plain_run", lambda args: None)  # the click path alone
    fake_engine.script(["hello from the job"], exit_code=exit_code)
    clicked = cli(*line)
    for outcome in (plain, clicked):
        assert outcome.exit_code == exit_code, outcome.stderr
        assert outcome.stdout == "hello from the job\n"
    assert _said(plain.stderr) == _said(clicked.stderr)
    assert ("completed" if exit_code == 0 else "failed") in plain.stderr


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        sys.path[:0] = [str(REPO)]
        target = REPO / "envbuilder" / "cli" / "runargs.py"
        text = target.read_text()
        body = "".join(f"    {row!r},\n".replace("'", '"') for row in click_table())  # names hold no quotes
        start = text.index("RUN_OPTIONS: tuple")
        start = text.index("(\n", start) + 2
        end = text.index("\n)\n", start) + 1
        target.write_text(text[:start] + body + text[end:])
        print(f"wrote {target}")

"""The `envbuilder` command group (click): thin commands over the library, loaded lazily.

Each command lives in its own module and is imported only when invoked, so `envbuilder --help` never
imports Docker or torch. Errors are turned into one line and an exit code here, in one place
(see `main`); nothing deeper prints or exits. The entry point is envbuilder.cli.main, which answers an
unchanged build before click is even imported (envbuilder.cli.memo).
"""

from __future__ import annotations

import importlib
import sys

import click

from envbuilder import __version__
from envbuilder.cli.failures import emit_error_json, guarded, own_args
from envbuilder.errors import EXIT_USAGE, UsageError

# command name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "detect": ("envbuilder.cli.detect_cmd", "detect", "Detect this machine's OS, CPU and accelerator."),
    "inspect": ("envbuilder.cli.inspect_cmd", "inspect", "Read a project's Python, torch and index constraints."),
    "resolve": ("envbuilder.cli.resolve_cmd", "resolve", "Pick Python, the torch build and companions, and say why."),
    "compat": ("envbuilder.cli.compat_cmd", "compat", "Show or update the compatibility matrix."),
    "render": ("envbuilder.cli.render_cmd", "render", "Render the plan as a Dockerfile, bash, PowerShell or lock."),
    "lock": ("envbuilder.cli.render_cmd", "lock", "Resolve the full dependency set with hashes into a lock file."),
    "build": ("envbuilder.cli.build_cmd", "build", "Build the project's image (content-addressed, cached)."),
    "images": ("envbuilder.cli.images_cmd", "images", "List a project's images with their plan and size."),
    "prune": ("envbuilder.cli.images_cmd", "prune", "Remove a project's superseded images (keeps the newest N and any in use)."),
    "bundle": ("envbuilder.cli.bundle_cmd", "bundle", "Write the image, lock and wheels into one file for an air-gapped machine."),
    "load": ("envbuilder.cli.bundle_cmd", "load", "Verify a bundle's checksums, then load it (air-gapped machines)."),
    "login": ("envbuilder.cli.login_cmd", "login", "Log in to a registry (a thin wrapper over docker login)."),
    "image": ("envbuilder.cli.image_cmd", "image", "Inspect an image's labels and whether it fits this host's GPU."),
    "ci": ("envbuilder.cli.ci_cmd", "ci", "Render a GitHub Actions or GitLab CI workflow that reuses images by content hash."),
    "base": ("envbuilder.cli.base_cmd", "base", "Make base images without a registry (air-gapped hosts)."),
    "engine": ("envbuilder.cli.base_cmd", "engine", "Check, or start, the Docker engine."),
    "index": ("envbuilder.cli.index_cmd", "index", "Serve wheel folders as a PEP 503 index on loopback (mirrors, air gaps)."),
    "run": ("envbuilder.cli.run_cmd", "run", "Run a job or command inside the project's image."),
    "pipeline": ("envbuilder.cli.run_cmd", "pipeline", "Run the project's jobs in order (train, then export)."),
    "shell": ("envbuilder.cli.shell_cmd", "shell", "Open a shell in the project's image, with a job's mounts and user."),
    "runs": ("envbuilder.cli.runs_cmd", "runs", "List, show, compare, follow, stop, plot and remove recorded runs."),
    "submit": ("envbuilder.cli.submit_cmd", "submit", "Submit a job to a cluster (Slurm, Kubernetes, SkyPilot) as a tracked run."),
    "config": ("envbuilder.cli.config_cmd", "config", "Show the effective build and network defaults and where each came from."),
    "schema": ("envbuilder.cli.runs_cmd", "schema", "Print the JSON schema of the project config ([tool.envbuilder])."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="envbuilder")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug output.")
@click.option("--data-dir", envvar="ENVBUILDER_HOME",
              help="State directory (git cache, logs, runs). Default ~/.envbuilder.")
@click.option("--docker", "docker_binary", envvar="ENVBUILDER_DOCKER", metavar="PATH",
              help="docker CLI to build with (buildx, or a client with built-in BuildKit).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, data_dir: str | None, docker_binary: str | None) -> None:
    """envbuilder: the right torch build for your hardware, as a reproducible image, and runs inside it."""
    from envbuilder.settings import Settings

    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if data_dir is not None:
        _check_data_dir(data_dir)
    ctx.obj["settings"] = Settings.from_env(data_dir, docker_binary)


def _check_data_dir(value: str) -> None:
    """An empty --data-dir is a mistake (an unset variable in a script), not a request for the default."""
    import os

    if not value.strip():
        raise UsageError("data-dir-invalid", "--data-dir is empty",
                         "pass a folder (e.g. --data-dir ~/.envbuilder), or leave the option out for the default")
    path = os.path.expanduser(value)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError("data-dir-invalid", f"--data-dir {value} exists and is not a folder",
                         "pass a folder (it is made when missing)")


def main(argv: list[str] | None = None) -> int:
    """Run the click group; every failure becomes one line and an exit code (envbuilder.cli.failures)."""
    args = sys.argv[1:] if argv is None else argv
    return guarded(lambda: _click_main(args), args)


def _click_main(args: list[str]) -> int:
    """The group's exit code; click's own usage errors shown as click shows them."""
    try:
        # With standalone_mode=False click returns ctx.exit(N)'s code instead of exiting.
        # obj["argv"]: the command line as typed, which `build` keys its memo by (envbuilder.build.memo)
        rv = cli.main(args=args, prog_name="envbuilder", standalone_mode=False, obj={"argv": list(args)})
        return rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        raise KeyboardInterrupt from None
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code if exc.exit_code else EXIT_USAGE
        if "--json" in own_args(args):
            emit_error_json(UsageError("usage", exc.format_message()).to_json() | {"exit_code": code})
        return code

"""`envbuilder build`: resolve the plan, build its image (content-addressed, cached), show progress.

Thin: the work is envbuilder.api.build_project. Progress goes to stderr (a live line on a terminal, plain
lines with -v or when stderr is not a terminal); stdout carries only the result (text, or JSON with --json).
"""

from __future__ import annotations

import time
from functools import cached_property
from pathlib import Path

import click

from envbuilder.cli.netopts import network_options
from envbuilder.cli.options import image_input_options, target_options
from envbuilder.cli.output import console, present_build, settings_of, stderr_may_be_terminal


@click.command()
@click.argument("source", default=".", metavar="[PATH_OR_GIT_URL]")
@click.option("--ref", help="Branch, tag or commit when SOURCE is a git URL.")
@target_options
@network_options
@click.option("--tag", "-t", "tags", multiple=True, metavar="NAME[:TAG]",
              help="Also tag the image NAME[:TAG] (repeatable). With --push, a bare TAG is pushed as REGISTRY/REPO:TAG.")
@click.option("--push", "push", metavar="REGISTRY/REPO",
              help="Push the image under its content-addressed tag (REGISTRY/REPO:<build key>); first pull it "
                   "instead of building when the registry already has that tag.")
@click.option("--no-reuse", is_flag=True, help="Build even when the registry has the content-addressed tag.")
@click.option("--cache-from", "cache_from", multiple=True, metavar="REF",
              help="Reuse layers of this registry image or cache (repeatable), e.g. REGISTRY/REPO:buildcache.")
@click.option("--cache-to", "cache_to", metavar="REF",
              help="Write the build's layer cache to REF (a registry cache with buildx, else an inline cache "
                   "pushed with the image as REF).")
@click.option("--platform", metavar="OS/ARCH",
              help="Build for another platform (linux/arm64, linux/amd64; needs buildx): resolves for its arch.")
@image_input_options
@click.option("--no-cache", is_flag=True, help="Rebuild every step, even when an image with this key exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.pass_context
def build(ctx: click.Context, source: str, ref: str | None, flags, request, network, tags: tuple[str, ...],
          push: str | None, no_reuse: bool, cache_from: tuple[str, ...], cache_to: str | None, platform: str | None,
          dockerfile: Path | None, netrc: Path | None, lock_file: Path | None, no_cache: bool, as_json: bool) -> None:
    """Build SOURCE's image for the resolved plan.

    The image is tagged envbuilder/<project>:<build key> and :latest. A build whose Dockerfile, context files
    and base image are unchanged returns the existing image at once (cached). With --push REGISTRY/REPO (or a
    `registry` in the user config, for reuse only) a missing image is first looked up in the registry under
    REGISTRY/REPO:<build key> and pulled when another machine built it. Ctrl-C stops the build and keeps the
    previous image.
    """
    from envbuilder.api import build_project, declares_target
    from envbuilder.build.registry import RegistryOptions, check_repository
    from envbuilder.cli import memo

    registry = None
    if push is not None:
        registry = RegistryOptions(check_repository(push), push=True, reuse=not no_reuse, tags=tags)
    if platform is not None:
        flags = _platform_flags(flags, platform)
    root, settings = ctx.find_root().obj, settings_of(ctx)
    verbose = bool(root.get("verbose"))
    # A memo lets the same command answer at once next time while nothing it read changes (envbuilder.cli.memo).
    # Never for --no-cache: that command must build every time.
    observed = memo.observe(root.get("argv"), source, settings) if not (verbose or push or ref or no_cache) else None
    with _progress(verbose) as on_line:
        done = build_project(source, ref=ref, flags=flags, request=request, network=network,
                             settings=settings, tag=None if push else (tags[0] if tags else None),
                             extra_tags=() if push else tags[1:], dockerfile=dockerfile, netrc=netrc, lock=lock_file,
                             no_cache=no_cache, on_line=on_line, registry=registry, cache_from=cache_from,
                             cache_to=cache_to, platform=platform)
    answer = done.to_json()
    answer.pop("steps")
    memo.remember(observed, done, answer, as_json=as_json, settings=settings, detected=not declares_target(flags),
                  read=(network.ca_cert, *network.find_links))
    present_build(answer, as_json)


_PLATFORM_ARCH = {"linux/amd64": "x86_64", "linux/x86_64": "x86_64", "linux/arm64": "aarch64",
                  "linux/arm64/v8": "aarch64", "linux/aarch64": "aarch64"}


def _platform_flags(flags, platform: str):
    """The target flags for --platform: the resolver's plan for that OS and architecture."""
    from envbuilder.errors import UsageError

    arch = _PLATFORM_ARCH.get(platform)
    if arch is None:
        raise UsageError("usage", f"--platform {platform} is not one envbuilder builds for",
                         f"pass one of {', '.join(sorted(_PLATFORM_ARCH))}")
    if flags.arch is not None and {"arm64": "aarch64"}.get(flags.arch, flags.arch) != arch:
        raise UsageError("usage", f"--platform {platform} and --target-arch {flags.arch} disagree",
                         "pass one of them")
    return flags.model_copy(update={"os": "linux", "arch": arch})


class _Progress:
    """A rich live line: the running step, its elapsed time, and its last output line."""

    def __init__(self) -> None:
        from envbuilder.build.progress import BuildProgress

        self.progress = BuildProgress()
        self.step_started = time.monotonic()
        self.started = time.monotonic()
        self.current = None

    def __rich__(self):
        from rich.text import Text

        now = time.monotonic()
        step = self.progress.current
        title = f"#{step.number} {step.title}" if step else "starting the build"
        text = Text.assemble(("building ", "bold"), (title[:120], ""),
                             (f"  {now - self.step_started:.0f}s (total {now - self.started:.0f}s)", "cyan"))
        if self.progress.last_output:
            text.append("\n  " + self.progress.last_output[:160], style="dim")
        return text


class _progress:
    """Context manager giving the on_line callback: a live display on a terminal, plain lines otherwise."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.live = None

    @cached_property
    def err(self):
        # made on first use: a cached `build --json` prints nothing to stderr and need not import rich
        return console(stderr=True)

    def __enter__(self):
        if self.verbose or not stderr_may_be_terminal() or not self.err.is_terminal:
            return self._plain
        from rich.live import Live

        self.display = _Progress()
        self.live = Live(self.display, console=self.err, refresh_per_second=4, transient=True)
        self.live.__enter__()
        return self._live

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def _plain(self, line: str) -> None:
        if self.verbose or line.startswith("# ") or _is_step_header(line):
            # Build output is the engine's text: no rich markup and no emoji codes (`envbuilder:x:1000` in an
            # /etc/passwd line would print as an emoji).
            self.err.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)

    def _live(self, line: str) -> None:
        changed = self.display.progress.feed(line)
        if line.startswith("# "):
            self.err.print(line, style="dim", markup=False, emoji=False, highlight=False, soft_wrap=True)
        if changed is None:
            return
        if changed.status == "running":
            self.display.step_started = time.monotonic()
        elif changed.status in ("done", "cached", "error") and not changed.title.startswith("[internal]"):
            mark = {"done": "[green]✓[/]", "cached": "[blue]cached[/]", "error": "[red]✗[/]"}[changed.status]
            took = f" {changed.seconds:.1f}s" if changed.status == "done" and changed.seconds else ""
            width = max(self.err.width - 20, 40)
            self.err.print(f"{mark} #{changed.number} {_escape(changed.title[:width])}{took}", emoji=False, highlight=False)


def _is_step_header(line: str) -> bool:
    from envbuilder.build.progress import is_step_header

    return is_step_header(line)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def build_progress(verbose: bool) -> _progress:
    """The build display above, for the commands that build on their way (`run`, `pipeline`, `shell`):
    a context manager giving the on_line callback."""
    return _progress(verbose)

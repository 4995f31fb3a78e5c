"""Where a run's files go: one host folder per run, a `latest` link per job, and the checkpoint `--resume last` means.

Owns ArtifactsHome (the folder a project's runs keep their files under), place_run (the run id, artifacts folder,
resume checkpoint and origin of one run, decided before anything starts) and make_run_folder. The layout:

    <home>/<job's artifacts>/<job>/<run-id>/      one folder per run; `cmd` for a bare `-- CMD`
    <home>/<job's artifacts>/<job>/latest         a relative link to the newest run's folder

home is the project folder, or, for a project from a git URL, `<data dir>/artifacts/<repo>-<key>/` (never inside
the cached checkout, which is shared by every run of that commit). `--artifacts DIR` replaces the per-run folder
with DIR as it is. A job that `needs` others works in the folder of the run it needs (in a pipeline, the run
just made; alone, the newest completed one), so `export` finds what `train` wrote.
Must not import docker, the store (it is passed in), pydantic or the CLI.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from envbuilder.errors import EnvbuilderError
from envbuilder.run.record import RunOrigin, new_run_id
from envbuilder.run.spec import RunOptions

CMD_FOLDER = "cmd"  # a bare `run PATH -- CMD` has no job name
LATEST = "latest"
RESUME_LAST = "last"
# What counts as a checkpoint for `--resume last`: torch/Lightning/safetensors files, and Hugging Face Trainer's
# `checkpoint-<step>/` folders (resume_from_checkpoint takes the folder). ONNX exports are not checkpoints.
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".ckpt", ".safetensors"})
_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")
_MAX_WALK = 20_000  # entries looked at per run folder: a dataset written to /artifacts must not stall a start
_RESUMABLE = ("completed", "stopped")


class ArtifactsHome(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """The folder under which a project's runs keep their files (see the module's layout)."""

    base: Path
    project_dir: Path | None = None  # where the project is read from (runs given --artifacts DIR are its too)

    @classmethod
    def of(cls, source: str, project_dir: Path, settings: Any) -> ArtifactsHome:
        """The project folder; for a git URL, a folder of its own under the data dir, the same for every ref."""
        local = cls(Path(project_dir).resolve(), Path(project_dir).resolve())
        if Path(source).is_dir():
            return local  # git URLs' code is loaded only for one
        from envbuilder.project.gitsource import looks_like_git_url, redact, repo_dir

        if not looks_like_git_url(source):
            return local

        name = re.sub(r"[^A-Za-z0-9._-]+", "-", redact(source).rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        name = name.removesuffix(".git").strip(".-") or "project"
        return cls(Path(settings.data_dir) / "artifacts" / f"{name}-{repo_dir(source, settings).stem[:12]}",
                   Path(project_dir).resolve())

    def job_dir(self, job_name: str | None, job: Any = None) -> Path:
        """`<home>/<job's artifacts>/<job or cmd>`: the folder holding that job's runs and its `latest` link."""
        return self.base / (job.artifacts if job is not None else "artifacts") / (job_name or CMD_FOLDER)


class PlacedRun(NamedTuple):  # not a dataclass: why in envbuilder.run's docstring
    """One run, placed: its id, the options with its artifacts folder and checkpoint filled in, its origin."""

    run_id: str
    options: RunOptions
    origin: RunOrigin
    latest: Path | None = None  # the job's `latest` link, pointed at options.artifacts_dir once the folder exists


def place_run(store: Any, home: ArtifactsHome, job_name: str | None, job: Any, options: RunOptions | None, *,
              git: tuple[str | None, bool | None] = (None, None), shared: Path | None = None) -> PlacedRun:
    """Decide where one run of `job` (None: a bare command) keeps its files, and what `--resume` means.

    options.artifacts_dir, when given, is used as it is (no per-run folder, no link). Else a job that needs
    others works in `shared` (the folder of the run it needs, made in this pipeline) or in that of the newest
    completed run of a job it needs; else it gets `<job dir>/<run-id>/`. `--resume last` is the newest checkpoint
    of the newest completed or stopped run of the job that has one (`no-checkpoint` when none has); a resume
    path inside a recorded run's folder makes that run the parent."""
    options = options or RunOptions()
    run_id = new_run_id()
    job_dir = home.job_dir(job_name, job)
    latest = None
    folder = Path(options.artifacts_dir).resolve() if options.artifacts_dir is not None else None
    if folder is None:
        needed = shared or _needed_folder(store, home, job)
        folder = needed or job_dir / run_id
        latest = job_dir / LATEST
    resume, parent = options.resume_from, None
    if resume == RESUME_LAST:
        resume, parent = _last_checkpoint(store, home, job_dir, job_name)
    elif resume:
        parent = _run_holding(store, Path(resume).expanduser())
    return PlacedRun(run_id, options._replace(artifacts_dir=folder, resume_from=resume),
                     RunOrigin(git_commit=git[0], git_dirty=git[1], parent_run=parent), latest)


def make_run_folder(placed: PlacedRun) -> Path:
    """Create the run's artifacts folder (yours: the job runs as you) and point the job's `latest` link at it."""
    folder = Path(placed.options.artifacts_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvbuilderError("artifacts-dir-unusable", f"cannot create the artifacts folder {folder}: {exc.strerror}",
                              "pass --artifacts DIR with a folder you can write") from None
    if placed.latest is not None:
        point_latest(placed.latest, folder)
    return folder


def point_latest(link: Path, folder: Path | None) -> None:
    """Make `link` a relative symlink to `folder` (None: remove it), replaced in one step so that a reader never
    finds it missing. A real file or folder named `latest` is left alone; a file system without symlinks too."""
    if link.exists() and not link.is_symlink():
        return
    try:
        if folder is None:
            link.unlink(missing_ok=True)
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{LATEST}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.path.relpath(folder, link.parent), target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        pass  # the link is a convenience; the run's folder is recorded with the run


def find_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint under `folder` (by modification time; see CHECKPOINT_SUFFIXES), or None."""
    best: tuple[float, str] | None = None
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".envbuilder"]  # the metrics channel's files
        seen += len(dirs) + len(files)
        candidates = [os.path.join(root, f) for f in files if Path(f).suffix.lower() in CHECKPOINT_SUFFIXES]
        candidates += [os.path.join(root, d) for d in dirs if _CHECKPOINT_DIR.match(d)]
        for path in candidates:
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if best is None or (mtime, path) > best:
                best = (mtime, path)
        if seen > _MAX_WALK:
            break
    return None if best is None else Path(best[1])


def _last_checkpoint(store: Any, home: ArtifactsHome, job_dir: Path, job_name: str | None) -> tuple[str, str]:
    if job_name is None:
        raise EnvbuilderError("resume-unsupported", "--resume last needs a job (a bare command has no resume-arg)",
                              "name the job: envbuilder run PATH JOB --resume last")
    for record in _project_runs(store, home, job_name):
        if record.status in _RESUMABLE:
            checkpoint = find_checkpoint(Path(record.artifacts_dir))
            if checkpoint is not None:
                return str(checkpoint), record.id
    raise EnvbuilderError("no-checkpoint", f"--resume last: no completed or stopped run of job {job_name!r} has a "
                          f"checkpoint under {job_dir}",
                          "run the job first, or pass --resume PATH (a checkpoint is a .pt, .pth, .ckpt or "
                          ".safetensors file, or a checkpoint-N folder)", {"job": job_name, "folder": str(job_dir)})


def _needed_folder(store: Any, home: ArtifactsHome, job: Any) -> Path | None:
    """The folder of the newest completed run of a job this one needs, still on disk; None when there is none."""
    best = None
    for name in getattr(job, "needs", ()) or ():
        for record in _project_runs(store, home, name):
            if record.status == "completed" and Path(record.artifacts_dir).is_dir():
                if best is None or record.started_at > best.started_at:
                    best = record
                break
    return None if best is None else Path(best.artifacts_dir)


def _project_runs(store: Any, home: ArtifactsHome, job_name: str) -> list[Any]:
    """The runs of job_name in this project (not a namesake's), newest first: their artifacts folder is under
    its home, or they were started from its folder (with --artifacts DIR)."""
    found = []
    for record in store.list_runs(limit=None, job=job_name):
        if not record.artifacts_dir:
            continue
        started_here = home.project_dir is not None and record.args.get("project_dir") == str(home.project_dir)
        if started_here or _inside(Path(record.artifacts_dir), home.base):
            found.append(record)
    return found


def _run_holding(store: Any, path: Path) -> str | None:
    """The newest run whose artifacts folder holds `path` (the parent of a run resumed from it)."""
    if not path.exists():
        return None
    path = path.resolve()
    for record in store.list_runs(limit=None):
        if record.artifacts_dir and _inside(path, Path(record.artifacts_dir)):
            return record.id
    return None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True

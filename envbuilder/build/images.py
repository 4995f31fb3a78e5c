"""The images envbuilder built: list them per checkout, with their plan and size, and prune superseded ones.

Every image carries its plan (torch, flavour, Python, plan hash: render/dockerfile.py) and its checkout digest
(build/spec.py) as labels, so one engine query finds a checkout's images. `prune_images` keeps the newest N of
each checkout and never removes an image that a running job uses: the caller names those (the run store belongs
to envbuilder.run, which build must not import), and the engine itself refuses an image any container uses,
which is reported, never forced. Images built before checkouts had their own repositories (no checkout label)
are grouped by repository. Must not import the CLI or envbuilder.run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.build.key import (
    IMAGE_REPO_PREFIX,
    checkout_digest,
    checkout_identity,
    slug,
)
from envbuilder.errors import EnvbuilderError, ProjectError, UsageError
from envbuilder.imagelayout import (
    LABEL_BUILD_KEY,
    LABEL_CHECKOUT,
    LABEL_FLAVOR,
    LABEL_PLAN_HASH,
    LABEL_PROJECT,
    LABEL_PYTHON,
    LABEL_TORCH,
)

if TYPE_CHECKING:
    from envbuilder.docker.engine import Engine


@dataclass(frozen=True)
class ImageEntry:
    """One image envbuilder built: its tags in envbuilder's repositories, its plan, when it was made, its size."""

    image_id: str
    tags: tuple[str, ...]  # envbuilder/<project>-<checkout>:<key16> and :latest; other repositories' tags left out
    other_tags: tuple[str, ...]  # tags outside envbuilder's repositories (a --tag NAME): pruning leaves those
    project: str
    group: str  # the checkout digest, or the repository for an image made before checkouts were labelled
    plan_hash: str | None
    torch: str | None
    flavor: str | None
    python: str | None
    created: datetime
    size: int  # bytes, as the engine reports them (shared layers counted in every image)

    @property
    def latest(self) -> bool:
        return any(tag.endswith(":latest") for tag in self.tags)

    def to_json(self) -> dict:
        return {"image": self.tags[0] if self.tags else self.image_id, "image_id": self.image_id, "tags": list(self.tags),
                "other_tags": list(self.other_tags), "project": self.project, "checkout": self.group,
                "plan_hash": self.plan_hash, "torch": self.torch, "flavor": self.flavor, "python": self.python,
                "created": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"), "size": self.size, "latest": self.latest}


@dataclass(frozen=True)
class PruneResult:
    kept: tuple[ImageEntry, ...]
    removed: tuple[ImageEntry, ...]
    in_use: tuple[ImageEntry, ...]  # superseded, but a running job (or any container) uses it: kept
    failed: tuple[tuple[ImageEntry, str], ...] = field(default=())  # the engine refused: (image, why)
    dry_run: bool = False

    def to_json(self) -> dict:
        return {"dry_run": self.dry_run, "kept": [e.to_json() for e in self.kept],
                "removed": [e.to_json() for e in self.removed], "in_use": [e.to_json() for e in self.in_use],
                "failed": [{**e.to_json(), "error": why} for e, why in self.failed],
                "freed_at_most": sum(e.size for e in self.removed)}


def project_checkout(path: str | Path, git_url: str | None = None) -> str:
    """The checkout digest of the project at `path` (a folder; resolved), or of a project fetched from `git_url`."""
    if git_url:
        return checkout_digest(checkout_identity(str(path), git_url))
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ProjectError("project-not-found", f"{path} is not a folder",
                         "pass the project's folder (or --all for every envbuilder image)")
    return checkout_digest(checkout_identity(str(folder.resolve())))


def source_checkout(source: str) -> str:
    """The checkout digest of SOURCE as the CLI names it: a folder, or a git URL (its credentials left out)."""
    from envbuilder.project.gitsource import looks_like_git_url, redact

    return project_checkout(source, git_url=redact(source) if looks_like_git_url(source) else None)


def image_ids(docker: Engine, refs: Iterable[str]) -> set[str]:
    """The ids of the images `refs` name that are here (what prune_images' in_use takes)."""
    found = (docker.image_inspect(ref) for ref in refs if ref)
    return {info["Id"] for info in found if info is not None}


def list_images(docker: Engine, checkout: str | None = None) -> list[ImageEntry]:
    """The images of one checkout (None: of every checkout), newest first."""
    summaries = docker.images_labelled(LABEL_CHECKOUT, checkout) if checkout else docker.images_labelled(LABEL_BUILD_KEY)
    entries = [_entry(s) for s in summaries]
    return sorted(entries, key=lambda e: (e.created, e.image_id), reverse=True)


def prune_images(docker: Engine, entries: Iterable[ImageEntry], *, keep: int, in_use: set[str],
                 dry_run: bool = False, on_removed: Callable[[ImageEntry], None] | None = None) -> PruneResult:
    """Remove each checkout's images but its newest `keep` (and any tagged :latest), never one whose id is in
    `in_use`. Only envbuilder's own tags are removed: an image the user also tagged stays under that tag."""
    if keep < 0:
        raise UsageError("usage", f"--keep {keep} is negative", "pass --keep N with N >= 0")
    kept, doomed, busy = [], [], []
    groups: dict[str, list[ImageEntry]] = {}
    for entry in sorted(entries, key=lambda e: (e.created, e.image_id), reverse=True):
        groups.setdefault(entry.group, []).append(entry)
    for group in groups.values():
        for rank, entry in enumerate(group):
            # :latest is what `run` and `docker run envbuilder/<project>-<checkout>` find; it is kept with the newest.
            if rank < keep or (entry.latest and keep > 0):
                kept.append(entry)
            elif entry.image_id in in_use:
                busy.append(entry)
            else:
                doomed.append(entry)
    removed, failed = [], []
    for entry in doomed:
        if dry_run:
            removed.append(entry)
            continue
        try:
            for ref in entry.tags or (entry.image_id,):  # untagged: by id
                docker.remove_image(ref)
        except EnvbuilderError as exc:
            # The engine refuses an image a container (running or stopped) was made from: kept, never forced.
            failed.append((entry, exc.message))
            continue
        removed.append(entry)
        if on_removed:
            on_removed(entry)
    return PruneResult(tuple(kept), tuple(removed), tuple(busy), tuple(failed), dry_run)


def _entry(summary: dict) -> ImageEntry:
    labels = summary.get("Labels") or {}
    tags = [t for t in summary.get("RepoTags") or () if t and t != "<none>:<none>"]
    ours = tuple(sorted((t for t in tags if t.startswith(IMAGE_REPO_PREFIX + "/")), key=lambda t: t.endswith(":latest")))
    # Before checkouts were labelled, one repository per project name: its legacy images group by repository
    # (an untagged one by the repository its project name gives).
    legacy = ours[0].rsplit(":", 1)[0] if ours else f"{IMAGE_REPO_PREFIX}/{slug(labels.get(LABEL_PROJECT, ''))}"
    group = labels.get(LABEL_CHECKOUT) or legacy
    created = summary.get("Created") or 0
    return ImageEntry(
        image_id=summary.get("Id", ""), tags=ours, other_tags=tuple(t for t in tags if t not in ours),
        project=labels.get(LABEL_PROJECT, ""), group=group, plan_hash=labels.get(LABEL_PLAN_HASH),
        torch=labels.get(LABEL_TORCH), flavor=labels.get(LABEL_FLAVOR), python=labels.get(LABEL_PYTHON),
        created=datetime.fromtimestamp(int(created), tz=timezone.utc), size=int(summary.get("Size") or 0),
    )


__all__ = ["ImageEntry", "PruneResult", "list_images", "project_checkout", "prune_images"]

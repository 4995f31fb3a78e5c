"""Image names and the build key: what decides an image's bytes, hashed, and the tags derived from it.

The build key is a sha256 over the Dockerfile text (rendered, or the user's edited copy), the ignore file, a
digest of the context files it lets through, and what identifies each base image on any machine: its
reference and its registry digest (asked of the registry when the base is not here, as on a fresh CI runner:
two machines building the same plan must get the same key, so one can reuse the image the other pushed; see
base_identity). CA bundles, credentials and proxies are left out: they reach
the build as BuildKit secrets and predefined proxy args, which change no layer, and the key is taken over the
Dockerfile as rendered without the secret mounts (build/image.py). The image is tagged `envbuilder/<project>-<checkout>:<key[:16]>`, so an unchanged project finds its image
with one inspect call, and `:latest` in the same repository names the checkout's newest build.
<checkout> is a short digest of what identifies one checkout of the project (its absolute path, or its git
remote for a project fetched by URL): two clones of one project, or two projects with the same name, each keep
their own `:latest` instead of overwriting the other's. Pure: imports nothing from envbuilder, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping

IMAGE_REPO_PREFIX = "envbuilder"
KEY_TAG_LENGTH = 16


def slug(name: str) -> str:
    """A Docker repository path component for a project name: lowercase [a-z0-9] runs joined by '-'."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return text[:64].rstrip("-") or "project"


CHECKOUT_DIGEST_LENGTH = 8


def checkout_digest(checkout: str) -> str:
    """The short digest of a checkout's identity (see checkout_identity) that its image repository carries."""
    return hashlib.sha256(checkout.encode()).hexdigest()[:CHECKOUT_DIGEST_LENGTH]


def checkout_identity(path: str, git_url: str | None = None) -> str:
    """What identifies one checkout: its git remote when fetched by URL (the cache folder is an implementation
    detail), else its absolute path."""
    return git_url or path


def image_repo(project_name: str, checkout: str) -> str:
    """envbuilder/<project slug>-<checkout>: one repository per checkout (`checkout`: its checkout_digest)."""
    return f"{IMAGE_REPO_PREFIX}/{slug(project_name)[:55].rstrip('-')}-{checkout}"


def key_tag(repo: str, key: str) -> str:
    """The content-addressed reference of a build: <repo>:<first 16 hex digits of the key>."""
    return f"{repo}:{key[:KEY_TAG_LENGTH]}"


def base_identity(ref: str, info: Mapping | None, registry_digest: str | None = None) -> str:
    """What identifies base image `ref` on every machine: the digest pinned in the reference, else the registry
    digest the local image was pulled with under this repository (its RepoDigests), else, for a base made here (by
    `envbuilder base bootstrap`), its image id (a digest of its config, kept by docker save/load), else what the
    registry answers for the reference (a machine that has not pulled it yet), else "" (no registry reachable:
    the reference alone). info: the local image's inspect dict, None when it is not here."""
    if "@" in ref:
        return ref.split("@", 1)[1]
    repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    digests = [d.partition("@") for d in (info or {}).get("RepoDigests") or () if "@" in d]
    for name, _, digest in digests:
        if name == repo or name.endswith("/" + repo) or repo.endswith("/" + name):
            return digest
    if info is not None:
        # A digest under another repository (the base pushed elsewhere once) is not what a machine that loaded or
        # pulled this reference sees; the image id (a digest of its config) is the same on all of them.
        return str(info.get("Id", ""))
    return registry_digest or ""


def build_key(dockerfile: str, ignore_file: str, context: str, base_ids: Mapping[str, str]) -> str:
    """sha256 hex over everything that decides the image's bytes (never secrets, proxies or credentials).
    base_ids: each base reference's base_identity."""
    h = hashlib.sha256()
    for part in ("dockerfile", dockerfile, "ignore", ignore_file, "context", context):
        h.update(part.encode() + b"\0")
    for ref in sorted(base_ids):
        h.update(f"base\0{ref}\0{base_ids[ref]}\0".encode())
    return h.hexdigest()


def base_images(dockerfile: str) -> tuple[str, ...]:
    """The images a Dockerfile starts from (FROM lines), leaving out references to its own stages."""
    stages: set[str] = set()
    found: list[str] = []
    for line in _logical_lines(dockerfile):
        words = line.split()
        if not words or words[0].upper() != "FROM":
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if not args:
            continue
        ref = args[0]
        if ref.lower() not in stages and ref != "scratch" and ref not in found:
            found.append(ref)
        if len(args) >= 3 and args[1].upper() == "AS":
            stages.add(args[2].lower())
    return tuple(found)


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") and not pending:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + stripped
        pending = ""
    if pending:
        yield pending

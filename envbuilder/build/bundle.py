"""Air-gap bundles: one tar that carries a built image to a machine with no network, and loading it back there.

A bundle holds `images.tar` (`docker save` of the project's image and, when it is local, the base it was built
on: one archive, so their shared layers are stored once), `requirements.lock` (every package the image's plan
installed, pinned, with the sha256 of each wheel), `wheels/` (those wheels, for the image's Python and
platform: what a rebuild at the site installs from, see docs/shipping.md) and, last, `manifest.json`: the
sha256 and size of every part, the images' references and ids, and the plan.

`load_bundle` reads the whole file and checks every part against the manifest (and, with `expect`, the
manifest against the digest `bundle` printed) before the engine sees a byte, so a tampered or truncated bundle
is refused whole; the image archive is hashed again while it streams into the engine, and images from a
stream that no longer matches are removed. Must not import the CLI or api.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO

from envbuilder import __version__
from envbuilder.build.image import BuiltImage
from envbuilder.build.wheelhouse import (
    ImagePackages,
    download_wheels,
    inspect_image_packages,
    locked_from_wheels,
    platform_tags,
)
from envbuilder.errors import EnvbuilderError, UsageError
from envbuilder.render import RenderOptions
from envbuilder.render.lock import check_lock, lock_sources, read_lock, render_lock
from envbuilder.resolve.plan import Plan

if TYPE_CHECKING:
    from envbuilder.docker.engine import Engine

BUNDLE_FORMAT = "envbuilder-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
IMAGES = "images.tar"
LOCK = "requirements.lock"
WHEELS = "wheels"
BASE_LABEL = "org.opencontainers.image.base.name"  # the rendered Dockerfile's record of its base image
_BLOCK = 512


@dataclass(frozen=True)
class BundlePart:
    path: str  # inside the bundle: images.tar, requirements.lock, wheels/<file>.whl
    sha256: str
    size: int
    kind: str  # "images", "lock", "wheel"


@dataclass(frozen=True)
class WrittenBundle:
    path: Path
    manifest_sha256: str  # compare it at the site: `envbuilder load FILE --expect sha256:<this>`
    size: int
    images: tuple[dict, ...]  # {"ref", "id", "role": "project" | "base"}
    wheels: int
    seconds: float

    def to_json(self) -> dict:
        return {"bundle": str(self.path), "manifest_sha256": f"sha256:{self.manifest_sha256}", "size": self.size,
                "images": list(self.images), "wheels": self.wheels, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class LoadedBundle:
    path: Path
    into: Path  # where the lock, the wheelhouse and the manifest now are
    manifest: dict
    manifest_sha256: str
    loaded: tuple[str, ...]  # what the engine reported loading
    seconds: float

    def to_json(self) -> dict:
        return {"bundle": str(self.path), "into": str(self.into), "manifest_sha256": f"sha256:{self.manifest_sha256}",
                "images": self.manifest["images"], "loaded": list(self.loaded), "plan_hash": self.manifest["plan_hash"],
                "wheels": sum(1 for p in self.manifest["parts"] if p["kind"] == "wheel"), "seconds": round(self.seconds, 3)}


# --- writing ---------------------------------------------------------------------------------------------


def write_bundle(built: BuiltImage, plan: Plan, options: RenderOptions, *, docker: Engine, output: Path,
                 lock: Path | None = None, check_plan: bool = True, ca_cert: Path | None = None,
                 proxies: Mapping[str, str] | None = None,
                 on_step: Callable[[str], None] | None = None) -> WrittenBundle:
    """Write the bundle of a built image to `output` (a new file; the old one is replaced only on success).

    lock: a hashed requirements lock the image was built with (`build --lock`); without it, the lock is made
    from the wheels of the versions the image holds. check_plan: the lock must install the plan's torch build
    (off for images from an edited Dockerfile, which may install something else)."""
    started = time.monotonic()
    step = on_step or (lambda _: None)
    output = Path(output).resolve()
    if output.is_dir():
        raise UsageError("bundle-output-invalid", f"{output} is a folder", "pass a file name: -o NAME.tar")
    output.parent.mkdir(parents=True, exist_ok=True)
    step(f"reading the packages installed in {built.image}")
    packages = inspect_image_packages(docker, built.image)
    images = _bundled_images(docker, built)
    staging = Path(tempfile.mkdtemp(prefix=".envbuilder-bundle-", dir=output.parent))
    partial = output.with_name(output.name + ".partial")
    try:
        wheels_dir = staging / WHEELS
        step(f"downloading {len(packages.packages)} wheels for CPython {packages.python} ({packages.machine})")
        lock_text = _wheelhouse(plan, options, packages, wheels_dir, lock=lock, check_plan=check_plan,
                                ca_cert=ca_cert, proxies=proxies)
        (staging / LOCK).write_text(lock_text, encoding="utf-8")
        wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
        step(f"saving {', '.join(i['ref'] for i in images)} into {output.name}")
        with open(partial, "wb") as out:
            parts = [_add_member(out, IMAGES, docker.save_images([i["ref"] for i in images]), "images"),
                     _add_file(out, LOCK, staging / LOCK, "lock"),
                     *(_add_file(out, f"{WHEELS}/{w.name}", w, "wheel") for w in wheels)]
            manifest = _manifest(built, plan, images, parts, packages)
            manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
            _add_member(out, MANIFEST, [manifest_bytes], "manifest")
            out.write(b"\0" * (2 * _BLOCK))  # end of archive
        os.replace(partial, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return WrittenBundle(output, hashlib.sha256(manifest_bytes).hexdigest(), output.stat().st_size, tuple(images),
                         len(wheels), time.monotonic() - started)


def _bundled_images(docker: Engine, built: BuiltImage) -> list[dict]:
    """The project's image, and its base when that is on this engine (it keys the build: see build/key.py)."""
    info = docker.image_inspect(built.image)
    if info is None:
        raise EnvbuilderError("bundle-image-missing", f"{built.image} is not on this engine", "build it again")
    images = [{"ref": built.image, "id": info["Id"], "role": "project"}]
    base = ((info.get("Config") or {}).get("Labels") or {}).get(BASE_LABEL)
    base_info = docker.image_inspect(base) if base else None
    if base_info is not None:
        images.append({"ref": base, "id": base_info["Id"], "role": "base"})
    return images


def _wheelhouse(plan: Plan, options: RenderOptions, packages: ImagePackages, dest: Path, *, lock: Path | None,
                check_plan: bool, ca_cert: Path | None, proxies: Mapping[str, str] | None) -> str:
    """Download the wheels into dest; the lock text (the given lock, or one made from the wheels' hashes)."""
    sources = _source_lines(plan, options)
    if lock is not None:
        text = Path(lock).read_text(encoding="utf-8")
        locked = read_lock(text, str(lock))
        _check_lock_matches_image(locked, packages, str(lock))
        if check_plan:
            check_lock(plan, locked, str(lock))
        download_wheels(dest, text, packages, hashed=True, ca_cert=ca_cert, proxies=proxies)
    else:
        if packages.packages:
            download_wheels(dest, sources + "".join(f"{p}\n" for p in packages.pins()), packages, hashed=False,
                            ca_cert=ca_cert, proxies=proxies)
        locked = locked_from_wheels(sorted(dest.glob("*.whl")), packages.packages)
        if check_plan:
            check_lock(plan, locked, "the image's packages")
        text = render_lock(plan, options, locked, format="requirements")
    if packages.installer:
        # The installer the Dockerfile bootstraps (pip install uv==X): a rebuild at the site needs it too.
        download_wheels(dest, sources + f"uv=={packages.installer}\n", packages, hashed=False, ca_cert=ca_cert,
                        proxies=proxies)
    return text


def _source_lines(plan: Plan, options: RenderOptions) -> str:
    default, extras, links = lock_sources(plan, options)
    lines = [f"--index-url {default}", *(f"--extra-index-url {u}" for u in extras), *(f"--find-links {f}" for f in links)]
    return "".join(f"{line}\n" for line in lines)


def _check_lock_matches_image(locked, packages: ImagePackages, origin: str) -> None:
    have = {_normal(name): version for name, version in packages.packages}
    for package in locked:
        found = have.get(_normal(package.name))
        if package.version and found != package.version:
            state = f"has {package.name}=={found}" if found else f"has no {package.name}"
            raise EnvbuilderError("bundle-lock-mismatch", f"{origin} pins {package.name}=={package.version} but the image {state}",
                                  "pass the lock the image was built with (`build --lock` and `bundle --lock` take the same file)")


def _manifest(built: BuiltImage, plan: Plan, images: list[dict], parts: Iterable[BundlePart],
              packages: ImagePackages) -> dict:
    return {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "envbuilder": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "project": plan.project_name, "plan_hash": built.plan_hash, "build_key": built.build_key,
        "images": images, "python": packages.python, "machine": packages.machine, "glibc": packages.glibc,
        "platform_tags": list(platform_tags(packages.machine, packages.glibc)), "installer": packages.installer,
        "parts": [vars(p) for p in parts], "plan": plan.to_json(),
    }


def _add_file(out: BinaryIO, name: str, path: Path, kind: str) -> BundlePart:
    def chunks():
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk

    return _add_member(out, name, chunks(), kind)


def _add_member(out: BinaryIO, name: str, chunks: Iterable[bytes], kind: str) -> BundlePart:
    """Append a tar member whose size is known only at its end (a `docker save` stream): a placeholder header,
    the data, then the real header written in its place. No temporary copy of a multi-GB archive is needed."""
    start = out.tell()
    reserved = len(_header(name, 0))  # a long name takes extra GNU blocks; their count depends on the name only
    out.write(b"\0" * reserved)
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    out.write(b"\0" * (-size % _BLOCK))
    end = out.tell()
    header = _header(name, size)
    if len(header) != reserved:  # cannot happen with GNU headers; never overwrite the member's data
        raise EnvbuilderError("bundle-write-failed", f"the tar header of {name} changed size", "report this as a bug")
    out.seek(start)
    out.write(header)
    out.seek(end)
    return BundlePart(name, digest.hexdigest(), size, kind)


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, int(time.time()), tarfile.REGTYPE
    return info.tobuf(tarfile.GNU_FORMAT)  # GNU: a size over 8 GiB still fits the main block (base-256)


# --- loading ---------------------------------------------------------------------------------------------


def load_bundle(path: Path, *, docker: Engine, into: Path | None = None, expect: str | None = None,
                on_step: Callable[[str], None] | None = None) -> LoadedBundle:
    """Verify every part of the bundle at `path`, then load its images and put its lock, wheelhouse and
    manifest in `into` (default: NAME-bundle beside NAME.tar; a folder of other files is refused). Nothing is
    loaded or written there unless every checksum matches."""
    started = time.monotonic()
    step = on_step or (lambda _: None)
    path = Path(path).resolve()
    if not path.is_file():
        raise UsageError("bundle-not-found", f"{path} does not exist", "pass the file `envbuilder bundle -o` wrote")
    into = Path(into).resolve() if into else path.with_name(f"{path.stem}-bundle")
    if into.exists() and not into.is_dir():
        raise UsageError("bundle-output-invalid", f"{into} exists and is not a folder", "pass --into DIR")
    if into.is_dir() and any(into.iterdir()) and not (into / MANIFEST).is_file():
        # Never unpack into a folder of other files (a project folder named like the bundle, say).
        raise UsageError("bundle-output-invalid", f"{into} holds other files", "pass --into an empty or new folder")
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".envbuilder-load-", dir=into))
    try:
        step(f"verifying {path.name}")
        manifest, manifest_sha, images_at = _verify(path, staging, expect)
        step(f"loading {', '.join(i['ref'] for i in manifest['images'])}")
        loaded = _load_images(path, images_at, manifest, docker)
        for item in staging.iterdir():
            target = into / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return LoadedBundle(path, into, manifest, manifest_sha, loaded, time.monotonic() - started)


def _verify(path: Path, staging: Path, expect: str | None) -> tuple[dict, str, tuple[int, int]]:
    """Hash every member (extracting all but the image archive into staging) and check them against the
    manifest. Returns the manifest, its sha256, and (offset, size) of the image archive in the file."""
    seen: dict[str, tuple[str, int]] = {}
    images_at = None
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                name = _safe_member_name(member)
                if name in seen:
                    raise _tampered(f"{name} appears twice in the bundle")
                source = tar.extractfile(member)
                if name == IMAGES:
                    images_at = (member.offset_data, member.size)
                    seen[name] = (_hash_stream(source, None), member.size)
                else:
                    target = staging / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as sink:
                        seen[name] = (_hash_stream(source, sink), member.size)
    except (tarfile.TarError, EOFError) as exc:
        raise EnvbuilderError("bundle-incomplete", f"{path.name} is not a whole bundle: {exc}",
                              "the copy was cut short or is not a bundle: copy it again") from None
    if MANIFEST not in seen:
        raise EnvbuilderError("bundle-invalid", f"{path.name} has no {MANIFEST}",
                              "it was not written by `envbuilder bundle`, or the copy was cut short")
    manifest_sha = seen.pop(MANIFEST)[0]
    if expect and expect.removeprefix("sha256:").lower() != manifest_sha:
        raise EnvbuilderError("bundle-digest-mismatch", f"the manifest's sha256 is {manifest_sha}, not {expect}",
                              "this is not the bundle that was announced: get it again from its source")
    manifest = _read_manifest(staging / MANIFEST)
    parts = {p["path"]: p for p in manifest["parts"]}
    for name in seen.keys() - parts.keys():
        raise _tampered(f"{name} is in the bundle but not in its manifest")
    for name in parts.keys() - seen.keys():
        raise EnvbuilderError("bundle-incomplete", f"{name} is missing from {path.name}", "copy the bundle again")
    for name, (digest, size) in sorted(seen.items()):
        if digest != parts[name]["sha256"] or size != parts[name]["size"]:
            raise _tampered(f"{name} does not match the manifest (sha256 {digest[:16]}…, expected {parts[name]['sha256'][:16]}…)")
    if images_at is None:
        raise EnvbuilderError("bundle-incomplete", f"{IMAGES} is missing from {path.name}", "copy the bundle again")
    return manifest, manifest_sha, images_at


def _safe_member_name(member: tarfile.TarInfo) -> str:
    """A member name the bundle format allows: a regular file, manifest/images/lock or wheels/<file>.whl."""
    name = member.name
    pure = PurePosixPath(name)
    allowed = name in (MANIFEST, IMAGES, LOCK) or (
        len(pure.parts) == 2 and pure.parts[0] == WHEELS and pure.suffix == ".whl" and not pure.name.startswith("."))
    if not member.isreg() or not allowed or ".." in pure.parts:
        raise _tampered(f"unexpected member {name!r} in the bundle")
    return name


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ValueError("not an envbuilder bundle manifest")
        for part in manifest["parts"]:
            part["path"], part["sha256"], part["size"]  # noqa: B018 - every part names these
        for image in manifest["images"]:
            image["ref"], image["id"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as exc:
        raise EnvbuilderError("bundle-invalid", f"the bundle's manifest is not valid: {exc}",
                              "it was not written by `envbuilder bundle`, or it was edited") from None
    if manifest.get("version") != BUNDLE_VERSION:
        raise EnvbuilderError("bundle-unsupported", f"bundle format version {manifest.get('version')} is not {BUNDLE_VERSION}",
                              f"load it with the envbuilder that wrote it ({manifest.get('envbuilder', 'unknown')})")
    return manifest


def _load_images(path: Path, images_at: tuple[int, int], manifest: dict, docker: Engine) -> tuple[str, ...]:
    offset, size = images_at
    expected = next(p["sha256"] for p in manifest["parts"] if p["path"] == IMAGES)
    with open(path, "rb") as f:
        f.seek(offset)
        reader = _MemberReader(f, size)
        loaded = docker.load_images(reader)
        reader.drain()
    if reader.sha256() != expected:  # the file changed between the check and the load
        for image in manifest["images"]:
            if image["role"] == "project":
                docker.remove_image(image["ref"], force=True)
        raise _tampered(f"{IMAGES} changed while it was loaded")
    for image in manifest["images"]:
        info = docker.image_inspect(image["ref"])
        if info is None or info["Id"] != image["id"]:
            found = info["Id"] if info else "nothing"
            raise EnvbuilderError("bundle-load-failed", f"after loading, {image['ref']} is {found}, not {image['id']}",
                                  "rerun with -v; the engine may have refused part of the archive")
    return loaded


class _MemberReader(io.RawIOBase):
    """One tar member of an open file as a stream of known length (requests sends it with Content-Length),
    hashed as it is read."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left, self._size = f, size, size
        self._digest = hashlib.sha256()

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size - self._left

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        data = self._f.read(min(len(buffer), self._left))
        if not data:
            raise EnvbuilderError("bundle-incomplete", "the bundle ended inside the image archive", "copy it again")
        buffer[: len(data)] = data
        self._left -= len(data)
        self._digest.update(data)
        return len(data)

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    def sha256(self) -> str:
        return self._digest.hexdigest()


def _hash_stream(source: BinaryIO | None, sink: BinaryIO | None) -> str:
    digest = hashlib.sha256()
    while source is not None and (chunk := source.read(1 << 20)):
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest()


def _tampered(what: str) -> EnvbuilderError:
    return EnvbuilderError("bundle-tampered", what,
                           "the file changed after `envbuilder bundle` wrote it (damaged or altered in transit): "
                           "nothing was loaded; copy it again and compare the manifest digest bundle printed")


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


__all__ = ["BundlePart", "LoadedBundle", "WrittenBundle", "load_bundle", "write_bundle"]

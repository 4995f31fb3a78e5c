"""Registries: push a build under its content-addressed tag, reuse the image another machine pushed under it,
a digest in the `registry` default (envbuilder.defaults), and `login`.

The content-addressed tag is `REGISTRY/REPO:<key[:16]>` (build/key.py): every machine that computes the same
plan over the same files computes the same tag, so before building, `build --push` asks the registry whether
that tag exists (the engine's GET /distribution/REF/json: a HEAD of the manifest, with the engine's TLS trust
and Docker's credentials) and pulls it instead. Credentials stay in Docker's own config.json and credential
helpers: nothing here reads, logs or records them (`login` hands the password to the docker CLI on stdin).
Registry failures arrive diagnosed from the engine (docker/diagnose.py); here they get the registry's hint.
Must not import the CLI.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from envbuilder.build.inputs import check_ca_bundle
from envbuilder.build.key import KEY_TAG_LENGTH
from envbuilder.defaults import repository_problem
from envbuilder.errors import DockerError, EnvbuilderError, UsageError

if TYPE_CHECKING:
    from envbuilder.docker.engine import Engine

# dockerd trusts a registry's private CA from this folder, read at each connection (no restart needed).
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class RegistryOptions:
    """Where a build is pushed and reused from. repository None: no registry (a local build)."""

    repository: str | None = None  # REGISTRY/REPO
    push: bool = True  # False: a configured registry is only read for reuse (no --push given)
    reuse: bool = True  # False (--no-reuse): build even when the registry has the content-addressed tag
    tags: tuple[str, ...] = ()  # extra tags to push: TAG (REGISTRY/REPO:TAG) or a whole reference


@dataclass(frozen=True)
class Pushed:
    """What a push stored: the manifest digest of the content-addressed reference, and every reference pushed."""

    digest: str
    refs: tuple[str, ...]


def check_repository(repository: str, *, option: str = "--push") -> str:
    """REGISTRY/REPO as given, or a UsageError (bad-registry) saying what a push target looks like."""
    if repository_problem(repository):
        raise UsageError("bad-registry", f"{option} {repository!r} is not a repository",
                         f"pass REGISTRY/REPO without a tag, e.g. {option} ghcr.io/acme/demo or 127.0.0.1:5000/demo")
    return repository.strip().rstrip("/")


def content_ref(repository: str, key: str) -> str:
    """The content-addressed reference of a build in a registry: REGISTRY/REPO:<key[:16]>."""
    return f"{repository}:{key[:KEY_TAG_LENGTH]}"


def push_refs(options: RegistryOptions, key: str) -> tuple[str, ...]:
    """Every reference a push stores: the content-addressed one first, then the extra tags."""
    assert options.repository is not None
    refs = [content_ref(options.repository, key)]
    for tag in options.tags:
        if "/" in tag or ":" in tag:
            refs.append(tag)
        elif _TAG.match(tag):
            refs.append(f"{options.repository}:{tag}")
        else:
            raise UsageError("bad-registry", f"--tag {tag!r} is not a tag", "use letters, digits, '_', '.' and '-'")
    return tuple(dict.fromkeys(refs))


def expand_image_ref(ref: str, repository: str | None) -> str:
    """`run --image @sha256:...`: the digest in `repository`, the `registry` default (REGISTRY/REPO@sha256:...);
    any other reference as it is."""
    if not ref.startswith("@"):
        return ref
    if not re.fullmatch(r"@sha256:[0-9a-f]{64}", ref):
        raise UsageError("bad-registry", f"--image {ref} is not a digest", "pass @sha256:<64 hex digits>")
    if repository is None:
        raise UsageError("bad-registry", f"--image {ref} names a digest but no registry holds it",
                         f"pass REGISTRY/REPO{ref}, or set registry = \"REGISTRY/REPO\" in the user config's "
                         "[defaults] (or $ENVBUILDER_REGISTRY)")
    return repository + ref


@contextlib.contextmanager
def registry_errors(registry: str) -> Iterator[None]:
    """A registry failure with the registry's own hint: how to log in, how to trust its CA."""
    host = registry.split("/", 1)[0]
    try:
        yield
    except DockerError as exc:
        if exc.code == "tls-untrusted":
            raise exc.replaced(
                code="registry-untrusted",
                hint=f"the Docker engine does not trust {host}'s certificate: `envbuilder login {host} --ca-cert "
                     f"CA.pem` installs the CA where the engine reads it ({DOCKER_CERTS_D}/{host}/ca.crt)") from None
        if exc.code == "registry-auth":
            raise exc.replaced(
                hint=f"log in first: `envbuilder login {host} -u USER --password-stdin` (or `docker login "
                          f"{host}`; Docker's credential helpers work too)") from None
        raise


def find_in_registry(docker: Engine, ref: str) -> str | None:
    """The manifest digest the registry holds for ref, or None when it has no such tag."""
    with registry_errors(ref):
        return docker.registry_digest(ref)


def pull_reused(docker: Engine, ref: str, local_tags: Sequence[str]) -> str:
    """Pull ref (built elsewhere) and give it the build's local tags; the image id."""
    with registry_errors(ref):
        docker.pull(ref, what=f"reusing {ref}")
    info = docker.image_inspect(ref)
    if info is None:
        raise DockerError("image-not-found", f"pulling {ref} left no image", "rerun with -v")
    for tag in local_tags:
        docker.tag(info["Id"], tag)
    return info["Id"]


def push_image(docker: Engine, image: str, refs: Sequence[str], *,
               on_line: Callable[[str], None] | None = None) -> Pushed:
    """Tag `image` as each ref and push it; the digest is the first (content-addressed) ref's."""
    digests = []
    for ref in refs:
        docker.tag(image, ref)
        with registry_errors(ref):
            digests.append(docker.push(ref, on_line=on_line))
    return Pushed(digests[0], tuple(refs))


def login(docker: Engine, registry: str, username: str, password: str, *, ca_cert: Path | None = None) -> str:
    """Store credentials for `registry` in Docker's config (through `docker login`), after trusting ca_cert for
    it when given. The docker CLI's answer ("Login Succeeded")."""
    host = registry.strip().rstrip("/").split("/", 1)[0]
    if not host or any(c.isspace() for c in host):
        raise UsageError("bad-registry", f"{registry!r} is not a registry host", "pass HOST[:PORT], e.g. ghcr.io")
    if not password:
        raise UsageError("usage", "no password on standard input", f"pipe it: echo \"$TOKEN\" | envbuilder login {host} "
                                                                   "-u USER --password-stdin")
    if ca_cert is not None:
        trust_registry_ca(host, ca_cert)
    with registry_errors(host):
        return docker.login(host, username, password)


def trust_registry_ca(host: str, ca_cert: Path, certs_d: Path = DOCKER_CERTS_D) -> Path:
    """Install ca_cert as the CA the engine trusts for host (certs.d/HOST/ca.crt); the file written."""
    source = check_ca_bundle(ca_cert)
    target = certs_d / host / "ca.crt"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    except OSError as exc:
        raise EnvbuilderError(
            "registry-ca-not-written", f"cannot write {target}: {exc.strerror}",
            f"run as root, or copy it yourself: sudo install -D -m 0644 {source} {target}") from None
    return target


__all__ = ["Pushed", "RegistryOptions", "check_repository", "content_ref", "expand_image_ref",
           "find_in_registry",
           "login", "pull_reused", "push_image", "push_refs", "registry_errors", "trust_registry_ca"]

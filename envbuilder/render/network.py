"""Where packages come from: the install steps every renderer shares, and the network options of a build.

`install_steps` decides, once for every output format, which requirements are installed in which step and
from which indexes, so a Dockerfile, a bash script, a PowerShell script and a lock agree. `NetworkOptions`
is what the CLI's network flags produce (mirrors, CA bundle, proxies); it turns into RenderOptions for
the renderers and into build arguments/secrets for the builder. URL options may carry credentials
(user:password@): NetworkOptions keeps them as given (readers of the indexes need them), RenderOptions gets the
URLs without them, and they reach builds as the netrc secret (`credentials`, redact.netrc_text), so no rendered
file, plan, label or record holds them. Pure: no I/O. Must not import docker or proc.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from envbuilder.errors import EnvbuilderError, UsageError
from envbuilder.project.spec import TORCH_COMPANIONS
from envbuilder.redact import redact_url, split_credentials, url_credentials, url_has_credentials
from envbuilder.resolve.plan import Plan
from envbuilder.render import RenderOptions
from envbuilder.values import Value

DEFAULT_INDEX_URL = "https://pypi.org/simple"
# Docker's predefined proxy build args (docs.docker.com, "Predefined ARGs").
PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")


class LockedPackage(Value):
    """One package of a resolved set, at an exact version, with the hashes of its distribution files."""

    name: str
    version: str  # exact, local part included; "" for a direct URL requirement
    index_url: str | None = None  # the index it was found on (uv's index annotation); None: unknown
    url: str | None = None  # a direct URL requirement (`name @ url`)
    hashes: tuple[str, ...] = ()  # "sha256:<hex>", every distribution file of that version
    required_by: tuple[str, ...] = ()  # what pulled it in ("-r -": asked for directly)

    @property
    def requirement(self) -> str:
        return f"{self.name} @ {self.url}" if self.url else f"{self.name}=={self.version}"

    @property
    def hashed_line(self) -> str:
        """One requirements-file line that `--require-hashes` accepts."""
        return " ".join([self.requirement, *(f"--hash={h}" for h in self.hashes)])


class InstallStep(Value):
    """One installer invocation: requirements and the package locations it may use."""

    # torch and its companions; the project's dependencies; the project's build requirements (a build without
    # isolation); the project itself (editable, no dependencies).
    name: Literal["torch", "dependencies", "build", "project"]
    requirements: tuple[str, ...]
    # A locked step installs exactly these files (hash-checked, no dependency resolution) instead.
    locked: tuple[LockedPackage, ...] = ()
    index_url: str  # the default index
    # Priority order. uv looks in these before index_url and, with its default first-index strategy, takes
    # a package only from the first index that has its name. pip merges all of them; exact pins (torch's
    # +local version) are what keep it on the right build.
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()


def torch_index_url(plan: Plan, options: RenderOptions) -> str | None:
    """The flavour's index (or its mirror); None for the "default" flavour, which comes from the default index."""
    if plan.torch.flavor == "default":
        return None
    url = options.torch_index_url or plan.torch.index_url
    return None if url == default_index_url(options) else url


def default_index_url(options: RenderOptions) -> str:
    return options.index_url or DEFAULT_INDEX_URL


def torch_pins(plan: Plan) -> tuple[str, ...]:
    """torch and the companions built with it, exact versions (local part included).

    A project that names its torch wheel by URL gets that file (`torch @ URL`); a `#sha256=` fragment on the
    URL is checked by the installer, and a lock (render.lock) pins its hash either way."""
    family = sorted(c.pin for name, c in plan.companions.items() if _in_torch_step(plan, name))
    torch = f"torch @ {plan.torch.url}" if plan.torch.url else f"torch=={plan.torch.local}"
    return (torch, *family)


def install_steps(plan: Plan, options: RenderOptions, locked: tuple[LockedPackage, ...] | None = None) -> tuple[InstallStep, ...]:
    """The torch step, then (when there is anything to install) the project dependencies step.

    With `locked` (a resolved set, checked against the plan by lock.check_lock), the torch step installs the
    locked torch family and the dependencies step everything else, by hash and without resolving again.
    """
    if locked is not None:
        return _locked_steps(plan, options, locked)
    for requirement in (*plan.dependencies, *(c.pin for c in plan.companions.values()), plan.torch.local):
        if requirement.lstrip().startswith("-"):
            raise EnvbuilderError("render-unsafe-value", f"requirement {requirement!r} starts with '-', "
                                  "which an installer would read as an option", "requirements are PEP 508 strings")
    default = default_index_url(options)
    torch_url = torch_index_url(plan, options)
    steps = [InstallStep(name="torch", requirements=torch_pins(plan), index_url=default,
                         extra_index_urls=(torch_url,) if torch_url else (), find_links=options.find_links)]

    others = [c for name, c in sorted(plan.companions.items()) if not _in_torch_step(plan, name)]
    if plan.dependencies or others:
        # The torch pins ride along as requirements: they are installed already, so the installer keeps
        # them, and a dependency that wants another torch build fails loudly instead of swapping it.
        requirements = (*plan.dependencies, *(c.pin for c in others), *torch_pins(plan))
        steps.append(_project_sources("dependencies", _unique(requirements), plan, options))
    return tuple(steps)


def project_steps(plan: Plan, options: RenderOptions, project_dir: str) -> tuple[InstallStep, ...]:
    """How the project itself is installed (nothing when it is not a package): editable from `project_dir`,
    without dependencies (the earlier steps installed them), from the dependencies' package locations, where
    an isolated build finds its build backend.

    When the build needs torch (plan.build_requires_torch), the project is built without isolation, against
    the installed torch: a "build" step first installs its other build requirements with the torch pins."""
    if plan.install is None:
        return ()
    steps = []
    if plan.build_requires_torch:
        family = {"torch", *(name for name in plan.companions if _in_torch_step(plan, name))}
        wanted = [r for r in plan.install.requires if _requirement_name(r) not in family]
        steps.append(_project_sources("build", _unique((*wanted, *torch_pins(plan))), plan, options))
    steps.append(_project_sources("project", (project_dir,), plan, options))
    return tuple(steps)


def _project_sources(name: Literal["dependencies", "build", "project"], requirements: tuple[str, ...], plan: Plan,
                     options: RenderOptions) -> InstallStep:
    """A step that installs from where the project's packages come from: the default index, the project's own
    indexes and find-links, the companions' indexes and the extra indexes given."""
    default = default_index_url(options)
    others = [c for n, c in sorted(plan.companions.items()) if not _in_torch_step(plan, n)]
    extras = [*(d.url for d in plan.indexes if d.kind != "find-links"), *(c.index_url for c in others if c.index_url),
              *options.extra_index_urls]
    find_links = [*options.find_links, *(d.url for d in plan.indexes if d.kind == "find-links")]
    return InstallStep(name=name, requirements=requirements, index_url=default,
                       extra_index_urls=_unique(u for u in extras if u != default), find_links=_unique(find_links))


def _requirement_name(text: str) -> str:
    return _normal(re.split(r"[\s\[<>=!~;@(]", text.strip(), maxsplit=1)[0])


def _locked_steps(plan: Plan, options: RenderOptions, locked: tuple[LockedPackage, ...]) -> tuple[InstallStep, ...]:
    default = default_index_url(options)
    torch_url = torch_index_url(plan, options)
    family = {"torch", *(name for name in plan.companions if _in_torch_step(plan, name))}
    torch_part = tuple(p for p in locked if _normal(p.name) in family)
    rest = tuple(p for p in locked if _normal(p.name) not in family)
    extras = _unique([*((torch_url,) if torch_url else ()), *(d.url for d in plan.indexes if d.kind != "find-links"),
                      *options.extra_index_urls])
    steps = [InstallStep(name="torch", requirements=tuple(p.requirement for p in torch_part), locked=torch_part,
                         index_url=default, extra_index_urls=(torch_url,) if torch_url else (), find_links=options.find_links)]
    if rest:
        steps.append(InstallStep(name="dependencies", requirements=tuple(p.requirement for p in rest), locked=rest,
                                 index_url=default, extra_index_urls=tuple(u for u in extras if u != default),
                                 find_links=options.find_links))
    return tuple(steps)


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def refuse_credentials(plan: Plan, options: RenderOptions, where: str) -> None:
    """A Dockerfile or lock keeps every URL it names (image history, a committed file): refuse user:password@."""
    urls = [options.index_url, *options.extra_index_urls, options.torch_index_url, *options.find_links,
            plan.torch.index_url, *(d.url for d in plan.indexes), *(c.index_url for c in plan.companions.values())]
    for url in urls:
        if url and url_has_credentials(url):
            raise UsageError(
                "credentials-in-url", f"{redact_url(url)} carries credentials, which {where} would keep",
                "put them in a .netrc file and pass --netrc FILE (a BuildKit secret), then use the URL without user:password@")


def _in_torch_step(plan: Plan, name: str) -> bool:
    # Built on the torch index with the same local version (+cu128, +rocm6.3): installed in the torch step.
    companion = plan.companions[name]
    return name in TORCH_COMPANIONS or (companion.index_url is not None and companion.index_url == plan.torch.index_url)


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


class NetworkOptions(Value):
    """The network defaults of `render`, `build` and `run` (envbuilder.defaults), as typed: mirrors, wheel
    locations, CA bundle, proxies, the Docker network and the registry builds are reused from."""

    base_image: str | None = None
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    torch_index_url: str | None = None
    find_links: tuple[str, ...] = ()
    ca_cert: str | None = None  # a PEM bundle on this machine (already resolved from --ca-cert / --host-ca)
    http_proxy: str | None = None
    https_proxy: str | None = None
    no_proxy: str | None = None
    network: Literal["default", "host", "none"] | None = None  # docker --network for builds and runs
    registry: str | None = None  # REGISTRY/REPO a build is reused from (envbuilder.build.registry); never rendered

    def render_options(self, *, venv: str | None = None, copy_project: bool = True, netrc: bool = False,
                       uv_version: str | None = None) -> RenderOptions:
        """RenderOptions with the same meaning: the CA becomes a BuildKit secret (Dockerfile) and a path (scripts);
        URLs lose their credentials, which a Dockerfile then reads from the netrc secret (see `credentials`)."""
        extra = {"uv_version": uv_version} if uv_version else {}
        return RenderOptions(
            base_image=self.base_image, index_url=_bare(self.index_url),
            extra_index_urls=tuple(_bare(u) for u in self.extra_index_urls),
            torch_index_url=_bare(self.torch_index_url), find_links=tuple(_bare(u) for u in self.find_links),
            ca_cert=self.ca_cert is not None, ca_cert_path=self.ca_cert, netrc=netrc or bool(self.credentials()),
            venv=venv, copy_project=copy_project, **extra,
        )

    def credentials(self) -> dict[str, tuple[str, str | None]]:
        """{host: (user, password)} of the URL options that carry credentials: what a build's netrc secret holds.
        UsageError when a .netrc file cannot hold them (two logins for one host, characters it cannot quote)."""
        try:
            return url_credentials((self.index_url, *self.extra_index_urls, self.torch_index_url, *self.find_links))
        except ValueError as exc:
            raise UsageError("credentials-unusable", str(exc),
                             "give each host one login, or put the credentials in a .netrc file and pass "
                             "--netrc FILE with the URLs bare") from None

    def proxy_env(self) -> dict[str, str]:
        """Proxy variables, both spellings (see proxy_build_args)."""
        return proxy_build_args({"HTTP_PROXY": self.http_proxy, "HTTPS_PROXY": self.https_proxy,
                                 "NO_PROXY": self.no_proxy})


def _bare(url: str | None) -> str | None:
    return None if url is None else split_credentials(url)[0]


def proxy_build_args(proxies: Mapping[str, str | None]) -> dict[str, str]:
    """Proxy variables as build args, in both spellings (tools read either); empty values are dropped.

    Only Docker's predefined proxy args are accepted: they reach RUN steps without an ARG line and are left
    out of the image's history, where any other build arg (a token, say) would be kept."""
    args: dict[str, str] = {}
    for key, value in proxies.items():
        if key.upper() not in PROXY_ARGS:
            raise EnvbuilderError("bad-proxy-arg", f"{key} is not a proxy variable",
                                  f"pass only {', '.join(PROXY_ARGS)} (either case)")
        if value:
            args[key.upper()] = value
            args[key.lower()] = value
    return args

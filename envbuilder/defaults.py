"""Layered build and network defaults: which base image, indexes, CA bundle, proxies and network a command uses
when its flags do not say, and where each value came from.

    1. the project's [tool.envbuilder.defaults] (or [defaults] in envbuilder.toml)   lowest
    2. the user config's [defaults] table (Settings.config_paths: the first file that exists)
    3. environment variables (ENVBUILDER_*, and the usual HTTP_PROXY / HTTPS_PROXY / NO_PROXY)
    4. flags                                                                          highest

A later layer replaces a value as a whole (a list too: lists are not concatenated across layers), so what
`build` used is always one layer's word, and `envbuilder config show` can name it. KEYS is the one table of
keys: the TOML names, the variables, the flags, the docs. What describes this machine's network (network,
the CA bundle, proxies) is not the project's to say, whether it is a local folder or a git URL (see
envbuilder.run.trust and docs/security.md): the project layer refuses those keys.

Pure but for reading the user config and checking that named files exist; the environment is a parameter.
Foundation: imports only errors, notices' peers and the standard library; no pydantic (run --image reads this).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from envbuilder.errors import ProjectError, UsageError

TABLE = "defaults"
NETWORKS = ("default", "host", "none")
# Debian/Ubuntu, Red Hat/Fedora, then macOS/Alpine: where each keeps the system's CA bundle.
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
INDEX_SCHEMES = ("http", "https", "file")  # what pip and uv read an index or find-links location from
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
# Docker's reference grammar, reduced to what a push target is: [HOST[:PORT]/]PATH, lowercase path components.
_REPOSITORY = r"^(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"

# The values below are NamedTuples, not dataclasses: every run reads the defaults (its network), and defining
# these five as dataclasses cost `run --image` ~4 ms.


class DefaultKey(NamedTuple):
    """One default: its TOML key (also the flag's name), the NetworkOptions field it fills, its variables."""

    name: str
    field: str
    kind: str  # url | urls | links | text | path | network | proxy | repository
    env: tuple[str, ...]
    help: str
    project: bool = True  # may a project's config set it? (what describes this machine's network may not)


KEYS: tuple[DefaultKey, ...] = (
    DefaultKey("base-image", "base_image", "text", ("ENVBUILDER_BASE_IMAGE",),
               "Base image instead of python:X.Y-slim-bookworm."),
    DefaultKey("index-url", "index_url", "url", ("ENVBUILDER_INDEX_URL",), "Default package index (a PyPI mirror)."),
    # Whitespace-separated in the variable, as pip reads PIP_EXTRA_INDEX_URL and PIP_FIND_LINKS.
    DefaultKey("extra-index-url", "extra_index_urls", "urls", ("ENVBUILDER_EXTRA_INDEX_URL",),
               "Additional package indexes, in priority order."),
    DefaultKey("torch-index-url", "torch_index_url", "url", ("ENVBUILDER_TORCH_INDEX_URL",),
               "Mirror of the chosen flavour's PyTorch index."),
    DefaultKey("find-links", "find_links", "links", ("ENVBUILDER_FIND_LINKS",),
               "Folders or URLs with wheels to install from."),
    DefaultKey("ca-cert", "ca_cert", "path", ("ENVBUILDER_CA_CERT",),
               "CA bundle (PEM) to trust for downloads; `host-ca = true` (ENVBUILDER_HOST_CA=1, --host-ca) "
               "takes this machine's.", project=False),
    DefaultKey("http-proxy", "http_proxy", "proxy", ("HTTP_PROXY", "http_proxy"), "Proxy for http:// downloads.",
               project=False),
    DefaultKey("https-proxy", "https_proxy", "proxy", ("HTTPS_PROXY", "https_proxy"),
               "Proxy for https:// downloads.", project=False),
    DefaultKey("no-proxy", "no_proxy", "text", ("NO_PROXY", "no_proxy"), "Hosts reached without the proxy.",
               project=False),
    DefaultKey("network", "network", "network", ("ENVBUILDER_NETWORK",),
               "Docker network for builds and runs: default, host or none.", project=False),
    # Read for reuse only: a build pulls REGISTRY/REPO:<build key> when another machine pushed it; `build --push
    # REGISTRY/REPO` (the flag) also pushes there, and `run --image @sha256:...` means a digest in it.
    DefaultKey("registry", "registry", "repository", ("ENVBUILDER_REGISTRY",),
               "Registry (REGISTRY/REPO) builds are reused from; `build --push` pushes there."),
)
BY_NAME = {key.name: key for key in KEYS}
HOST_CA_KEY, HOST_CA_ENV = "host-ca", "ENVBUILDER_HOST_CA"
PROJECT_REFUSAL = ("a project's config cannot set the network, CA trust or proxies; "
                   "put it in the user config's [defaults] or pass the flag")


class Setting(NamedTuple):
    """One effective value: the key, the value, the layer that set it and exactly where (a file, $VAR, --flag)."""

    key: str
    value: Any
    layer: str  # project | user | env | flag
    origin: str

    def to_json(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"key": self.key, "value": value, "layer": self.layer, "origin": self.origin}


class Layer(NamedTuple):
    """What one layer says: key -> Setting. A Setting whose value is None says "none" (ENVBUILDER_HOST_CA=0)."""

    name: str
    settings: Mapping[str, Setting]


class Defaults(NamedTuple):
    """The merged layers: the effective Setting of every key some layer set."""

    settings: Mapping[str, Setting]

    def value(self, key: str) -> Any:
        setting = self.settings.get(key)
        return None if setting is None else setting.value

    def fields(self) -> dict[str, Any]:
        """NetworkOptions keyword arguments: the field of every key set to something."""
        return {BY_NAME[k].field: s.value for k, s in self.settings.items() if s.value not in (None, ())}

    def to_json(self) -> list[dict[str, Any]]:
        return [self.settings[key.name].to_json() for key in KEYS if key.name in self.settings]


def given_layer(fields: Mapping[str, Any], name: str = "given") -> Layer:
    """NetworkOptions' fields (a caller's finished values) as a layer, so a lower layer can fill what they
    leave unset through the same merge."""
    return Layer(name, {key.name: Setting(key.name, fields[key.field], name, name) for key in KEYS
                        if fields.get(key.field) not in (None, ())})


def merge(layers: Iterable[Layer | None]) -> Defaults:
    """The one rule: layers in order (project, user, env, flag), a later one replacing a key whole."""
    merged: dict[str, Setting] = {}
    for layer in layers:
        if layer is not None:
            merged.update(layer.settings)
    return Defaults({key.name: merged[key.name] for key in KEYS if key.name in merged})


# --- checking a table (project config, user config) -------------------------------------------------------------


def table_issues(table: Any, *, project: bool) -> list[tuple[str, str]]:
    """(key, problem) for every problem in a [defaults] table, in the order written. Mutates nothing; the
    files it names are checked when the layer is made (table_layer), where their folder is known."""
    if not isinstance(table, Mapping):
        return [("", "must be a table of key = value")]
    issues: list[tuple[str, str]] = []
    known = [k.name for k in KEYS if k.project or not project] + ([] if project else [HOST_CA_KEY])
    names = {str(name).replace("_", "-") for name in table}
    for name, value in table.items():
        name = str(name)
        normal = name.replace("_", "-")
        key = BY_NAME.get(normal)
        if project and (normal == HOST_CA_KEY or (key is not None and not key.project)):
            # What describes this machine's network is the user's to say, not the project's (docs/security.md).
            issues.append((name, PROJECT_REFUSAL))
        elif normal == HOST_CA_KEY:
            if not isinstance(value, bool):
                issues.append((name, f"must be true or false (got {value!r})"))
            elif value and "ca-cert" in names:
                issues.append((name, "ca-cert and host-ca are alternatives; keep one"))
        elif key is None:
            import difflib  # only for a misspelt key's suggestion

            close = difflib.get_close_matches(normal, known, n=1)
            issues.append((name, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")))
        else:
            problem = _value_problem(key, value)
            if problem:
                issues.append((name, f"{problem} (got {value!r})"))
    return issues


def _value_problem(key: DefaultKey, value: Any) -> str | None:
    items = value if key.kind in ("urls", "links") and isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, str) or not item.strip():
            return "must be a non-empty string" + (" or a list of them" if key.kind in ("urls", "links") else "")
        if key.kind in ("url", "urls") and url_problem(item) is not None:
            return "must be a URL (http://, https:// or file://)"
        if key.kind == "proxy" and proxy_problem(item) is not None:
            return proxy_problem(item)
        if key.kind == "repository" and repository_problem(item) is not None:
            return repository_problem(item)
        if key.kind == "network" and item not in NETWORKS:
            return "must be one of " + ", ".join(NETWORKS)
    return None


def url_problem(url: str, *, folder_ok: bool = False) -> str | None:
    """Why `url` cannot be an index or find-links location, or None when it can: the one check for the flags,
    these layers and the project readers. `folder_ok`: a path without a scheme is a local folder (find-links),
    not a mistake."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if match is None and not folder_ok:
        return "it is not a URL (no scheme://; a local folder is not reachable from the image build)"
    if not url.strip() or any(c.isspace() or ord(c) < 32 for c in url):
        return "it is empty or has spaces or control characters"
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in INDEX_SCHEMES:
        return f"{scheme}:// is not supported (pip and uv read http, https or file URLs)"
    rest = url[match.end():]
    if scheme != "file" and not re.match(r"^(?:[^/@]*@)?[A-Za-z0-9._~%\[\]:-]+(?:[/?#]|$)", rest):
        return "it names no host"
    return None


def proxy_problem(url: str) -> str | None:
    """Why `url` cannot be a proxy, or None when it can. pip, uv and curl take HOST:PORT as an http proxy; with
    a scheme, these are the ones they know."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else "http"
    if scheme not in PROXY_SCHEMES or not url.strip() or any(c.isspace() or ord(c) < 32 for c in url):
        return "must be a proxy URL (http://HOST:PORT, https:// or socks5://)"
    return None


def repository_problem(text: str) -> str | None:
    """Why `text` cannot be a push target (REGISTRY/REPO, no tag or digest), or None when it can."""
    name = text.strip().rstrip("/")
    if "@" in name or ":" in name.rsplit("/", 1)[-1] or not re.match(_REPOSITORY, name):
        return "must be REGISTRY/REPO without a tag, e.g. ghcr.io/acme/demo"
    return None


def table_layer(table: Mapping[str, Any], *, name: str, origin: str, base_dir: Path,
                environ: Mapping[str, str], inside: Path | None = None) -> Layer:
    """A checked table (table_issues found nothing) as a layer. Relative paths are relative to base_dir; with
    `inside`, a folder must resolve inside it (a project's find-links: a symlink out must not serve host files).
    Raises ValueError naming the key when a named file or folder is missing."""
    settings: dict[str, Setting] = {}
    for raw_name, value in table.items():
        key_name = str(raw_name).replace("_", "-")
        if key_name == HOST_CA_KEY:
            if value:
                settings["ca-cert"] = Setting("ca-cert", _host_bundle(environ, f"{HOST_CA_KEY} in {origin}"), name,
                                              f"{origin} (host-ca)")
            continue
        key = BY_NAME[key_name]
        if key.kind == "path":
            value = _existing(base_dir, value, file=True, what=key_name, inside=inside)
        elif key.kind == "links":
            value = tuple(v if "://" in v else _existing(base_dir, v, file=False, what=key_name, inside=inside)
                          for v in ([value] if isinstance(value, str) else value))
        elif key.kind == "urls":
            value = tuple([value] if isinstance(value, str) else value)
        elif key.kind == "repository":
            value = value.strip().rstrip("/")
        settings[key_name] = Setting(key_name, value, name, origin)
    return Layer(name, settings)


def _existing(base_dir: Path, value: str, *, file: bool, what: str, inside: Path | None) -> str:
    path = (base_dir / Path(value).expanduser()).resolve()
    if inside is not None and not path.is_relative_to(inside.resolve()):
        raise ValueError(f"{what}: {value} is outside the project")
    if not (path.is_file() if file else path.is_dir()):
        raise ValueError(f"{what}: no such {'file' if file else 'folder'}: {value}")
    return str(path)


def host_ca_bundle(environ: Mapping[str, str]) -> str | None:
    """The host's CA bundle: $SSL_CERT_FILE, then the Debian, Red Hat and macOS/Alpine locations."""
    for candidate in (environ.get("SSL_CERT_FILE"), *HOST_CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None


def _host_bundle(environ: Mapping[str, str], where: str) -> str:
    found = host_ca_bundle(environ)
    if found is None:
        raise ValueError(f"{where}: no CA bundle found (tried $SSL_CERT_FILE, {', '.join(HOST_CA_BUNDLES)})")
    return found


# --- the layers ---------------------------------------------------------------------------------------------------


def project_layer(table: Mapping[str, Any] | None, project_dir: Path, origin: str) -> Layer | None:
    """The project's [defaults] (checked by envbuilder.project.config): paths relative to, and inside, the project."""
    if not table:
        return None
    try:
        return table_layer(table, name="project", origin=origin, base_dir=project_dir, environ={},
                           inside=project_dir)
    except ValueError as exc:
        raise ProjectError("config-invalid", f"{origin}: defaults.{exc}",
                           "fix the path (relative to the project folder), or remove the key") from None


def _toml():
    # Only when a config file exists: parsing TOML is not on every command's path.
    from envbuilder.tomlparser import tomllib

    return tomllib


def user_layer(paths: Iterable[Path], environ: Mapping[str, str]) -> Layer | None:
    """The [defaults] table of the first user config that exists; None when there is none (or it has no table)."""
    for path in paths:
        if not path.is_file():
            continue
        tomllib = _toml()  # only when a config exists: most runs have none, and the parser is ~3 ms to load
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError("defaults-invalid", f"{path} cannot be read as TOML: {exc}",
                             "fix the file (its [defaults] table holds build and network defaults)") from None
        if "registry" in document:  # where 0.x read it; one key, one place, so that `config show` names it
            raise UsageError("defaults-invalid", f"{path}: a top-level `registry` is not read",
                             "move it into the [defaults] table: [defaults] registry = \"REGISTRY/REPO\"")
        table = document.get(TABLE)
        if table is None:
            return None
        issues = table_issues(table, project=False)
        if issues:
            raise UsageError("defaults-invalid", f"{path}: " + "; ".join(
                f"{TABLE}.{key}: {problem}" if key else f"[{TABLE}] {problem}" for key, problem in issues),
                "fix these keys; `envbuilder config show` lists the keys, docs/running.md the table")
        try:
            return table_layer(table, name="user", origin=str(path), base_dir=path.parent, environ=environ)
        except ValueError as exc:
            raise UsageError("defaults-invalid", f"{path}: {TABLE}.{exc}",
                             "relative paths are relative to the config file's folder") from None
    return None


def env_layer(environ: Mapping[str, str]) -> Layer:
    """The variables that are set (and not empty). Lists are whitespace-separated; ENVBUILDER_HOST_CA=1 trusts
    the host's CA bundle, =0 trusts none (overriding the user config)."""
    settings: dict[str, Setting] = {}
    for key in KEYS:
        variable = next((v for v in key.env if environ.get(v, "").strip()), None)
        if variable is None:
            continue
        text = environ[variable].strip()
        value: Any = tuple(text.split()) if key.kind in ("urls", "links") else text
        problem = _value_problem(key, list(value) if isinstance(value, tuple) else value)
        if problem:
            raise UsageError("defaults-invalid", f"${variable}: {problem} (got {text!r})",
                             f"fix or unset {variable}")
        if key.kind == "path":
            value = _env_path(variable, text, file=True)
        elif key.kind == "repository":
            value = text.rstrip("/")
        elif key.kind == "links":
            value = tuple(v if "://" in v else _env_path(variable, v, file=False) for v in value)
        settings[key.name] = Setting(key.name, value, "env", f"${variable}")
    host = environ.get(HOST_CA_ENV)
    if host is not None and host.strip().lower() in _TRUE + _FALSE and host.strip():
        if host.strip().lower() in _TRUE and "ca-cert" in settings:
            raise UsageError("defaults-invalid", f"${HOST_CA_ENV} and ${settings['ca-cert'].origin[1:]} are "
                             "alternatives", "unset one of them")
        bundle = None
        if host.strip().lower() in _TRUE:
            try:
                bundle = _host_bundle(environ, f"${HOST_CA_ENV}")
            except ValueError as exc:
                raise UsageError("defaults-invalid", str(exc), "set SSL_CERT_FILE, or ENVBUILDER_CA_CERT") from None
        settings["ca-cert"] = Setting("ca-cert", bundle, "env", f"${HOST_CA_ENV}")
    elif host is not None and host.strip():
        raise UsageError("defaults-invalid", f"${HOST_CA_ENV} must be 1 or 0 (got {host!r})", f"fix or unset {HOST_CA_ENV}")
    return Layer("env", settings)


def _env_path(variable: str, value: str, *, file: bool) -> str:
    try:
        return _existing(Path.cwd(), value, file=file, what=f"${variable}", inside=None)
    except ValueError as exc:
        raise UsageError("defaults-invalid", str(exc), f"fix or unset {variable}") from None


def machine_defaults(paths: Iterable[Path], environ: Mapping[str, str]) -> Defaults:
    """The user config's and the environment's layers merged: every default but the project's and the flags'."""
    return merge([user_layer(paths, environ), env_layer(environ)])


def flag_layer(values: Mapping[str, Any], origins: Mapping[str, str] | None = None,
               cleared: Iterable[str] = ()) -> Layer:
    """The flags given (None and () are "not given"), already checked by the command line parser; origins
    names a flag that differs from --KEY (--host-ca gives ca-cert); `cleared` keys were set to none
    (--no-host-ca), which overrides the layers below."""
    origins = origins or {}
    settings = {name: Setting(name, value, "flag", origins.get(name, f"--{name}"))
                for name, value in values.items() if value not in (None, ())}
    settings.update({name: Setting(name, None, "flag", "--no-host-ca") for name in cleared})
    return Layer("flag", settings)


class EffectiveDefaults(NamedTuple):
    """What `envbuilder config show` prints: every default's value and origin, and the files that were read."""

    defaults: Defaults
    project_config: str | None  # the project's config file and table; None when it has none
    user_config: Path | None  # the user config file in use; None when none exists
    user_config_paths: tuple[Path, ...]  # where it was looked for, first match wins

    def to_json(self) -> dict:
        return {"project_config": self.project_config, "user_config": str(self.user_config or "") or None,
                "user_config_paths": [str(p) for p in self.user_config_paths], "values": self.defaults.to_json(),
                "unset": [key.name for key in KEYS if key.name not in self.defaults.settings]}

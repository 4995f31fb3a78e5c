"""Shared CLI network options (mirrors, wheel locations, CA bundle, proxies, docker network, base image).

`@network_options` adds the flags and passes one `network` keyword argument: a frozen NetworkOptions
(envbuilder.render.network), which `render`, `build` and `run` turn into RenderOptions, BuildKit secrets
and proxy build args. The flags are the top layer of the defaults (envbuilder.defaults): the user config's
[defaults] and the environment fill what they leave out, here, at the edge, through envbuilder.defaults.merge;
the project's own [defaults] fill the rest once the project is read (envbuilder.api.project_network).
`@deferred_network_options` checks the flags at once but builds NetworkOptions only when asked: `run --image`
needs none of it but the docker network, and NetworkOptions imports the renderers and pydantic (~0.1 s).
`@layered_network_options` passes the layers themselves, for `config show`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from envbuilder.defaults import (
    HOST_CA_BUNDLES,
    Layer,
    env_layer,
    flag_layer,
    merge,
    proxy_problem,
    url_problem,
    user_layer,
)
from envbuilder.defaults import host_ca_bundle as _host_ca
from envbuilder.errors import UsageError

if TYPE_CHECKING:
    from envbuilder.render.network import NetworkOptions


def host_ca_bundle(environ: dict[str, str] | None = None) -> str | None:
    """The host's CA bundle: $SSL_CERT_FILE, then the Debian, Red Hat and macOS/Alpine locations."""
    return _host_ca(os.environ if environ is None else environ)


def _find_link(value: str) -> str:
    """URLs stay as typed; a local folder becomes an absolute path (the builder serves it on loopback)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise click.BadParameter(f"{value} is neither a URL nor an existing folder", param_hint="--find-links")
    return str(path.resolve())


def _checked_flags(index_url: str | None, extra_index_urls: tuple[str, ...], torch_index_url: str | None,
                   find_links: tuple[str, ...], ca_cert: str | None, proxies: dict[str, str | None]) -> None:
    """Refuse, in one line each, a URL flag pip and uv cannot fetch from and a --ca-cert that is not PEM, before
    anything is resolved or built (the other layers are checked by envbuilder.defaults, with the same checks).
    Imports are deferred to the flags given: `run --image` passes none and must stay cheap."""
    urls = [("--index-url", index_url), ("--torch-index-url", torch_index_url),
            *(("--extra-index-url", u) for u in extra_index_urls), *(("--find-links", u) for u in find_links if "://" in u)]
    for option, url in urls:
        problem = url_problem(url) if url is not None else None
        if problem:
            raise UsageError("url-invalid", f"{option} {_redact(url)!r}: {problem}",
                             f"pass an http(s) URL, e.g. {option} https://mirror.example/simple")
    for option, url in proxies.items():
        if url and proxy_problem(url):
            raise UsageError("url-invalid", f"{option} {_redact(url)!r} is not a proxy URL",
                             "pass http://HOST:PORT (or https://, socks5://)")
    if ca_cert:
        from envbuilder.build.inputs import check_ca_bundle  # loads ssl

        check_ca_bundle(ca_cert)


def _redact(url: str) -> str:
    from envbuilder.redact import redact_url

    return redact_url(url)


def _network_option_decorators(f):
    @click.option("--index-url", metavar="URL", help="Default package index (a PyPI mirror). Default: PyPI.")
    @click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
                  help="Additional package index (repeatable).")
    @click.option("--torch-index-url", metavar="URL", help="Mirror of the chosen flavour's PyTorch index.")
    @click.option("--find-links", "find_links", multiple=True, metavar="DIR|URL",
                  help="Folder or URL with wheels to install from (repeatable).")
    @click.option("--ca-cert", metavar="FILE",
                  help="CA bundle (PEM) to trust for package downloads; reaches builds as a BuildKit secret.")
    @click.option("--host-ca/--no-host-ca", "host_ca", default=None,
                  help="Trust this machine's CA bundle (for intercepting proxies); --no-host-ca: trust no extra CA "
                       "whatever the user config or $ENVBUILDER_HOST_CA say.")
    @click.option("--http-proxy", metavar="URL", help="Default: $HTTP_PROXY.")
    @click.option("--https-proxy", metavar="URL", help="Default: $HTTPS_PROXY.")
    @click.option("--no-proxy", metavar="HOSTS", help="Default: $NO_PROXY.")
    @click.option("--network", "network_mode", type=click.Choice(["default", "host", "none"]),
                  help="Docker network for builds and runs (host: reach a proxy or index on this machine's loopback).")
    @click.option("--base-image", metavar="IMAGE", help="Base image instead of python:X.Y-slim-bookworm.")
    @functools.wraps(f)
    def wrapper(*args, index_url, extra_index_urls, torch_index_url, find_links, ca_cert, host_ca, http_proxy,
                https_proxy, no_proxy, network_mode, base_image, **kwargs):
        if ca_cert and host_ca is not None:
            raise click.UsageError("--ca-cert and --host-ca/--no-host-ca are alternatives; pass one")
        _checked_flags(index_url, tuple(extra_index_urls), torch_index_url, tuple(find_links), ca_cert,
                       {"--http-proxy": http_proxy, "--https-proxy": https_proxy})
        if host_ca:
            ca_cert = host_ca_bundle()
            if ca_cert is None:
                raise click.UsageError("--host-ca: no CA bundle found (tried $SSL_CERT_FILE, " + ", ".join(HOST_CA_BUNDLES) + ")")
        flags = flag_layer({
            "base-image": base_image, "index-url": index_url, "extra-index-url": tuple(extra_index_urls),
            "torch-index-url": torch_index_url, "find-links": tuple(_find_link(v) for v in find_links),
            "ca-cert": str(Path(ca_cert).resolve()) if ca_cert else None, "http-proxy": http_proxy or None,
            "https-proxy": https_proxy or None, "no-proxy": no_proxy or None, "network": network_mode,
        }, origins={"ca-cert": "--host-ca"} if host_ca else None, cleared=("ca-cert",) if host_ca is False else ())
        layers = machine_layers(click.get_current_context(), flags)
        defaults = merge(layers)

        def build() -> NetworkOptions:
            from envbuilder.render.network import NetworkOptions

            return NetworkOptions(**defaults.fields())

        return f(*args, build_network=build, network_mode=defaults.value("network"), layers=layers, **kwargs)

    return wrapper


def machine_layers(ctx: click.Context, flags: Layer) -> tuple[Layer | None, ...]:
    """The user config's, the environment's and the flags' layers: every layer but the project's."""
    obj = ctx.find_root().obj or {}
    if "settings" in obj:
        settings = obj["settings"]
    else:  # a command invoked on its own, outside the `envbuilder` group
        from envbuilder.settings import Settings

        settings = Settings.from_env()
    return user_layer(settings.config_paths(), os.environ), env_layer(os.environ), flags


def network_options(f):
    """Adds the network flags; passes `network` (NetworkOptions)."""

    @functools.wraps(f)
    def built(*args, build_network, network_mode, layers, **kwargs):
        return f(*args, network=build_network(), **kwargs)

    return _network_option_decorators(built)


def deferred_network_options(f):
    """As network_options, but passes `network`: a function returning NetworkOptions, and `network_mode`:
    the effective network (flag, environment or user config; None when none says), which a run needs even
    without building anything."""

    @functools.wraps(f)
    def deferred(*args, build_network, layers, **kwargs):
        return f(*args, network=build_network, **kwargs)

    return _network_option_decorators(deferred)


def layered_network_options(f):
    """Adds the network flags; passes `layers`: the user config's, the environment's and the flags' layers."""

    @functools.wraps(f)
    def layered(*args, build_network, network_mode, **kwargs):
        return f(*args, **kwargs)

    return _network_option_decorators(layered)

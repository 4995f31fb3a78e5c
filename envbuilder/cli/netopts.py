"""Shared CLI network options (mirrors, wheel locations, CA bundle, proxies, docker network, base image).

`@network_options` adds the flags and passes one `network` keyword argument: a frozen NetworkOptions
(envbuilder.render.network), which `render`, `build` and `run` turn into RenderOptions, BuildKit secrets
and proxy build args. Reading the filesystem and environment for defaults happens here, at the edge.
`@deferred_network_options` checks the flags at once but builds NetworkOptions only when asked: `run --image`
needs none of it but the docker network, and NetworkOptions imports the renderers and pydantic (~0.1 s).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from envbuilder.render.network import NetworkOptions

HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def host_ca_bundle(environ: dict[str, str] | None = None) -> str | None:
    """The host's CA bundle: $SSL_CERT_FILE, then the Debian, Red Hat and macOS/Alpine locations."""
    env = os.environ if environ is None else environ
    for candidate in (env.get("SSL_CERT_FILE"), *HOST_CA_BUNDLES):
        if candidate and Path(candidate).is_file():
            return str(Path(candidate).resolve())
    return None


def _find_link(value: str) -> str:
    """URLs stay as typed; a local folder becomes an absolute path (the builder serves it on loopback)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise click.BadParameter(f"{value} is neither a URL nor an existing folder", param_hint="--find-links")
    return str(path.resolve())


def _network_option_decorators(f):
    @click.option("--index-url", metavar="URL", help="Default package index (a PyPI mirror). Default: PyPI.")
    @click.option("--extra-index-url", "extra_index_urls", multiple=True, metavar="URL",
                  help="Additional package index (repeatable).")
    @click.option("--torch-index-url", metavar="URL", help="Mirror of the chosen flavour's PyTorch index.")
    @click.option("--find-links", "find_links", multiple=True, metavar="DIR|URL",
                  help="Folder or URL with wheels to install from (repeatable).")
    @click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
                  help="CA bundle (PEM) to trust for package downloads; reaches builds as a BuildKit secret.")
    @click.option("--host-ca", is_flag=True, help="Trust this machine's CA bundle (for intercepting proxies).")
    @click.option("--http-proxy", envvar=["HTTP_PROXY", "http_proxy"], metavar="URL", help="Default: $HTTP_PROXY.")
    @click.option("--https-proxy", envvar=["HTTPS_PROXY", "https_proxy"], metavar="URL", help="Default: $HTTPS_PROXY.")
    @click.option("--no-proxy", envvar=["NO_PROXY", "no_proxy"], metavar="HOSTS", help="Default: $NO_PROXY.")
    @click.option("--network", "network_mode", type=click.Choice(["default", "host", "none"]),
                  help="Docker network for builds and runs (host: reach a proxy or index on this machine's loopback).")
    @click.option("--base-image", metavar="IMAGE", help="Base image instead of python:X.Y-slim-bookworm.")
    @functools.wraps(f)
    def wrapper(*args, index_url, extra_index_urls, torch_index_url, find_links, ca_cert, host_ca, http_proxy,
                https_proxy, no_proxy, network_mode, base_image, **kwargs):
        if ca_cert and host_ca:
            raise click.UsageError("--ca-cert and --host-ca are alternatives; pass one")
        if host_ca:
            ca_cert = host_ca_bundle()
            if ca_cert is None:
                raise click.UsageError("--host-ca: no CA bundle found (tried $SSL_CERT_FILE, " + ", ".join(HOST_CA_BUNDLES) + ")")
        links = tuple(_find_link(v) for v in find_links)

        def build() -> NetworkOptions:
            from envbuilder.render.network import NetworkOptions

            return NetworkOptions(
                base_image=base_image, index_url=index_url, extra_index_urls=tuple(extra_index_urls),
                torch_index_url=torch_index_url, find_links=links,
                ca_cert=str(Path(ca_cert).resolve()) if ca_cert else None, http_proxy=http_proxy or None,
                https_proxy=https_proxy or None, no_proxy=no_proxy or None, network=network_mode,
            )

        return f(*args, build_network=build, network_mode=network_mode, **kwargs)

    return wrapper


def network_options(f):
    """Adds the network flags; passes `network` (NetworkOptions)."""

    @functools.wraps(f)
    def built(*args, build_network, network_mode, **kwargs):
        return f(*args, network=build_network(), **kwargs)

    return _network_option_decorators(built)


def deferred_network_options(f):
    """As network_options, but passes `network`: a function returning NetworkOptions, and `network_mode`:
    the --network choice (None when not given), which a run needs even without building anything."""

    @functools.wraps(f)
    def deferred(*args, build_network, **kwargs):
        return f(*args, network=build_network, **kwargs)

    return _network_option_decorators(deferred)

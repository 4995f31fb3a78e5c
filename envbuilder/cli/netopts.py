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
from typing import TYPE_CHECKING

import click

from envbuilder.cli.network_flags import network_layers

if TYPE_CHECKING:
    from envbuilder.render.network import NetworkOptions


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
        layers, defaults = network_layers(
            _settings(click.get_current_context()), index_url=index_url, extra_index_urls=tuple(extra_index_urls),
            torch_index_url=torch_index_url, find_links=tuple(find_links), ca_cert=ca_cert, host_ca=host_ca,
            http_proxy=http_proxy, https_proxy=https_proxy, no_proxy=no_proxy, network_mode=network_mode,
            base_image=base_image)

        def build() -> NetworkOptions:
            from envbuilder.render.network import NetworkOptions

            return NetworkOptions(**defaults.fields())

        return f(*args, build_network=build, network_mode=defaults.value("network"), layers=layers, **kwargs)

    return wrapper


def _settings(ctx: click.Context):
    obj = ctx.find_root().obj or {}
    if "settings" in obj:
        return obj["settings"]
    from envbuilder.settings import Settings  # a command invoked on its own, outside the `envbuilder` group

    return Settings.from_env()


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

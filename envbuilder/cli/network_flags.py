"""The network flags' values: checked, then layered over the user config and the environment. Click-free.

`@network_options` (envbuilder.cli.netopts) declares the flags and calls network_layers with their values;
the plain `run --image` path (envbuilder.cli.runargs) calls it with the values it parsed itself. A bad value is
a UsageError with one line and a hint, before anything is resolved or built.
"""

from __future__ import annotations

import os
from pathlib import Path

from envbuilder.defaults import (
    HOST_CA_BUNDLES,
    Defaults,
    Layer,
    env_layer,
    flag_layer,
    host_ca_bundle,
    merge,
    proxy_problem,
    url_problem,
    user_layer,
)
from envbuilder.errors import UsageError


def network_layers(settings, *, index_url: str | None, extra_index_urls: tuple[str, ...], torch_index_url: str | None,
                   find_links: tuple[str, ...], ca_cert: str | None, host_ca: bool | None, http_proxy: str | None,
                   https_proxy: str | None, no_proxy: str | None, network_mode: str | None,
                   base_image: str | None) -> tuple[tuple[Layer | None, ...], Defaults]:
    """(the user config's, the environment's and the flags' layers, merged): the flags checked first."""
    if ca_cert and host_ca is not None:
        raise UsageError("usage", "--ca-cert and --host-ca/--no-host-ca are alternatives", "pass one")
    _checked_flags(index_url, tuple(extra_index_urls), torch_index_url, tuple(find_links), ca_cert,
                   {"--http-proxy": http_proxy, "--https-proxy": https_proxy})
    if host_ca:
        ca_cert = host_ca_bundle(os.environ)
        if ca_cert is None:
            raise UsageError("usage", "--host-ca: no CA bundle found (tried $SSL_CERT_FILE, "
                             + ", ".join(HOST_CA_BUNDLES) + ")", "pass --ca-cert FILE")
    flags = flag_layer({
        "base-image": base_image, "index-url": index_url, "extra-index-url": tuple(extra_index_urls),
        "torch-index-url": torch_index_url, "find-links": tuple(_find_link(v) for v in find_links),
        "ca-cert": str(Path(ca_cert).resolve()) if ca_cert else None, "http-proxy": http_proxy or None,
        "https-proxy": https_proxy or None, "no-proxy": no_proxy or None, "network": network_mode,
    }, origins={"ca-cert": "--host-ca"} if host_ca else None, cleared=("ca-cert",) if host_ca is False else ())
    layers = (user_layer(settings.config_paths(), os.environ), env_layer(os.environ), flags)
    return layers, merge(layers)


def _find_link(value: str) -> str:
    """URLs stay as typed; a local folder becomes an absolute path (the builder serves it on loopback)."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if not path.exists():
        raise UsageError("usage", f"--find-links {value} is neither a URL nor an existing folder",
                         "pass a folder of wheels or an http(s) URL")
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

"""Credentials in URLs: find them and keep them out of messages, records, labels and image history.

redact_url works on one URL; redact_text on any message that may quote URLs (git's errors, a proxy's answer,
an exception's text), and is what the CLI applies to every line it prints about a failure. split_credentials
takes them out of a URL so they can travel apart from it; url_credentials and netrc_text turn the credentials
of index URLs into the .netrc file that uv, pip and curl read (a build's BuildKit secret).
Pure string functions; must not import anything of ours.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://userinfo@ — the userinfo of an http(s)/git/ssh URL is a secret (a token, or user:password).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]+)@")
# The same inside free text: a URL starts after a non-URL character; its userinfo has no '/', '@' or space.
_TEXT_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://)([^/@\s'\"<>]+)@")


def url_has_credentials(url: str) -> bool:
    """Whether an index or repository URL carries a password or token (http(s) userinfo)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.username or parts.password)


def redact_url(url: str) -> str:
    """The URL with its credentials replaced by ***: `https://***@host/...`; ssh's `git@host:...` is kept."""
    match = _USERINFO.match(url)
    if not match or not match.group(1).lower().startswith(("http", "git+http")):
        # ssh://git@host and scp-like git@host:path name a login, not a secret; but a password still goes.
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@:]*?):[^/@]*@", r"\1\2:***@", url)
    return f"{match.group(1)}***@{url[match.end():]}"


def redact_text(text: str) -> str:
    """Every URL in text with its credentials replaced, as redact_url does to one URL."""
    if "@" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        scheme, userinfo = match.group(1), match.group(2)
        if scheme.lower().startswith(("http", "git+http")):
            return f"{scheme}***@"
        user, sep, _ = userinfo.partition(":")
        return f"{scheme}{user}:***@" if sep else match.group(0)

    return _TEXT_USERINFO.sub(one, text)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(the http(s) URL without its userinfo, user, password) with percent-escapes decoded; other URLs unchanged.

    The credentials then travel apart from the URL (an Authorization header in git's environment), so nothing
    that records the URL (git's config, FETCH_HEAD, our records) ever holds them."""
    if not url_has_credentials(url):
        return url, None, None
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    clean = parts._replace(netloc=host).geturl()
    return clean, unquote(parts.username or ""), None if parts.password is None else unquote(parts.password)


# netrc is whitespace-separated tokens; uv, pip and curl differ on quoting, so a token must need none.
_NETRC_TOKEN = re.compile(r"^[^\s'\"\\#]+$")


def url_credentials(urls) -> dict[str, tuple[str, str | None]]:
    """{host: (user, password)} of every http(s) URL among `urls` that carries credentials.

    A .netrc file names one login per host (`machine` is a host name, without port), so two URLs of one host
    with different credentials cannot both be honoured: ValueError, naming the host. So does a value that a
    .netrc file cannot hold (whitespace, quotes, '#', a backslash)."""
    found: dict[str, tuple[str, str | None]] = {}
    for url in urls:
        if not url or not url_has_credentials(url):
            continue
        _, user, password = split_credentials(url)
        user, password = user or "", password or None  # `TOKEN@host`, `TOKEN:@host`: a token as the login
        host = (urlsplit(url).hostname or "").lower()
        if any(v is not None and not _NETRC_TOKEN.match(v) for v in (user or "x", password)):
            raise ValueError(f"the credentials in {redact_url(url)} hold characters a .netrc file cannot carry "
                             "(whitespace, quotes, '#' or a backslash)")
        if found.get(host, (user, password)) != (user, password):
            raise ValueError(f"two URLs give different credentials for {host}, and a .netrc file holds one per host")
        found[host] = (user, password)
    return found


def netrc_text(credentials: dict[str, tuple[str, str | None]]) -> str:
    """The .netrc file of url_credentials' answer: one `machine HOST login USER [password PASSWORD]` line each."""
    return "".join(f"machine {host} login {user}" + (f" password {password}" if password is not None else "") + "\n"
                   for host, (user, password) in sorted(credentials.items()))

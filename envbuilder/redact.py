"""Credentials in URLs: find them and keep them out of messages, records, labels and image history.

Pure string functions; must not import anything of ours but errors.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# scheme://userinfo@ — the userinfo of an http(s)/git/ssh URL is a secret (a token, or user:password).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/@]+)@")


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

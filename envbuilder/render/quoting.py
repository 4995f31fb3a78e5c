"""Quote values for the languages we render: POSIX shell, PowerShell, Dockerfile instructions, TOML.

Every value that reaches a rendered file (paths, URLs, requirement strings, names) goes through one of
these functions, so a hostile value stays data and is never executed. Pure; imports nothing of ours
but errors.
"""

from __future__ import annotations

import re

from envbuilder.errors import EnvbuilderError

_SH_SAFE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")

# PowerShell treats the typographic single quotes as quote characters too (its tokenizer's
# IsSingleQuote: U+0027, U+2018, U+2019, U+201A, U+201B); each must be doubled inside a '...' string.
PS_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def sh_quote(value: str) -> str:
    """One shell word whose value is exactly `value` (bash, dash, zsh): single quotes, ' as '"'"'."""
    _reject_nul(value)
    if _SH_SAFE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def ps_quote(value: str) -> str:
    """A PowerShell verbatim string literal: single quotes, with every single-quote character doubled."""
    _reject_nul(value)
    out = [("%s%s" % (ch, ch)) if ch in PS_SINGLE_QUOTES else ch for ch in value]
    return "'" + "".join(out) + "'"


def dockerfile_safe(value: str, what: str) -> str:
    """Refuse values that would end a Dockerfile instruction early (a line break) or that no shell can hold."""
    _reject_nul(value)
    if "\n" in value or "\r" in value:
        raise EnvbuilderError(
            "render-unsafe-value",
            f"{what} contains a line break, which a Dockerfile instruction cannot carry: {value!r}",
            "remove the line break from the value",
            context={"value": value},
        )
    return value


def docker_word(value: str, what: str) -> str:
    """A value for a Dockerfile shell-form RUN: shell-quoted and on one line (Docker does not expand RUN text)."""
    return sh_quote(dockerfile_safe(value, what))


def docker_string(value: str, what: str) -> str:
    """A double-quoted value for LABEL/ENV, where Docker itself expands $VAR and processes backslashes."""
    dockerfile_safe(value, what)
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def one_line(value: str) -> str:
    """Text for a comment line: control characters (line breaks included) shown as escapes, never emitted."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in value)


def toml_string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _reject_nul(value: str) -> None:
    if "\0" in value:
        raise EnvbuilderError("render-unsafe-value", f"value contains a NUL byte: {value!r}",
                              "remove the NUL byte", context={"value": value})

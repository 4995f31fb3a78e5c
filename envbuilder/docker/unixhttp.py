"""A small HTTP/1.1 client over a unix socket: what the Docker Engine API's answers need, and no more.

Owns `UnixConnection` (one keep-alive connection: send a request, read its response) and `Response` (a body
framed by Content-Length, by chunked transfer coding, or read until the engine closes the connection, as the
hijacked stream of POST /containers/{id}/attach is). socket_engine.EngineSocket pools these connections.

Why not http.client: importing it (email.parser, ssl) costs 15-20 ms, a fifth of everything `envbuilder run
--image` may add to a `docker run`. Only what the engine sends is handled: no TLS, proxies, redirects,
compression or 100-continue (nothing here asks for them); anything else is a ProtocolError.
Every failure is an OSError, so callers diagnose one family. Must not import http, email, ssl or envbuilder.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

_MAX_LINE = 65536  # http.client's limits: a status or header line, and the number of header lines
_MAX_HEADERS = 100
_NO_BODY_STATUSES = (204, 304)
_METHODS_WITH_BODY = ("POST", "PUT", "PATCH")


class ProtocolError(OSError):
    """The engine's answer is not the HTTP/1.x it should be (or it ended before its framing said)."""


class RemoteDisconnected(ConnectionResetError):
    """The connection closed before a status line: an idle keep-alive connection the engine had dropped."""


class UnixConnection:
    """One HTTP/1.1 connection to a unix socket, opened on the first request and kept alive between requests.

    One request at a time; read a response's body to its end before the next request (a caller that stops
    early closes the connection instead)."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self._file = None
        self.requests = 0  # answered so far: a reused connection may have been dropped by the engine

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout
        if self.sock is not None:
            self.sock.settimeout(timeout)

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self.sock, self._file = sock, sock.makefile("rb")

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> None:
        """Send one request; target is the path and query, already encoded."""
        if self.sock is None:
            self._connect()
        lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None or method in _METHODS_WITH_BODY:
            lines.append(f"Content-Length: {len(body or b'')}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))

    def getresponse(self, method: str = "GET") -> Response:
        """The status line and headers of the answer to the request just sent; the body is read from it."""
        while True:
            line = self._readline()
            if not line:
                raise RemoteDisconnected("the engine closed the connection without answering")
            version, status, reason = _status_line(line)
            headers = self._headers()
            if 100 <= status < 200 and status != 101:  # interim answers (100 Continue): the real one follows
                continue
            return Response(self._file, status, reason, headers, http11=version == "HTTP/1.1", method=method)

    def _readline(self) -> bytes:
        line = self._file.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise ProtocolError("an HTTP line from the engine is too long")
        return line

    def _headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = self._readline()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise ProtocolError("the engine closed the connection in the middle of its headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise ProtocolError(f"malformed header line from the engine: {line[:80]!r}")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        raise ProtocolError(f"more than {_MAX_HEADERS} headers from the engine")

    def close(self) -> None:
        file, sock = self._file, self.sock
        self._file = self.sock = None
        if file is not None:
            file.close()
        if sock is not None:
            sock.close()


def _status_line(line: bytes) -> tuple[str, int, str]:
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not (parts[1].isdigit() and len(parts[1]) == 3):
        raise ProtocolError(f"not an HTTP/1.x status line from the engine: {line[:80]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""


class Response:
    """One answer: status, headers (names in lower case), and its body through read() or read1().

    will_close: the connection cannot carry another request (the engine said so, the body runs to the end of
    the connection, or it ended early: `truncated`)."""

    def __init__(self, file, status: int, reason: str, headers: dict[str, str], *, http11: bool, method: str) -> None:
        self._file = file
        self.status, self.reason, self.headers = status, reason, headers
        self.truncated = False
        connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        self.will_close = not http11 or "close" in connection
        self._chunked = headers.get("transfer-encoding", "").lower().rsplit(",", 1)[-1].strip() == "chunked"
        self._chunk_left = 0  # bytes left in the current chunk
        self._chunk_end_due = False  # the CRLF after a chunk's data is still to be read
        self._remaining: int | None = None  # Content-Length bytes left; None: chunked, or until the connection closes
        self._done = False
        if status in _NO_BODY_STATUSES or method == "HEAD":
            self._done = True
        elif not self._chunked:
            length = headers.get("content-length")
            if length is None:
                self.will_close = True  # the body is everything until the engine closes the connection
            else:
                if not length.strip().isdigit():
                    raise ProtocolError(f"bad Content-Length from the engine: {length!r}")
                self._remaining = int(length)
                self._done = self._remaining == 0

    def read(self) -> bytes:
        """The whole body. A body cut short of its framing is a ProtocolError."""
        parts = []
        while chunk := self.read1():
            parts.append(chunk)
        if self.truncated:
            raise ProtocolError("the engine's answer ended before its end")
        return b"".join(parts)

    def read1(self, size: int = 65536) -> bytes:
        """Some of the body as soon as it arrives (at most size bytes); b"" at its end, or where it was cut
        short (then `truncated` is set and the connection is done)."""
        if self._done:
            return b""
        if self._chunked:
            return self._read_chunked(size)
        want = size if self._remaining is None else min(size, self._remaining)
        data = self._file.read1(want)
        if self._remaining is None:
            self._done = not data
            return data
        if not data:
            return self._cut_short()
        self._remaining -= len(data)
        self._done = self._remaining == 0
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            if self._chunk_end_due:
                if not self._file.readline(_MAX_LINE + 1):
                    return self._cut_short()
                self._chunk_end_due = False
            line = self._file.readline(_MAX_LINE + 1)
            if not line:
                return self._cut_short()
            try:
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size from the engine: {line[:80]!r}") from None
            if self._chunk_left == 0:
                self._skip_trailers()
                return b""
        data = self._file.read1(min(size, self._chunk_left))
        if not data:
            return self._cut_short()
        self._chunk_left -= len(data)
        self._chunk_end_due = self._chunk_left == 0
        return data

    def _skip_trailers(self) -> None:
        for _ in range(_MAX_HEADERS + 1):
            line = self._file.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                self._done = True
                return
            if not line:  # the body is whole; only the connection is done
                self._done = self.will_close = True
                return
        raise ProtocolError(f"more than {_MAX_HEADERS} trailer lines from the engine")

    def _cut_short(self) -> bytes:
        self._done = self.truncated = self.will_close = True
        return b""

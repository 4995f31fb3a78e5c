"""Container output as the Engine API sends it: the multiplexed frames of a non-TTY attach or logs stream, and
lines split per stream. Pure byte handling, shared by both engines; must not import anything of envbuilder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

FRAME_HEADER = 8  # stream type (1 byte: 1 stdout, 2 stderr), 3 zero bytes, payload size (uint32, big-endian)


def demux_stream_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """(stream, payload) of the complete frames at the start of buffer, removed from it (1 stdout, 2 stderr)."""
    frames: list[tuple[int, bytes]] = []
    offset = 0
    while len(buffer) - offset >= FRAME_HEADER:
        size = int.from_bytes(buffer[offset + 4 : offset + FRAME_HEADER], "big")
        if len(buffer) - offset - FRAME_HEADER < size:
            break
        frames.append((buffer[offset], bytes(buffer[offset + FRAME_HEADER : offset + FRAME_HEADER + size])))
        offset += FRAME_HEADER + size
    del buffer[:offset]
    return frames


def demuxed(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(stream, payload) of every frame in chunks cut anywhere, the way the engine's HTTP body arrives."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        yield from demux_stream_frames(buffer)
    if len(buffer) > FRAME_HEADER:  # a frame cut short by the engine: what arrived of it
        yield buffer[0], bytes(buffer[FRAME_HEADER:])


def split_lines(frames: Iterable[tuple[int, bytes]], on_partial: Callable[[str], None] | None = None) -> Iterator[str]:
    """Lines from (stream, bytes) pieces, each stream split on its own: a partial stdout line is never glued
    to a stderr line that arrived in between.

    A line redrawn with carriage returns (tqdm, pip and curl progress bars) is one line in its last state, not
    every state joined: what a terminal would show once it ends. Until its newline comes, each new state is
    passed to on_partial (for a live display), and only the last one is kept in memory, so a bar redrawn for
    hours costs one state, not hours of text."""
    pending: dict[int, bytes] = {}
    for stream, chunk in frames:
        *lines, rest = (pending.get(stream, b"") + chunk).split(b"\n")
        for line in lines:
            yield last_state(line)
        if b"\r" in rest:
            before = pending.get(stream, b"")
            rest = _collapse(rest)
            if on_partial is not None and rest != before and last_state(rest):
                on_partial(last_state(rest))
        pending[stream] = rest
    for stream in sorted(pending):
        if pending[stream]:
            yield last_state(pending[stream])


def last_state(line: bytes) -> str:
    """What a terminal shows of a line redrawn with carriage returns: its last segment with text in it
    (a trailing \\r is the end of a CRLF line ending)."""
    segments = line.rstrip(b"\r").split(b"\r")
    shown = next((s for s in reversed(segments) if s.strip()), b"")
    return shown.decode("utf-8", "replace")


def _collapse(partial: bytes) -> bytes:
    """A partial line with carriage returns cut to two segments: the last one with text before the final
    segment, and the final segment itself (still being written: the next piece continues it)."""
    *earlier, final = partial.split(b"\r")
    shown = next((s for s in reversed(earlier) if s.strip()), b"")
    return shown + b"\r" + final

"""Container output as the Engine API sends it: the multiplexed frames of a non-TTY attach or logs stream, and
lines split per stream. Pure byte handling, shared by both engines; must not import anything of envbuilder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

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


def split_lines(frames: Iterable[tuple[int, bytes]]) -> Iterator[str]:
    """Lines from (stream, bytes) pieces, each stream split on its own: a partial stdout line is never glued
    to a stderr line that arrived in between."""
    pending: dict[int, bytes] = {}
    for stream, chunk in frames:
        *lines, pending[stream] = (pending.get(stream, b"") + chunk).split(b"\n")
        for line in lines:
            yield line.decode("utf-8", "replace").rstrip("\r")
    for stream in sorted(pending):
        if pending[stream]:
            yield pending[stream].decode("utf-8", "replace").rstrip("\r")

"""Server-sent events as OpenRouter sends them: ``data:`` lines, comment keep-alives, ``[DONE]``.

Read with a size cap: neither one line nor one event may grow past ``limit`` while we wait for its end,
so an upstream that never sends a newline cannot make us buffer without bound.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from .errors import OpenRouterResponseError

__all__ = ["DONE", "SSEComment", "SSEData", "SSEReader", "iter_lines", "iter_sse"]

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEData:
    """One event's data: its ``data:`` lines joined by newlines."""

    data: str


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (``: OPENROUTER PROCESSING``) that servers send to keep the connection alive."""

    text: str


def _too_large(limit: int) -> OpenRouterResponseError:
    return OpenRouterResponseError(f"OpenRouter sent a stream event larger than {limit} bytes.")


_LINE_BREAK = re.compile(rb"[\r\n]")


async def iter_lines(chunks: AsyncIterable[bytes], *, limit: int) -> AsyncIterator[str]:
    """The lines of a UTF-8 body given in chunks, without their ends (``\\r\\n``, ``\\n`` or ``\\r``);
    ``OpenRouterResponseError`` once a line grows past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    after_cr = False  # the last chunk ended in \r: a \n starting this one belongs to that line end
    async for chunk in chunks:
        if not chunk:
            continue
        start = 1 if after_cr and chunk[0] == 0x0A else 0
        after_cr = False
        while (found := _LINE_BREAK.search(chunk, start)) is not None:
            end = found.start()
            size += end - start
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk[start:end])
            yield b"".join(parts).decode("utf-8", "replace")
            parts.clear()
            size = 0
            start = end + 1
            if chunk[end] == 0x0D:
                if start == len(chunk):
                    after_cr = True
                elif chunk[start] == 0x0A:
                    start += 1
        size += len(chunk) - start
        if size > limit:
            raise _too_large(limit)
        if start < len(chunk):
            parts.append(chunk[start:])
    if parts:
        yield b"".join(parts).decode("utf-8", "replace")


async def iter_sse(lines: AsyncIterable[str], *, limit: int | None = None) -> AsyncIterator[SSEData | SSEComment]:
    """Events from an SSE body given line by line (line endings already stripped).

    Multi-line ``data:`` fields are joined with ``\\n``; ``event:``, ``id:`` and ``retry:`` are ignored;
    an event still open when the body ends is dispatched (a final ``[DONE]`` without its blank line
    must not be lost). ``OpenRouterResponseError`` once an event's data grows past ``limit`` characters.
    """
    buffer: list[str] = []
    size = 0
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if buffer:
                yield SSEData("\n".join(buffer))
                buffer = []
                size = 0
            continue
        if line[0] == ":":
            yield SSEComment(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data = value[1:] if value.startswith(" ") else value
            size += len(data) + 1
            if limit is not None and size > limit:
                raise _too_large(limit)
            buffer.append(data)
    if buffer:
        yield SSEData("\n".join(buffer))


class SSEReader:
    """The same parsing as :func:`iter_lines` + :func:`iter_sse`, on bytes and synchronous: ``feed`` it
    each network read and get back the events it completed; ``finish`` at the end of the body.

    Data comes back as ``bytes`` (the event's ``data:`` lines joined by ``\\n``), comments as
    :class:`SSEComment`. No per-line decoding, no generator per layer: a read of many events costs one
    split. Both limits of the async pair hold (a line, and an event's data, of at most ``limit`` bytes);
    an event completed before an oversized line in the same read is still returned, the error raised
    on the next call.
    """

    __slots__ = ("_after_cr", "_data", "_data_size", "_error", "_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []  # the line still open at the end of the last read
        self._size = 0
        self._after_cr = False  # the last read ended in \r: a \n starting the next belongs to that line end
        self._data: list[bytes] = []  # the data lines of the event still open
        self._data_size = 0
        self._error: OpenRouterResponseError | None = None

    def feed(self, chunk: bytes) -> list[bytes | SSEComment]:
        """The events completed by ``chunk``, the next piece of the body."""
        if self._error is not None:
            raise self._error
        out: list[bytes | SSEComment] = []
        if not chunk:
            return out
        if self._after_cr:
            self._after_cr = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return out
        if b"\r" in chunk:
            self._after_cr = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            if self._parts:
                self._parts.append(lines[0])
                lines[0] = b"".join(self._parts)
                self._parts = []
                self._size = 0
            limit = self._limit
            try:
                for line in lines:
                    if len(line) > limit:
                        raise _too_large(limit)
                    if not line:  # the end of an event (inline: the common case, like a one-line data:)
                        if self._data:
                            out.append(self._dispatch())
                    elif line[:6] == b"data: " and not self._data and len(line) < limit:
                        self._data = [line[6:]]
                        self._data_size = len(line) - 5
                    else:
                        self._line(line, out)
            except OpenRouterResponseError as exc:
                if not out:
                    raise
                self._error = exc
                return out
        if tail:
            self._size += len(tail)
            if self._size > self._limit:
                self._error = _too_large(self._limit)
                if not out:
                    raise self._error
                return out
            self._parts.append(tail)
        return out

    def finish(self) -> list[bytes | SSEComment]:
        """What the end of the body completes: the last line without its end, the event still open."""
        if self._error is not None:
            raise self._error
        out: list[bytes | SSEComment] = []
        if self._parts:
            line = b"".join(self._parts)
            self._parts = []
            self._line(line, out)
        if self._data:
            out.append(self._dispatch())
        return out

    def _line(self, line: bytes, out: list[bytes | SSEComment]) -> None:
        if not line:
            if self._data:
                out.append(self._dispatch())
            return
        if line[0] == 0x3A:  # ":"
            out.append(SSEComment(line[1:].strip().decode("utf-8", "replace")))
            return
        if line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
        elif line == b"data":
            value = b""
        else:
            return  # event:, id:, retry: and unknown fields are ignored
        self._data_size += len(value) + 1
        if self._data_size > self._limit:
            raise _too_large(self._limit)
        self._data.append(value)

    def _dispatch(self) -> bytes:
        data = self._data
        self._data = []
        self._data_size = 0
        return data[0] if len(data) == 1 else b"\n".join(data)

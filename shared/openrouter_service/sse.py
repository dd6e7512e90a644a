"""Server-sent events as OpenRouter sends them: ``data:`` lines, comment keep-alives, ``[DONE]``.

Read with a size cap: neither one line nor one event may grow past ``limit`` while we wait for its end,
so an upstream that never sends a newline cannot make us buffer without bound.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from .errors import OpenRouterResponseError

__all__ = ["DONE", "SSEComment", "SSEData", "iter_lines", "iter_sse"]

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

"""Server-sent events as OpenRouter sends them: ``data:`` lines, comment keep-alives, ``[DONE]``."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["DONE", "SSEComment", "SSEData", "iter_sse"]

DONE = "[DONE]"


@dataclass(frozen=True, slots=True)
class SSEData:
    """One event's data: its ``data:`` lines joined by newlines."""

    data: str


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (``: OPENROUTER PROCESSING``) that servers send to keep the connection alive."""

    text: str


async def iter_sse(lines: AsyncIterable[str]) -> AsyncIterator[SSEData | SSEComment]:
    """Events from an SSE body given line by line (line endings already stripped).

    Multi-line ``data:`` fields are joined with ``\\n``; ``event:``, ``id:`` and ``retry:`` are ignored;
    an event still open when the body ends is dispatched (a final ``[DONE]`` without its blank line
    must not be lost).
    """
    buffer: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if buffer:
                yield SSEData("\n".join(buffer))
                buffer = []
            continue
        if line[0] == ":":
            yield SSEComment(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        if field == "data":
            buffer.append(value[1:] if value.startswith(" ") else value)
    if buffer:
        yield SSEData("\n".join(buffer))

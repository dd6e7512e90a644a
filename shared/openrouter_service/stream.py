"""``ChatStream``: a streamed chat completion, read event by event in the service's attempt loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx

from .attempts import Attempt
from .errors import OpenRouterConnectionError, OpenRouterError, OpenRouterResponseError, error_from_upstream
from .redact import preview
from .sse import SSEComment, SSEReader

if TYPE_CHECKING:
    from .client import OpenRouterService

__all__ = ["DRAIN_SECONDS", "ChatStream"]

DRAIN_SECONDS = 0.5

_DONE = b"[DONE]"
_FINISH = b'"finish_reason"'
_NO_FINISH = b'"finish_reason":null'


async def _drain(body: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so the connection can be reused;
    never wait long for it, and never fail a finished stream over it."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in body:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


def _plain(data: bytes) -> bool:
    """True when an event's data can go on as it came without reading it: one line of what looks like a
    JSON object that cannot carry anything we note (usage, an error, a finish reason). A chunk with a
    backslash-u escape is always read: an escaped key can spell "error" or "usage"."""
    return (
        data[:1] == b"{"
        and data[-1:] == b"}"
        and b'"usage"' not in data
        and b'"error"' not in data
        and b"\\u" not in data
        and b"\n" not in data
        and data.count(_FINISH) == data.count(_NO_FINISH)
    )


class ChatStream:
    """A streamed chat completion: iterate for chunk dicts; ``usage`` is set once the final chunk arrives.

    Opened lazily on first iteration; retried only until the first chunk; closed by ``aclose()``,
    ``async with``, or running to the end. The service's deadline bounds the whole stream, its first-chunk
    timeout the wait for the first data chunk (keep-alive comments do not count).

    :meth:`batches` is the cheap way to pass the stream on: each upstream read's events at once, a data
    chunk as the JSON bytes it came as (one line, valid UTF-8). Only the first chunk and chunks that can
    carry usage, an error or a finish reason are parsed; any other chunk is passed on unread.
    """

    def __init__(self, service: OpenRouterService, payload: dict[str, Any]) -> None:
        self._service = service
        self.payload = payload
        self.usage: dict[str, Any] | None = None
        self.generation_id: str | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.attempts = 0
        self.completed = False
        self.error: OpenRouterError | None = None
        self._attempt: Attempt | None = None
        self._response: httpx.Response | None = None
        self._gen: AsyncIterator[list[Any]] | None = None
        self._events: AsyncIterator[dict[str, Any] | SSEComment] | None = None
        self._started = 0.0

    @property
    def chunks(self) -> int:
        """Data chunks handed to the caller so far."""
        return self._attempt.chunks if self._attempt is not None else 0

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks_only()

    async def _chunks_only(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self.events():
            if isinstance(item, dict):
                yield item

    def batches(self) -> AsyncIterator[list[bytes | SSEComment]]:
        """The events of each upstream read, in order: a data chunk as its JSON bytes, a keep-alive as
        :class:`SSEComment`. A batch is never held back waiting for more; once the final batch is out
        :attr:`completed` is already true (``[DONE]`` came), before the rest of the body is drained."""
        if self._gen is None:
            self._gen = self._run(parse_all=False)
        return self._gen

    def events(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        """Chunks (parsed) and the keep-alive comments between them, for callers that pass the stream on."""
        if self._events is None:
            self._events = self._flatten()
        return self._events

    async def _flatten(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        if self._gen is None:
            self._gen = self._run(parse_all=True)  # every chunk read: the caller gets dicts anyway
        async for batch in self._gen:
            for item in batch:
                yield item

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the upstream connection."""
        events, self._events = self._events, None
        gen, self._gen = self._gen, None
        for it in (events, gen):
            if it is not None and hasattr(it, "aclose"):
                await it.aclose()
        await self._close_response()

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    async def _run(self, *, parse_all: bool) -> AsyncIterator[list[Any]]:
        """Batches of events; a data chunk as its bytes, or (``parse_all``) as its parsed dict."""
        service = self._service
        self._started = time.perf_counter()
        try:
            async for attempt in service.attempts():
                self._begin(attempt)
                with attempt:
                    async with attempt.limit(first_chunk=True):
                        response = self._response = await service.open_event_stream(self.payload, attempt)
                    reader = SSEReader(service.max_response_bytes)
                    # One read is bounded by the transport only when it is one network read: not decoded,
                    # where a decoder could swallow read after read.
                    encoding = response.headers.get("content-encoding", "").strip().lower()
                    read_bound = service._sender(True).read_bound if encoding in ("", "identity") else None
                    body = response.aiter_bytes()
                    try:
                        ended = False
                        while not ended:
                            # Each wait is bounded, never the yield: the caller's own work is not ours to time.
                            async with attempt.limit(first_chunk=True, read_bound=read_bound):
                                part = await anext(body, None)
                            if part is None:
                                ended = True
                                events = reader.finish()
                            else:
                                events = reader.feed(part)
                            if not events:
                                continue
                            batch: list[Any] = []
                            failure: OpenRouterError | None = None
                            for event in events:
                                if event.__class__ is SSEComment:
                                    if parse_all:
                                        yield [event]  # keep-alives do not commit the attempt
                                    else:
                                        batch.append(event)
                                    continue
                                assert isinstance(event, bytes)
                                if event == _DONE:
                                    self.completed = True
                                    break
                                try:
                                    data = self._check(event, parse_all or attempt.chunks == 0, parse_all)
                                except OpenRouterError as exc:
                                    failure = exc
                                    break
                                attempt.delivered()
                                if parse_all:
                                    yield [data]  # one at a time: what was handed over is what was read
                                else:
                                    batch.append(data)
                            if batch or (self.completed and not parse_all):
                                yield batch
                            if failure is not None:
                                raise failure
                            if self.completed:
                                break
                        if self.completed:
                            await _drain(body)
                        elif self.finish_reason is None:
                            raise OpenRouterConnectionError(
                                f"The upstream stream ended after {attempt.chunks} chunks without finishing."
                            )
                        else:
                            # OpenRouter always ends with [DONE]; a finished stream missing it still counts as done.
                            self.completed = True
                    finally:
                        await self._close_response()
        except OpenRouterError as exc:
            self.error = exc
            service.call_log.failure(self.payload, exc, self._elapsed_ms())
            raise
        summary = {
            "id": self.generation_id,
            "model": self.model,
            "usage": self.usage,
            "choices": [{"message": {"content": f"<streamed {self.chunks} chunks>"}}],
        }
        service.call_log.success(self.payload, summary, self._elapsed_ms(), self.attempts)

    def _begin(self, attempt: Attempt) -> None:
        """Start attempt ``attempt`` from scratch: nothing of a failed earlier one reached the caller."""
        self._attempt = attempt
        self.attempts = attempt.number
        self.usage = self.generation_id = self.model = self.finish_reason = None

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self._started) * 1000.0

    def _check(self, data: bytes, read: bool, parsed: bool) -> Any:
        """The data of one chunk as it goes on (one line of valid UTF-8; ``parsed``: the dict), after
        noting what it says (``read``: parsed whatever it looks like); the error it carries raised instead."""
        if not parsed and not data.isascii():
            try:
                data.decode()
            except UnicodeDecodeError:
                data = data.decode("utf-8", "replace").encode()
        if not read and _plain(data):
            return data
        chunk = self._parse(data)
        self._note(chunk)
        if chunk.get("error"):
            raise error_from_upstream(200, chunk)
        if parsed:
            return chunk
        if b"\n" in data:
            # Several data: lines make one event; passed on as one line, as SSE needs.
            data = json.dumps(chunk, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
        return data

    def _parse(self, data: bytes) -> dict[str, Any]:
        try:
            chunk = json.loads(data.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            raise OpenRouterResponseError(
                "OpenRouter sent a stream event that is not JSON.",
                metadata={"event_preview": preview(data.decode("utf-8", "replace"), 200)},
            ) from None
        if not isinstance(chunk, dict):
            raise OpenRouterResponseError("OpenRouter sent a stream event that is not an object.")
        return chunk

    def _note(self, chunk: dict[str, Any]) -> None:
        if self.generation_id is None and isinstance(chunk.get("id"), str):
            self.generation_id = chunk["id"]
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason

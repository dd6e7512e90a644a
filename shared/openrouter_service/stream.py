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
from .sse import DONE, SSEComment, SSEData, iter_lines, iter_sse

if TYPE_CHECKING:
    from .client import OpenRouterService

__all__ = ["DRAIN_SECONDS", "ChatStream"]

DRAIN_SECONDS = 0.5


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so the connection can be reused;
    never wait long for it, and never fail a finished stream over it."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


class ChatStream:
    """A streamed chat completion: iterate for chunk dicts; ``usage`` is set once the final chunk arrives.

    Opened lazily on first iteration; retried only until the first chunk; closed by ``aclose()``,
    ``async with``, or running to the end. The service's deadline bounds the whole stream, its first-chunk
    timeout the wait for the first data chunk (keep-alive comments do not count).
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
        self._gen: AsyncIterator[dict[str, Any] | SSEComment] | None = None
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

    def events(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        """Chunks and the keep-alive comments between them, for callers that pass the stream on."""
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the upstream connection."""
        gen, self._gen = self._gen, None
        if gen is not None and hasattr(gen, "aclose"):
            await gen.aclose()
        await self._close_response()

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    async def _run(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        service = self._service
        self._started = time.perf_counter()
        try:
            async for attempt in service.attempts():
                self._begin(attempt)
                with attempt:
                    async with attempt.limit(first_chunk=True):
                        response = self._response = await service.open_event_stream(self.payload, attempt)
                    limit = service.max_response_bytes
                    lines = iter_lines(response.aiter_bytes(), limit=limit)
                    events = iter_sse(lines, limit=limit)
                    try:
                        while True:
                            # Each wait is bounded, never the yield: the caller's own work is not ours to time.
                            async with attempt.limit(first_chunk=True):
                                event = await anext(events, None)
                            if event is None:
                                break
                            if isinstance(event, SSEComment):
                                yield event  # keep-alives do not commit the attempt
                                continue
                            if event.data == DONE:
                                self.completed = True
                                break
                            chunk = self._parse(event)
                            self._note(chunk)
                            if chunk.get("error"):
                                raise error_from_upstream(200, chunk)
                            attempt.delivered()
                            yield chunk
                        if self.completed:
                            await _drain(lines)
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

    def _parse(self, event: SSEData) -> dict[str, Any]:
        try:
            chunk = json.loads(event.data)
        except (ValueError, RecursionError):
            raise OpenRouterResponseError(
                "OpenRouter sent a stream event that is not JSON.",
                metadata={"event_preview": preview(event.data, 200)},
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

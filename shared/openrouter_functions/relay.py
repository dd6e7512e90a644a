"""Passing an upstream stream on to the caller as server-sent events.

Owns everything a streamed answer needs in one place: encoding chunks and keep-alive comments, the
closing ``[DONE]``, an upstream failure after the 200 went out (an error event in OpenRouter's shape),
the caller hanging up (upstream closed at once), and the request's settlement when the stream ends,
however it ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from openrouter_service.client import ChatStream
from openrouter_service.errors import OpenRouterError
from openrouter_service.redact import preview
from openrouter_service.sse import SSEComment

from .envelope import let_go, reply_for
from .exchange import Exchange

if TYPE_CHECKING:
    from .conversation import TurnState

__all__ = ["EventStreamResponse", "encode_event", "relay_stream"]

log = logging.getLogger("openrouter_functions")

DONE_EVENT = b"data: [DONE]\n\n"
PREVIEW_CHARS = 600
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(StreamingResponse):
    """``StreamingResponse`` that learns of a caller hanging up without a task group per stream.

    On a server that speaks ASGI below 2.4 (uvicorn says 2.3), a ``send`` to a caller who left is not an
    error, so Starlette runs the body in a second task of a task group while the first waits for
    ``http.disconnect``, and cancels the group when it comes: about 100 µs of CPU per stream, a third of
    what the rest of a short stream costs, and a turn of the event loop before the first byte. Here the
    body is written in the request's own task, inside a cancel scope that a plain task waiting for
    ``http.disconnect`` cancels. It is the same cancellation as the task group's (anyio's, so the relay's
    shielded settlement runs to its end however late the caller leaves, and the scope takes it back: the
    call ends normally); a cancellation from anywhere else (the server's shutdown) goes on as before.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version = scope.get("asgi", {}).get("spec_version", "2.0")
        if scope["type"] != "http" or tuple(map(int, version.split("."))) >= (2, 4):
            await super().__call__(scope, receive, send)
            return
        streaming = True

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        with anyio.CancelScope() as cancel:

            def left(listener: asyncio.Task[None]) -> None:
                if streaming and not listener.cancelled():
                    cancel.cancel()

            listener = asyncio.get_running_loop().create_task(listen())
            listener.add_done_callback(left)
            try:
                await self.stream_response(send)
            finally:
                streaming = False
                listener.remove_done_callback(left)
                listener.cancel()
        # receive() failed (it ended the stream, as the task group's would): raised as the task group would.
        # Taken in any case, so that asyncio has no unretrieved exception to complain about.
        failed = listener.exception() if listener.done() and not listener.cancelled() else None
        if failed is not None and cancel.cancel_called:
            raise failed
        if self.background is not None:
            await self.background()


def encode_event(item: dict[str, Any] | SSEComment) -> bytes:
    """One SSE event: a chunk as ``data:`` JSON, a keep-alive as a comment line."""
    if isinstance(item, SSEComment):
        return f": {item.text}\n\n".encode()
    # A lone surrogate from upstream cannot be UTF-8; written as its JSON escape it stays valid JSON.
    data = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
    return b"data: " + data + b"\n\n"


def _error_event(stream: ChatStream, error: OpenRouterError, exchange: Exchange) -> bytes:
    reply = reply_for(error)
    event = {
        "id": stream.generation_id or exchange.request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": stream.model or exchange.model,
        "error": {
            "code": error.upstream_status or reply.status,
            "message": error.message,
            "metadata": {
                "type": reply.type,
                **({"error_type": error.metadata["error_type"]} if "error_type" in error.metadata else {}),
            },
        },
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    return encode_event(event)


# What a delta carries when the model has begun to answer (the time-to-first-token mark).
_OUTPUT_KEYS = ("content", "reasoning", "refusal", "tool_calls")


def _has_output(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(delta.get(key) for key in _OUTPUT_KEYS):
            return True
    return False


def _text(chunk: dict[str, Any]) -> str | None:
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            return content
    return None


def _read(data: bytes) -> dict[str, Any] | None:
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return chunk if isinstance(chunk, dict) else None


def _encode_batch(batch: list[bytes | SSEComment]) -> list[bytes]:
    """A batch's events as SSE, in pieces to join: a chunk's JSON goes on as it came."""
    parts: list[bytes] = []
    for item in batch:
        if isinstance(item, bytes):
            parts += (b"data: ", item, b"\n\n")
        else:
            parts.append(encode_event(item))
    return parts


def _stopped_event(stream: ChatStream, exchange: Exchange) -> bytes:
    """The last chunk of an answer stopped on request (``POST .../stop``) before the model finished."""
    event = {
        "id": stream.generation_id or exchange.request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": stream.model or exchange.model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "stopped": True,
    }
    return encode_event(event)


async def _read_on(batches: AsyncIterator[list[bytes | SSEComment]], turn: TurnState) -> None:
    """The rest of the answer after its caller left (``background``), taken into the turn's message."""
    while (batch := await turn.read(batches)) is not None:
        for item in batch:
            if isinstance(item, bytes) and (chunk := _read(item)) is not None:
                turn.observe(chunk)


async def relay_stream(
    stream: ChatStream,
    exchange: Exchange,
    finish: Callable[[], Awaitable[None]],
    *,
    keep_previews: bool,
    turn: TurnState | None = None,
    background_seconds: float = 0.0,
) -> Response:
    """The streaming response; ``finish`` (settle and log) runs once when the stream is over.

    Each upstream read goes on in one write, however many events it held (never held back for more).
    The closing ``[DONE]`` follows once the request is recorded (a client that stops reading there finds its
    usage, its log row and its thread's message written). A chunk is read here only while the answer's
    preview is being collected or its first output not yet seen, or when a threaded ``turn`` keeps the
    answer (docs/threads.md): then a stop ends the stream early, and with ``turn.background`` a caller who
    hangs up leaves the rest of the answer to be read into the message (for at most ``background_seconds``).
    """
    batches = stream.batches()
    # Wait for the first events so that a failure before the stream starts (bad model, upstream down
    # after retries) is an ordinary HTTP error, not a 200 whose body is an error.
    try:
        # A threaded turn reads under its own cancel scope from the start: a stop asked while the model has
        # not yet said anything (a long think) ends the wait at once.
        first: list[bytes | SSEComment] | None = await batches.__anext__() if turn is None else await turn.read(batches)
    except StopAsyncIteration:
        first = None
    except BaseException:
        with anyio.CancelScope(shield=True):
            if turn is not None:  # a background read task may still be inside the stream: end it first
                await turn.abandon_read()
            await stream.aclose()
        exchange.attempts = stream.attempts
        raise

    settled = False

    async def settle() -> None:
        """Close upstream, then record the request (ledger, the thread's message, the log line): once, and
        whatever cancels the stream meanwhile (a caller leaving, the drain's deadline)."""
        nonlocal settled
        if settled:
            return
        settled = True
        with anyio.CancelScope(shield=True):
            if turn is not None:
                await turn.abandon_read()
            await stream.aclose()
            exchange.attempts = stream.attempts
            exchange.usage = stream.usage
            exchange.generation_id = stream.generation_id
            if stream.model:
                exchange.model = stream.model
            if keep_previews:
                exchange.response_preview = preview("".join(pieces))
            try:
                await finish()
            except Exception:  # a defect: the stream still ends with its [DONE], and the log says why
                log.exception("stream settlement failed", extra={"json_fields": {"request_id": exchange.request_id}})

    pieces: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        collected = 0 if keep_previews else PREVIEW_CHARS
        batch = first
        try:
            while batch is not None:
                if turn is not None or collected < PREVIEW_CHARS or exchange.first_output is None:
                    for item in batch:
                        if not isinstance(item, bytes):
                            continue
                        chunk = _read(item)
                        if chunk is None:
                            continue
                        if turn is not None:
                            turn.observe(chunk)
                        if collected < PREVIEW_CHARS:
                            text = _text(chunk)
                            if text is not None:
                                pieces.append(text)
                                collected += len(text)
                        if exchange.first_output is None and _has_output(chunk):
                            exchange.first_output = time.perf_counter()
                parts = _encode_batch(batch)
                if parts:
                    yield b"".join(parts)
                batch = await anext(batches, None) if turn is None else await turn.read(batches)
            if turn is not None and turn.stopped and not stream.completed:
                exchange.outcome = "stopped"
                yield _stopped_event(stream, exchange)
        except OpenRouterError as exc:
            try:
                exchange.fail(reply_for(exc))
                exchange.status = 200  # the HTTP status already went out
                exchange.outcome = "upstream_error"
                yield _error_event(stream, exc, exchange)
            finally:
                let_go(exc)  # its tracebacks' frames hold the stream's state (see envelope.let_go)
        except BaseException:
            exchange.outcome = "cancelled"
            if turn is not None and turn.background and not stream.completed and exchange.error_type is None:
                # The caller left (a page reload): the answer goes on into its message, bounded in time. A stop
                # ends it, and so does the server's shutdown drain (capacity.Slot.end stops a detached turn).
                turn.detached = True
                with anyio.CancelScope(shield=True), anyio.move_on_after(background_seconds) as scope:
                    try:
                        await _read_on(batches, turn)
                    except OpenRouterError as exc:
                        exchange.fail(reply_for(exc))
                        exchange.status, exchange.outcome = 200, "upstream_error"
                        let_go(exc)
                    else:
                        stopped = turn.stopped and not stream.completed
                        exchange.outcome = "stopped" if stopped else "ok"
                if scope.cancelled_caught or exchange.error_type == "shutting_down":
                    exchange.outcome = "cancelled"
            raise
        finally:
            await settle()
        # Recorded before the caller reads the end: a client that stops at [DONE] (the SDKs do) and then
        # reads its usage, its request log or the thread's message finds them written.
        yield DONE_EVENT

    return EventStreamResponse(body(), media_type="text/event-stream", headers=HEADERS)

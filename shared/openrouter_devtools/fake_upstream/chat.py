"""``POST /chat/completions``: validate the body, take the next scripted step, and play it (reply or fault)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import replies
from .catalogue import DEFAULT_MODEL, MODEL_IDS
from .replies import COMMENT, DONE, Generation
from .script import Script
from .wire import REASONS, HttpRequest, dumps, error_body, response, send_event_stream

__all__ = ["answer_chat"]

_MALFORMED_BODY = b'{"id": "gen-broken", "choices": ['
_GARBAGE = "THIS IS NOT HTTP\r\n\r\n"
_DEFAULT_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "No auth credentials found",
    402: "Insufficient credits",
    403: "Forbidden",
    408: "Request timed out",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No available providers",
}

Bill = Callable[[Generation], None]


def _validate(request: HttpRequest, close: bool) -> tuple[dict[str, Any], str] | bytes:
    """``(body, model)`` of a well-formed request, else the 400 response to send."""
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return response(400, error_body(400, "Request body must be a JSON object", user_id=False), close=close)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        msg = "'messages' must be a non-empty array of message objects"
        return response(400, error_body(400, msg, user_id=False), close=close)
    model = body.get("model")
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, str) or model not in MODEL_IDS:
        msg = f"{model} is not a valid model ID"
        return response(400, error_body(400, msg, user_id=False), close=close)
    return body, model


async def answer_chat(
    request: HttpRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    script: Script,
    chunk_delay: float,
    bill: Bill,
) -> bool:
    """Answer an authorized chat request; ``bill`` is called for each completion served in full.

    Returns False when the connection must be closed.
    """
    close = not request.keep_alive
    checked = _validate(request, close)
    if isinstance(checked, bytes):
        writer.write(checked)
        return True
    body, model = checked
    stream = body.get("stream") is True
    step = script.next_step() or {}
    fault = step.get("fault", "reply")

    # -- faults that never produce a completion --
    if fault == "hang":
        while await reader.read(65536):
            pass
        return False
    if fault == "reset":
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False
    if fault == "garbage":
        writer.write(str(step.get("bytes", _GARBAGE)).encode("latin-1", "replace"))
        await writer.drain()
        return False
    if fault == "status":
        status = int(step.get("status", 500))
        default_message = _DEFAULT_STATUS_MESSAGES.get(status, REASONS.get(status, "Error"))
        headers = [(str(k), str(v)) for k, v in step.get("headers", {}).items()]
        payload = error_body(status, str(step.get("message", default_message)), step.get("metadata"))
        writer.write(response(status, payload, headers=headers, close=close))
        return True
    if fault == "error_200":
        message = str(step.get("message", "Provider returned error"))
        payload = error_body(step.get("code", 502), message, step.get("metadata"), user_id=False)
        writer.write(response(200, payload, close=close))
        return True
    if fault == "malformed":
        writer.write(response(200, _MALFORMED_BODY, close=close))
        return True
    if fault == "slow":
        await asyncio.sleep(float(step.get("delay", 1.0)))
    elif fault == "keepalive" and not stream:
        await asyncio.sleep(float(step.get("delay", 0.0)) * int(step.get("count", 1)))

    gen = replies.generate(body, model, step)
    gen_headers = [("X-Generation-Id", gen.id)]
    delay = float(step.get("chunk_delay", chunk_delay))

    # -- non-streaming answers --
    if fault == "finish_error" or (fault == "midstream_error" and not stream):
        if fault == "midstream_error":
            gen.pieces = gen.pieces[: int(step.get("after", 0))]
        elif "content" not in step:
            gen.pieces = gen.pieces[: max(1, len(gen.pieces) // 2)]
        gen.content = "".join(gen.pieces)
        error_choice = replies.choice(gen.content, "error")
        error_choice["error"] = replies.step_error(step, 502 if fault == "finish_error" else 429)
        bill(gen)
        writer.write(response(200, dumps(replies.completion(gen, [error_choice])), headers=gen_headers, close=close))
        return True
    if fault == "empty_choices":
        gen.usage = replies.usage(gen.usage["prompt_tokens"], 0)
        if stream:
            events = [(0.0, COMMENT), (delay, replies.usage_chunk(gen)), (delay, DONE)]
            await send_event_stream(writer, gen.id, events, close=close)
        else:
            writer.write(response(200, dumps(replies.completion(gen, [])), headers=gen_headers, close=close))
        return True
    if not stream:
        payload = dumps(replies.completion(gen))
        if fault == "cut":
            partial = payload[: len(payload) // 2]
            writer.write(response(200, partial, headers=gen_headers, content_length=len(payload)))
            await writer.drain()
            return False
        bill(gen)
        writer.write(response(200, payload, headers=gen_headers, close=close))
        return True

    return await _answer_stream(writer, gen, step, fault, delay=delay, close=close, bill=bill)


async def _answer_stream(
    writer: asyncio.StreamWriter,
    gen: Generation,
    step: dict[str, Any],
    fault: str,
    *,
    delay: float,
    close: bool,
    bill: Bill,
) -> bool:
    events: list[tuple[float, bytes]] = []
    if fault == "keepalive":
        comment_delay = float(step.get("delay", 0.0))
        events.extend((comment_delay if i else 0.0, COMMENT) for i in range(int(step.get("count", 1))))
    else:
        events.append((0.0, COMMENT))
    events.append((delay, replies.sse(gen, [replies.delta_choice({"role": "assistant", "content": ""})])))
    pieces = gen.pieces
    if fault in ("cut", "midstream_error"):
        pieces = pieces[: int(step.get("after", 0))]
    events.extend((delay, replies.sse(gen, [replies.delta_choice({"content": piece})])) for piece in pieces)

    if fault == "cut":
        await send_event_stream(writer, gen.id, events, close=close, terminate=False)
        writer.close()
        return False
    if fault == "midstream_error":
        error_choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
        events.append((delay, replies.sse(gen, [error_choice], error=replies.step_error(step, 429))))
        if step.get("done", False):
            events.append((delay, DONE))
        await send_event_stream(writer, gen.id, events, close=close)
        return True

    finish_choice = {
        "index": 0,
        "delta": {},
        "finish_reason": gen.finish_reason,
        "native_finish_reason": gen.finish_reason,
        "logprobs": None,
    }
    events.append((delay, replies.sse(gen, [finish_choice])))
    events.append((delay, replies.usage_chunk(gen)))
    events.append((delay, DONE))
    bill(gen)
    await send_event_stream(writer, gen.id, events, close=close)
    return True

"""capacity.py in-process: the in-flight cap, refusals while draining, and how the drain ends a plain
call and a stream (the real-process tests in tests/faults/test_shutdown.py run the whole shutdown)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

import pytest
from starlette.responses import Response, StreamingResponse

from openrouter_functions.capacity import InFlight
from openrouter_functions.envelope import ApiError
from openrouter_functions.exchange import Exchange

if TYPE_CHECKING:
    from openrouter_service.client import ChatStream


def _exchange() -> Exchange:
    return Exchange("chat", "req-1")


def test_a_call_beyond_the_limit_is_refused_and_a_released_slot_is_free_again() -> None:
    gate = InFlight()
    with gate.claim(_exchange(), 2, 8.0), gate.claim(_exchange(), 2, 8.0):
        with pytest.raises(ApiError) as refused:
            gate.claim(_exchange(), 2, 8.0)
        assert (refused.value.status, refused.value.type, refused.value.retry_after) == (503, "overloaded", 1.0)
        assert len(gate) == 2
    assert len(gate) == 0
    with gate.claim(_exchange(), 2, 8.0):
        assert len(gate) == 1


async def test_while_draining_new_calls_are_refused() -> None:
    gate = InFlight()
    gate.drain(60.0)
    with pytest.raises(ApiError) as refused:
        gate.claim(_exchange(), 10, 8.0)
    assert (refused.value.status, refused.value.type) == (503, "shutting_down")


async def test_the_drain_ends_a_plain_call_with_503_and_settles_it_like_a_hang_up() -> None:
    gate = InFlight()
    exchange = _exchange()
    started = asyncio.Event()

    async def upstream() -> Response:
        started.set()
        await asyncio.sleep(30)
        return Response("never")

    with gate.claim(exchange, 10, 0.05) as slot:
        task = asyncio.create_task(slot.run(upstream))
        await started.wait()
        gate.drain()
        response = await asyncio.wait_for(task, 5.0)
    assert response.status_code == 503
    assert json.loads(response.body)["error"]["type"] == "shutting_down"
    assert response.headers["retry-after"] == "1"
    assert (exchange.status, exchange.error_type, exchange.outcome) == (503, "shutting_down", "cancelled")
    assert len(gate) == 0


async def test_a_call_ended_before_it_started_is_refused_but_not_charged() -> None:
    gate = InFlight()
    exchange = _exchange()
    with gate.claim(exchange, 10, 8.0) as slot:
        slot.end()
        response = await slot.run(lambda: pytest.fail("upstream must not be called"))  # type: ignore[arg-type, return-value]
    assert response.status_code == 503
    assert (exchange.error_type, exchange.outcome) == ("shutting_down", "error")


async def test_the_drain_ends_a_stream_with_an_error_event_and_done() -> None:
    gate = InFlight()
    exchange = _exchange()
    closed: list[str] = []

    async def relay() -> AsyncIterator[bytes]:
        try:
            yield b"data: one\n\n"
            await asyncio.sleep(30)  # upstream goes quiet
            yield b"data: never\n\n"
        finally:
            closed.append(exchange.error_type or "")  # what the relay settles with

    with gate.claim(exchange, 10, 0.05) as slot:
        response = await slot.run(lambda: _streaming(relay()))
    assert isinstance(response, StreamingResponse)
    assert len(gate) == 1  # the stream holds its slot
    gate.drain()
    chunks = [chunk async for chunk in response.body_iterator]
    assert chunks[0] == b"data: one\n\n"
    assert chunks[-1] == b"data: [DONE]\n\n"
    event = json.loads(bytes(chunks[1])[len(b"data: ") :])
    assert event["error"] == {
        "code": 503,
        "message": "This server is restarting; try again.",
        "metadata": {"type": "shutting_down"},
    }
    assert event["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    assert closed == ["shutting_down"]
    assert len(gate) == 0


async def _streaming(body: AsyncIterator[bytes]) -> Response:
    return StreamingResponse(body, media_type="text/event-stream")


class _OneChunkStream:
    """An upstream stream (openrouter_service.ChatStream's surface) of one chunk, then the end."""

    attempts, usage, generation_id, model, completed = 1, None, "gen-1", "m", False

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        yield [b'{"id":"gen-1","choices":[{"index":0,"delta":{"content":"hi"}}]}']
        self.completed = True

    def batches(self) -> AsyncIterator[list[bytes]]:
        return self._batches()

    async def aclose(self) -> None:
        pass


async def _relayed(finish_seconds: float, *, drain_while_settling: bool, fail: bool = False) -> list[bytes]:
    from openrouter_functions.relay import relay_stream

    gate = InFlight()
    exchange = _exchange()
    settling = asyncio.Event()

    async def finish() -> None:
        settling.set()
        await asyncio.sleep(finish_seconds)  # the store's round trips
        if fail:
            raise RuntimeError("a defect in settling")

    chunks: list[bytes] = []
    with gate.claim(exchange, 10, 0.01) as slot:
        stream = cast("ChatStream", _OneChunkStream())  # ChatStream's surface, without a client behind it
        response = await slot.run(lambda: relay_stream(stream, exchange, finish, keep_previews=False))
        assert isinstance(response, StreamingResponse)

        async def read() -> None:
            async for chunk in response.body_iterator:
                chunks.append(chunk if isinstance(chunk, bytes) else str(chunk).encode())

        reading = asyncio.create_task(read())
        await settling.wait()
        if drain_while_settling:
            gate.drain()  # SIGTERM: the drain's deadline (0.01 s) passes while the answer is being recorded
        await asyncio.wait_for(reading, 5)
    return chunks


async def test_a_drain_while_the_answer_is_recorded_adds_nothing_after_done() -> None:
    chunks = await _relayed(0.2, drain_while_settling=True)
    body = b"".join(chunks)
    assert body.count(b"data: [DONE]") == 1 and body.endswith(b"data: [DONE]\n\n")
    assert b"shutting_down" not in body


async def test_a_failing_settlement_still_ends_the_stream_with_done(caplog: pytest.LogCaptureFixture) -> None:
    chunks = await _relayed(0.0, drain_while_settling=False, fail=True)
    assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
    assert any(r.getMessage() == "stream settlement failed" and r.exc_info for r in caplog.records)

"""The streamed answer's response: a caller hanging up ends the body in the request's own task.

Driven through ASGI directly, as uvicorn (ASGI spec 2.3) calls it: ``receive`` gives the request body, then
blocks until the caller leaves (``http.disconnect``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from openrouter_functions.relay import EventStreamResponse


class Caller:
    """One HTTP exchange from the server's side: what was sent, and a way to hang up."""

    def __init__(self, spec_version: str = "2.3") -> None:
        self.scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}}
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.body_read = False

    async def receive(self) -> dict[str, Any]:
        if not self.body_read:
            self.body_read = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def chunks(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body" and m["body"]]


async def test_a_caller_who_leaves_ends_the_body_where_it_waits_and_the_call_ends_normally() -> None:
    caller = Caller()
    upstream = asyncio.Event()  # the model never says more
    unwound: list[str] = []
    tasks: list[asyncio.Task[Any] | None] = []

    async def body() -> AsyncIterator[bytes]:
        tasks.append(asyncio.current_task())
        try:
            yield b"data: 1\n\n"
            await upstream.wait()
            yield b"data: 2\n\n"
        except asyncio.CancelledError:
            unwound.append("cancelled")
            raise
        finally:
            unwound.append("finally")

    response = EventStreamResponse(body(), media_type="text/event-stream")
    call = asyncio.create_task(response(caller.scope, caller.receive, caller.send))
    for _ in range(100):
        await asyncio.sleep(0)
        if caller.chunks():
            break
    assert caller.chunks() == [b"data: 1\n\n"]
    caller.gone.set()
    await asyncio.wait_for(call, 1)  # returns: no CancelledError out of the application
    assert unwound == ["cancelled", "finally"]
    assert tasks == [call]  # written in the request's own task: no task group, no second task per stream
    assert call.cancelling() == 0  # the cancellation was taken back
    assert caller.chunks() == [b"data: 1\n\n"]


async def test_a_caller_who_leaves_while_the_answer_is_being_settled_does_not_cut_the_settlement() -> None:
    """The SDKs hang up right after ``[DONE]``, while the relay records the answer (shielded): it finishes."""
    caller = Caller()
    settling = asyncio.Event()
    recorded: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        try:
            yield b"data: [DONE]\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                settling.set()
                await asyncio.sleep(0.05)  # the store's round trip
                await asyncio.sleep(0)
                recorded.append("settled")

    call = asyncio.create_task(EventStreamResponse(body())(caller.scope, caller.receive, caller.send))
    await settling.wait()
    caller.gone.set()
    await asyncio.wait_for(call, 1)
    assert recorded == ["settled"]
    assert call.cancelling() == 0


async def test_without_a_hang_up_every_chunk_goes_out_and_nothing_is_left_running() -> None:
    caller = Caller()
    ran: list[str] = []

    async def body() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0)
            yield f"data: {i}\n\n".encode()

    async def background() -> None:
        ran.append("background")

    from starlette.background import BackgroundTask

    before = asyncio.all_tasks()
    response = EventStreamResponse(body(), media_type="text/event-stream", background=BackgroundTask(background))
    await response(caller.scope, caller.receive, caller.send)
    assert caller.chunks() == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
    assert caller.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert ran == ["background"]
    await asyncio.sleep(0)  # the listener's cancellation is delivered
    assert asyncio.all_tasks() == before
    caller.gone.set()  # a disconnect after the end cancels nothing
    await asyncio.sleep(0)
    this = asyncio.current_task()
    assert this is not None and this.cancelling() == 0


@pytest.mark.parametrize("hung_up_too", [False, True])
async def test_a_cancellation_from_elsewhere_is_passed_on(hung_up_too: bool) -> None:
    """The server shutting down cancels the call: a CancelledError, with or without the caller leaving."""
    caller = Caller()
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        started.set()
        await asyncio.Event().wait()
        yield b"never"

    call = asyncio.create_task(EventStreamResponse(body())(caller.scope, caller.receive, caller.send))
    await started.wait()
    if hung_up_too:
        caller.gone.set()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_body_that_ends_after_the_hang_up_leaves_the_task_uncancelled() -> None:
    caller = Caller()
    started = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # swallowed: the stream just ends
        yield b"never"

    call = asyncio.create_task(EventStreamResponse(body())(caller.scope, caller.receive, caller.send))
    await started.wait()
    caller.gone.set()
    await asyncio.wait_for(call, 1)
    assert call.cancelling() == 0


async def test_on_asgi_2_4_starlettes_own_way_is_used() -> None:
    caller = Caller(spec_version="2.4")

    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    before = asyncio.all_tasks()
    await EventStreamResponse(body())(caller.scope, caller.receive, caller.send)
    assert caller.chunks() == [b"data: 1\n\n"]
    assert asyncio.all_tasks() == before  # no listener was started

"""How much one instance takes on, and how it stops.

*Load.* A call beyond ``MAX_IN_FLIGHT`` is refused at once with 503 ``overloaded`` and ``Retry-After``,
before admission (so it spends no quota), instead of waiting silently for an upstream connection.

*Shutdown.* When the server is told to stop (SIGTERM, SIGINT), new calls are refused with 503
``shutting_down`` and those running get ``SHUTDOWN_DRAIN_SECONDS`` to finish. Then each is ended: a
plain call answers 503 ``shutting_down``; a stream has its upstream closed and gets an error event and
``[DONE]``. Either way the request is settled like a hang-up (outcome ``cancelled``, error type
``shutting_down``, charged its reservation: OpenRouter bills what was generated). A stream whose caller
stopped reading is settled here a moment later, and the server told to quit rather than wait for that
caller's connection.

The bound lives here, in the process, because functions-framework runs us under gunicorn with settings
we cannot change (``graceful_timeout`` 30 s, while Cloud Run kills the instance 10 s after SIGTERM): we
learn of the signal by chaining onto the server's own handler, so the server still shuts down as it
always does.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from types import FrameType, TracebackType
from typing import Any

import anyio
from starlette.responses import Response, StreamingResponse

from .envelope import ApiError, error_response
from .exchange import Exchange
from .relay import DONE_EVENT, encode_event

__all__ = ["IN_FLIGHT", "InFlight", "Slot", "overloaded"]

RETRY_AFTER = 1.0
SHUTTING_DOWN = "shutting_down"
# After the drain's deadline, how long an ended stream may take to write its last events. A caller that
# stopped reading holds its stream (and the server, which waits for its connection) in a write that
# nothing else would ever interrupt: then the stream is settled here and the server told to quit.
STRAGGLER_SECONDS = 1.0

Content = str | bytes | memoryview


def overloaded() -> ApiError:
    """The answer when this instance runs all it may: try again in a moment (or another instance)."""
    return ApiError(503, "overloaded", "This server is at capacity; try again in a moment.", retry_after=RETRY_AFTER)


def _shutting_down() -> ApiError:
    return ApiError(503, SHUTTING_DOWN, "This server is restarting; try again.", retry_after=RETRY_AFTER)


_asyncio_scope: Callable[[], anyio.CancelScope] | None = None


def _cancel_scope() -> anyio.CancelScope:
    """``anyio.CancelScope()``: the same object, but on asyncio (every server we run on) made from anyio's
    asyncio class directly, since ``anyio.CancelScope()`` first asks sniffio which library runs, on every
    call (about half of what the scope costs a call). Elsewhere, or in an anyio without that class, anyio's
    own way."""
    global _asyncio_scope
    if _asyncio_scope is None:
        try:
            from anyio._backends._asyncio import CancelScope as AsyncioCancelScope
        except ImportError:  # pragma: no cover - another anyio layout: the general way
            _asyncio_scope = anyio.CancelScope
        else:
            _asyncio_scope = AsyncioCancelScope
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # not on asyncio (trio): anyio finds its own
        return anyio.CancelScope()
    return _asyncio_scope()


class Slot:
    """One running call's place in the instance: counted until released; the drain may end it."""

    def __init__(self, gate: InFlight, exchange: Exchange) -> None:
        self._gate = gate
        self.exchange = exchange
        self.ended = False
        self._scope: anyio.CancelScope | None = None
        self._kept = False  # handed to a stream, which releases it when it ends
        self._chunks: AsyncIterator[Content] | None = None  # the stream's relay, once it is being written
        self._stepping = False  # awaiting the relay (as opposed to waiting for the caller to take a chunk)

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._kept:
            self.release()

    def release(self) -> None:
        self._gate.release(self)

    def end(self) -> None:
        """End the call now (the drain's deadline): whatever it awaits is cancelled."""
        if self.ended:
            return
        self.ended = True
        # Set before the cancellation reaches the call: the stream relay settles as it unwinds.
        self.exchange.error_type = SHUTTING_DOWN
        if self._scope is not None:
            self._scope.cancel()
        turn = self.exchange.turn
        if turn is not None and turn.detached:  # a threaded answer read on after its caller left
            turn.request_stop()

    def stuck(self) -> bool:
        """Whether this stream, ended, still waits for its caller to take a chunk (a caller that stopped
        reading: nothing else would ever interrupt that write)."""
        return self.ended and self._chunks is not None and not self._stepping

    async def abandon(self) -> None:
        """Close a stuck stream's relay here (it settles as it closes) and give up the slot."""
        if self._chunks is not None:
            with anyio.CancelScope(shield=True):
                await _close(self._chunks)
        self.release()

    async def _until_ended(self, step: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """``(True, result)`` of ``step``, or ``(False, None)`` when the drain ended it first."""
        if self.ended:
            return False, None
        with _cancel_scope() as scope:
            self._scope, self._stepping = scope, True
            try:
                return True, await step()
            finally:
                self._scope, self._stepping = None, False
        return False, None

    async def run(self, call: Callable[[], Awaitable[Response]]) -> Response:
        """``call``'s response, which a stream's body carries on in this slot; 503 when the drain ended it."""
        started = not self.ended
        done, response = await self._until_ended(call)
        if not done:
            error = _shutting_down()
            self.exchange.fail(error)
            if started:  # upstream was called: it may bill, so settle like a hang-up
                self.exchange.outcome = "cancelled"
            return error_response(error)
        assert isinstance(response, Response)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._stream(response.body_iterator)
            self._kept = True
        return response

    async def _stream(self, body: AsyncIterable[Content]) -> AsyncIterator[Content]:
        """``body`` until it ends or the drain ends it; then an error event and ``[DONE]``."""
        chunks = self._chunks = aiter(body)
        finished = False
        try:
            while not self.ended:
                try:
                    done, chunk = await self._until_ended(lambda: anext(chunks))
                except StopAsyncIteration:
                    finished = True
                    return
                if not done:
                    break
                yield chunk
                if isinstance(chunk, bytes) and chunk.endswith(DONE_EVENT):
                    # The relay's end, sent once the request is recorded: nothing may follow it, not even
                    # the drain's event when its deadline passed meanwhile.
                    finished = True
                    with anyio.CancelScope(shield=True):
                        await _close(chunks)
                    return
            # The relay below closes upstream and settles as it unwinds (at once if it was cancelled).
            await _close(chunks)
            finished = True
            yield encode_event(self._shutdown_event())
            yield DONE_EVENT
        finally:
            if not finished:  # the caller left: the relay still settles
                with anyio.CancelScope(shield=True):
                    await _close(chunks)
            self.release()

    def _shutdown_event(self) -> dict[str, Any]:
        exchange = self.exchange
        error = _shutting_down()
        return {
            "id": exchange.generation_id or exchange.request_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": exchange.model,
            "error": {"code": error.status, "message": error.message, "metadata": {"type": error.type}},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }


async def _close(chunks: AsyncIterator[Content]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


class InFlight:
    """The calls this process is running: a cap on how many, and the drain at shutdown."""

    def __init__(self) -> None:
        self._slots: set[Slot] = set()
        self.draining = False
        self.drain_seconds = 8.0
        self._watching = False
        self._force_quit: Callable[[], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._slots)

    def claim(self, exchange: Exchange, limit: int, drain_seconds: float) -> Slot:
        """A slot for one call (use it as a context manager); 503 ``overloaded`` or ``shutting_down``."""
        self._watch_signals()
        self.drain_seconds = drain_seconds
        if self.draining:
            raise _shutting_down()
        if len(self._slots) >= limit:
            raise overloaded()
        slot = Slot(self, exchange)
        self._slots.add(slot)
        return slot

    def release(self, slot: Slot) -> None:
        self._slots.discard(slot)

    def drain(self, seconds: float | None = None) -> None:
        """Refuse new calls from now on; end those still running after ``seconds`` (the configured drain)."""
        if self.draining:
            return
        self.draining = True
        asyncio.get_running_loop().call_later(self.drain_seconds if seconds is None else seconds, self.end_all)

    def end_all(self) -> None:
        """End every running call now; settle streams whose caller stopped reading a moment later."""
        for slot in list(self._slots):
            slot.end()
        if self._slots:
            asyncio.get_running_loop().call_later(STRAGGLER_SECONDS, self._start_ending_stragglers)

    def _start_ending_stragglers(self) -> None:
        task = asyncio.get_running_loop().create_task(self._end_stragglers())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_stragglers(self) -> None:
        stuck = [slot for slot in self._slots if slot.stuck()]
        if not stuck:
            return
        await asyncio.gather(*(slot.abandon() for slot in stuck), return_exceptions=True)
        if self._force_quit is not None:
            # The server would wait for those callers' connections forever: the second signal is
            # uvicorn's own "quit now" (as a second Ctrl+C is).
            self._force_quit()

    def reset(self) -> None:
        """Forget the drain (tests that run several servers' lives in one process)."""
        self.draining = False
        self._slots.clear()

    def _watch_signals(self) -> None:
        """Start the drain when the server is told to stop, ahead of the server's own handler.

        Only a server that handles the signal itself (uvicorn, standalone or as gunicorn's worker) is
        chained onto; elsewhere (a test runner, a script) the signals keep their meaning.
        """
        if self._watching or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not serving
            return
        self._watching = True
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if not callable(previous) or previous is signal.default_int_handler:
                continue

            def chained(
                number: int, frame: FrameType | None, previous: Callable[[int, FrameType | None], Any] = previous
            ) -> None:
                loop.call_soon_threadsafe(self.drain)
                previous(number, frame)

            signal.signal(signum, chained)
            if signum == signal.SIGINT:
                self._force_quit = lambda: signal.raise_signal(signal.SIGINT)


IN_FLIGHT = InFlight()

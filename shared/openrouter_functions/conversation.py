"""Threaded chat turns (docs/threads.md): what a turn on a stored thread adds to a chat call.

A turn is asked for with ``thread_id`` in the chat body. After the ledger has admitted the request, the
thread store locks the thread, stores the user message and an empty ``streaming`` answer, and hands back
the history to send. While the call runs, :class:`TurnState` writes the answer so far every
``THREAD_FLUSH_SECONDS`` (one bounded write per running turn, which also reads the stop flag, so a stop
asked on another instance reaches this one), and when the request ends — however it ends — the answer is
written once more with its status, usage and cost, before the ledger settles.

A stop asked on this instance cancels the upstream read at once; one asked elsewhere, at the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio

from .envelope import ApiError
from .exchange import Exchange
from .ledger import UsageRecord, storable
from .threads import (
    MESSAGE_CHARS,
    MessageEnd,
    MessageStatus,
    ThreadBusy,
    ThreadNotFound,
    ThreadStore,
    ThreadStoreUnavailable,
    Turn,
    TurnRequest,
    parse_thread_id,
)

__all__ = ["RUNNING", "ThreadAsk", "TurnState", "begin_turn", "parse_thread_ask", "stop_answer"]

log = logging.getLogger("openrouter_functions")

# Turns running on this instance, by assistant message id: a stop asked here takes effect at once.
RUNNING: dict[str, TurnState] = {}

# How long a stop request waits for the running turn to end its message (beyond two flush periods).
STOP_WAIT_MARGIN = 2.0
STOP_WAIT_MAX = 5.0
STOP_POLL_SECONDS = 0.2
FINISH_ATTEMPTS = 2
FINISH_RETRY_SECONDS = 0.2
# Users with a stop request waiting on this instance: a second one answers at once instead of polling too.
_STOP_WAITERS: set[str] = set()


# Parameters whose answers a thread cannot keep (tool calls are not text; it stores text).
THREAD_UNSUPPORTED = ("functions", "function_call", "tool_choice", "tools")


@dataclass(frozen=True, slots=True)
class ThreadAsk:
    """The thread part of a chat body: which thread (``None``: a new one), and what to do on a hang-up."""

    thread_id: str | None
    background: bool = False
    system: str | None = None
    user_text: str = ""


def _text_of(content: Any) -> str | None:
    """A message's text: a string, or text parts joined; ``None`` for anything else (images, audio)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                return None
            texts.append(part["text"])
        return "".join(texts)
    return None


def parse_thread_ask(body: dict[str, Any]) -> ThreadAsk | None:
    """Take ``thread_id`` and ``background`` out of a chat body (``None``: not a threaded turn) and check
    that ``messages`` is one new turn: one user message, and for a new thread optionally one system message
    before it."""
    background = body.pop("background", None)
    if "thread_id" not in body:
        if background is not None:
            raise ApiError(400, "invalid_request", "background applies to threaded turns only; add thread_id.")
        return None
    raw = body.pop("thread_id")
    if background is not None and not isinstance(background, bool):
        raise ApiError(400, "invalid_request", "background must be true or false.")
    if raw == "new":
        thread_id = None
    else:
        thread_id = parse_thread_id(raw)
        if thread_id is None:
            raise ApiError(400, "invalid_request", 'thread_id must be a thread\'s uuid or "new".')
    unsupported = sorted(key for key in THREAD_UNSUPPORTED if key in body)
    if unsupported:
        raise ApiError(
            400, "invalid_request", f"{', '.join(unsupported)}: threads keep text answers; not with thread_id."
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalid_request", "messages: send the new user message.")
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
    allowed = (["user"], ["system", "user"]) if thread_id is None else (["user"],)
    if roles not in allowed:
        where = (
            "a new thread takes one user message, optionally after one system message"
            if thread_id is None
            else ("a thread's turn takes only the new user message (the server sends the history)")
        )
        raise ApiError(400, "invalid_request", f"messages: {where}.")
    texts = [_text_of(m.get("content")) for m in messages]
    if any(text is None for text in texts):
        raise ApiError(400, "invalid_request", "messages: threads store text; send the content as text.")
    user_text = texts[-1] or ""
    if not user_text.strip():
        raise ApiError(400, "invalid_request", "messages: the user message is empty.")
    if len(user_text) > MESSAGE_CHARS or len(texts[0] or "") > MESSAGE_CHARS:
        raise ApiError(
            400, "invalid_request", f"messages: a thread's message holds at most {MESSAGE_CHARS} characters."
        )
    system = texts[0] if len(texts) == 2 else None
    return ThreadAsk(thread_id, bool(background), system or None, user_text)


def thread_store_error(exc: Exception) -> ApiError:
    """The caller's answer for a store's refusal or failure."""
    if isinstance(exc, ThreadNotFound):
        return ApiError(404, "thread_not_found", "No such thread.")
    if isinstance(exc, ThreadBusy):
        return ApiError(
            409,
            "thread_busy",
            "An answer is still being written on this thread; wait for it or stop it (POST .../stop).",
            retry_after=1,
            details={"message_id": exc.message_id} if exc.message_id else None,
        )
    return ApiError(503, "threads_unavailable", "Conversations are unavailable right now; try again.", retry_after=5)


async def begin_turn(store: ThreadStore, request: TurnRequest) -> Turn:
    """The store's turn, or the caller's 404/409/503."""
    try:
        return await store.begin_turn(request)
    except (ThreadNotFound, ThreadBusy, ThreadStoreUnavailable) as exc:
        if isinstance(exc, ThreadStoreUnavailable):
            log.error("thread_store_unavailable", extra={"json_fields": {"error": str(exc)}})
        raise thread_store_error(exc) from None


class TurnState:
    """One running turn's answer: collected as it streams, written as it grows, ended once."""

    def __init__(
        self, store: ThreadStore, turn: Turn, *, flush_seconds: float, background: bool, settle_seconds: float
    ) -> None:
        self.store = store
        self.turn = turn
        self.flush_seconds = flush_seconds
        self.background = background
        self.settle_seconds = settle_seconds
        self.pieces: list[str] = []
        self.finish_reason: str | None = None
        self.stop_requested = False
        self.stopped = False  # the turn ended because a stop was asked for
        self.detached = False  # its caller left and the answer goes on (background)
        self._written: str | None = None  # the text as last written (a heartbeat when it has not changed)
        self._reading: anyio.CancelScope | None = None
        self._done = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[Any] | None = None  # a background turn's upstream read under way
        self._abandoned: asyncio.Future[Any] | None = None  # ... cancelled, not yet seen to its end
        self._ended = False

    @property
    def message_id(self) -> str:
        return self.turn.message_id

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def start(self) -> None:
        RUNNING[self.message_id] = self
        self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    def observe(self, chunk: dict[str, Any]) -> None:
        """Take what a stream chunk adds to the answer (its first choice's text, the finish reason)."""
        choices = chunk.get("choices")
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            return
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.pieces.append(content)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reason = reason

    def request_stop(self) -> None:
        """Stop the turn: the upstream read under way (if any) is cancelled."""
        self.stop_requested = True
        if self._reading is not None:
            self._reading.cancel()

    async def read(self, batches: AsyncIterator[Any]) -> Any:
        """The next upstream batch, or ``None`` when the stream is over or the turn was stopped.

        In ``background``, the read runs in a task of its own that a caller hanging up does not cancel:
        the read under way when the page went away is the first the rest of the answer is read from.
        """
        if self.stop_requested:
            self._cancel_pending()
            self.stopped = True
            return None
        with anyio.CancelScope() as scope:
            self._reading = scope
            try:
                if not self.background:
                    return await anext(batches, None)
                if self._pending is None:
                    self._pending = asyncio.ensure_future(anext(batches, None))
                batch = await asyncio.shield(self._pending)
                self._pending = None
                return batch
            finally:
                self._reading = None
        self._cancel_pending()
        self.stopped = True  # cancelled by request_stop
        return None

    def _cancel_pending(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._abandoned, self._pending = self._pending, None

    async def abandon_read(self) -> None:
        """Cancel a background read still under way and wait for it, before the stream is closed."""
        self._cancel_pending()
        abandoned, self._abandoned = self._abandoned, None
        if abandoned is not None:
            with contextlib.suppress(BaseException):
                await abandoned

    async def run(self, call: Any) -> Any:
        """``await call()`` (a plain upstream call) unless a stop comes first: then ``None``."""
        if self.stop_requested:
            self.stopped = True
            return None
        with anyio.CancelScope() as scope:
            self._reading = scope
            try:
                return await call()
            finally:
                self._reading = None
        self.stopped = True
        return None

    async def _flush_loop(self) -> None:
        """Every ``flush_seconds``: write the answer so far, and learn whether a stop was asked for."""
        while not self._done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self.flush_seconds)
            if self._done.is_set():
                return
            text = self.text
            try:
                # Unchanged text is not sent again: the write only keeps the message's heartbeat (and reads
                # the stop flag), so a long answer costs one full write per change, not per period.
                changed = text != self._written
                keep_going = await self.store.progress(
                    self.message_id, (storable(text, MESSAGE_CHARS) or "") if changed else None
                )
                self._written = text
            except Exception as exc:  # the next period tries again; the end is written anyway
                log.warning("thread_progress_failed", extra={"json_fields": {"error": str(exc)}})
                continue
            if not keep_going:
                self.request_stop()
                return

    async def end(self, exchange: Exchange, record: UsageRecord | None) -> None:
        """Write the message's end (once): status from how the request ended, usage and cost as settled."""
        if self._ended:
            return
        self._ended = True
        self._done.set()
        self._cancel_pending()
        RUNNING.pop(self.message_id, None)
        if self._flusher is not None:  # its write under way, if any, ends first (it is not cancelled)
            with anyio.CancelScope(shield=True):
                await asyncio.wait({self._flusher}, timeout=self.settle_seconds + self.flush_seconds)
        end = self._message_end(exchange, record)
        problem = "timed out"
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settle_seconds * 5):
            for attempt in range(FINISH_ATTEMPTS):  # the end is what the user sees: one transient failure is retried
                try:
                    if not await self.store.finish(self.message_id, end):
                        # Already ended: a stop or the stale rule got there first (the store was slow).
                        log.warning(
                            "thread_message_already_ended",
                            extra={"json_fields": {"message_id": self.message_id, "status": end.status}},
                        )
                    return
                except ThreadStoreUnavailable as exc:
                    problem = str(exc)
                    if attempt + 1 < FINISH_ATTEMPTS:
                        await anyio.sleep(FINISH_RETRY_SECONDS)
        # Left `streaming`: the next turn or a stop marks it failed/stopped once its heartbeat is stale.
        log.error(
            "thread_message_unrecorded",
            extra={"json_fields": {"message_id": self.message_id, "status": end.status, "error": problem}},
        )

    def _message_end(self, exchange: Exchange, record: UsageRecord | None) -> MessageEnd:
        status: MessageStatus
        failed_upstream = exchange.outcome == "upstream_error" or (
            exchange.status >= 400 and exchange.outcome != "stopped"
        )
        if self.finish_reason is not None and not failed_upstream:
            status = "complete"  # the model finished, whatever came after (a late stop, a hang-up, a shutdown)
        elif exchange.error_type == "shutting_down":
            status = "failed"  # the instance stopped under it (a deploy, a scale-in): settled like a hang-up
        elif failed_upstream:
            status = "failed"
        elif self.stopped or exchange.outcome in ("stopped", "cancelled"):
            status = "stopped"  # asked to stop, or the caller hung up
        else:
            status = "complete"
        text = self.text
        failed = status == "failed"
        return MessageEnd(
            status=status,
            content=storable(text, MESSAGE_CHARS) or "",
            model=record.model if record is not None else storable(exchange.model),
            prompt_tokens=record.prompt_tokens if record is not None else None,
            completion_tokens=record.completion_tokens if record is not None else None,
            total_tokens=record.total_tokens if record is not None else None,
            cost_usd=record.cost_usd if record is not None else None,
            generation_id=record.generation_id if record is not None else None,
            finish_reason="stop" if status == "stopped" else storable(self.finish_reason, 64),
            error_type=(exchange.error_type or "upstream_error") if failed else None,
            error_message=storable(exchange.error_message, 500) if failed else None,
        )


async def stop_answer(
    store: ThreadStore,
    user_id: str,
    thread_id: str | None,
    message_id: str | None,
    *,
    stale_seconds: int,
    flush_seconds: float,
) -> dict[str, Any]:
    """Ask the thread's running answer to stop and wait (bounded) until it has: the stop endpoint's body.

    ``status`` stays ``streaming`` when the instance running the answer has not seen the stop within the
    wait (it will at its next write, or the answer counts as dead once its heartbeat is stale). One waiter
    per user on an instance: a second stop from the same user answers at once.
    """
    try:
        answer = await store.stop(user_id, thread_id, message_id, stale_seconds)
        if answer.status == "streaming" and answer.message_id is not None:
            local = RUNNING.get(answer.message_id)
            if local is not None:
                local.request_stop()
            if user_id not in _STOP_WAITERS:
                _STOP_WAITERS.add(user_id)
                try:
                    with anyio.move_on_after(min(2 * flush_seconds + STOP_WAIT_MARGIN, STOP_WAIT_MAX)):
                        while answer.status == "streaming":
                            await anyio.sleep(STOP_POLL_SECONDS)
                            answer = await store.stop(user_id, answer.thread_id, answer.message_id, stale_seconds)
                finally:
                    _STOP_WAITERS.discard(user_id)
    except (ThreadNotFound, ThreadStoreUnavailable) as exc:
        if isinstance(exc, ThreadStoreUnavailable):
            log.error("thread_store_unavailable", extra={"json_fields": {"error": str(exc)}})
        raise thread_store_error(exc) from None
    return {"thread_id": answer.thread_id, "message_id": answer.message_id, "status": answer.status}

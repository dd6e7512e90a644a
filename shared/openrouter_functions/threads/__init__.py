"""Conversations: stored threads and messages (docs/threads.md).

This module is the contract: the types and the :class:`ThreadStore` protocol. Three stores implement it,
on the same store as the ledger — SQLite (embedded, local runs), direct Postgres and Supabase REST
(RPC) — each calling the same four operations, written once per store: ``thread_turn_begin``,
``thread_message_progress``, ``thread_message_finish`` and ``thread_stop`` (SQL functions in
``supabase/migrations/20261202070000_threads.sql``; the SQLite store does the same in Python).

A store only talks to its store; what a turn means (history budget, progressive writes, stop, hang-up)
belongs to :mod:`openrouter_functions.conversation`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = [
    "MESSAGE_STATUSES",
    "MessageEnd",
    "MessageStatus",
    "StopAnswer",
    "ThreadBusy",
    "ThreadNotFound",
    "ThreadStore",
    "ThreadStoreUnavailable",
    "Turn",
    "TurnRequest",
    "estimate_tokens",
    "parse_thread_id",
    "title_for",
]

MESSAGE_STATUSES = ("streaming", "complete", "stopped", "failed")
MessageStatus = Literal["streaming", "complete", "stopped", "failed"]

TITLE_CHARS = 80
MESSAGE_CHARS = 1_000_000  # like the SQL CHECK on messages.content
ERROR_MESSAGE_CHARS = 500


def estimate_tokens(text: str) -> int:
    """The history budget's measure of a message: about four characters a token, plus a message's frame.

    The same formula as the SQL (``ceil(char_length(content) / 4.0) + 4``), so every store trims alike.
    """
    return -(-len(text) // 4) + 4


def title_for(text: str) -> str:
    """A new thread's title: the first user message's first line, whitespace collapsed, at most 80
    characters (the user may rename it; no model call is spent on it)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    title = re.sub(r"\s+", " ", first).strip()
    if len(title) > TITLE_CHARS:
        title = title[: TITLE_CHARS - 1].rstrip() + "…"
    return title or "New conversation"


def parse_thread_id(value: Any) -> str | None:
    """A thread id as its canonical uuid text, ``None`` for a malformed one."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


class ThreadStoreUnavailable(Exception):
    """The thread store could not be reached or answered with an error."""


class ThreadNotFound(Exception):
    """No such thread (or message) for this user: a thread of another user is not found either."""


class ThreadBusy(Exception):
    """The thread has a generation running; turns on one thread are serialized."""

    def __init__(self, message_id: str | None) -> None:
        super().__init__(f"thread busy (message {message_id})")
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """What ``thread_turn_begin`` takes: one new user message on a thread (``thread_id=None``: a new one)."""

    user_id: str  # the ledger's uuid of the caller (ledger_user_id)
    thread_id: str | None
    user_text: str
    model: str
    request_id: str  # the ledger's id of this request (links the messages to request_log)
    max_messages: int  # history budget: at most this many messages, the new one included
    max_tokens: int  # ... and at most this many estimated tokens (estimate_tokens), system prompt included
    stale_seconds: int  # a `streaming` message not written for this long belongs to a dead instance
    system: str | None = None  # a new thread's system prompt (kept in every turn's history)
    title: str | None = None  # a new thread's title (default: title_for(user_text))


@dataclass(frozen=True, slots=True)
class Turn:
    """``thread_turn_begin``'s answer: the messages to send upstream, and where the answer goes."""

    thread_id: str
    user_message_id: str
    message_id: str  # the assistant message, `streaming` until the turn ends
    history: list[dict[str, str]]  # system prompt first (if any), the new user message last
    dropped: int = 0  # older messages left out by the budget
    created: bool = False  # the thread was created by this turn

    @classmethod
    def from_json(cls, data: Any) -> Turn:
        """The turn from the SQL function's JSON answer; ``not_found`` and ``busy`` raise."""
        if not isinstance(data, dict):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_turn_begin: {data!r}")
        status = data.get("status")
        if status == "not_found":
            raise ThreadNotFound()
        if status == "busy":
            raise ThreadBusy(data.get("message_id"))
        history = data.get("history")
        if status != "ok" or not isinstance(history, list):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_turn_begin: {data!r}")
        try:
            return cls(
                thread_id=str(data["thread_id"]),
                user_message_id=str(data["user_message_id"]),
                message_id=str(data["message_id"]),
                history=[{"role": str(m["role"]), "content": str(m["content"])} for m in history],
                dropped=int(data.get("dropped") or 0),
                created=bool(data.get("created")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ThreadStoreUnavailable(f"unexpected answer from thread_turn_begin: {data!r}") from exc


@dataclass(slots=True)
class MessageEnd:
    """How an assistant message ends (``thread_message_finish``'s ``p_row``)."""

    status: MessageStatus
    content: str
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    generation_id: str | None = None
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None

    def row(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "content": self.content,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd,
            "generation_id": self.generation_id,
            "finish_reason": self.finish_reason,
            "error_type": self.error_type,
            "error_message": self.error_message,
        }


@dataclass(frozen=True, slots=True)
class StopAnswer:
    """``thread_stop``'s answer: the message it concerns and where it stands now.

    ``status`` is the message's status (``streaming`` while the instance running it has not yet seen the
    request), or ``idle`` when the thread has no assistant message at all.
    """

    thread_id: str
    message_id: str | None
    status: str
    stop_requested: bool = False

    @classmethod
    def from_json(cls, data: Any) -> StopAnswer:
        if not isinstance(data, dict):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_stop: {data!r}")
        if data.get("status") == "not_found":
            raise ThreadNotFound()
        if not isinstance(data.get("status"), str) or not isinstance(data.get("thread_id"), str):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_stop: {data!r}")
        message_id = data.get("message_id")
        return cls(
            thread_id=data["thread_id"],
            message_id=str(message_id) if message_id is not None else None,
            status=data["status"],
            stop_requested=bool(data.get("stop_requested")),
        )


class ThreadStore(Protocol):
    """What every store provides (docs/threads.md). Failures raise :class:`ThreadStoreUnavailable`."""

    name: str

    async def begin_turn(self, turn: TurnRequest) -> Turn:
        """Lock the thread (or create it), refuse while a generation runs on it (:class:`ThreadBusy`; a
        `streaming` message older than ``stale_seconds`` is first marked `failed`), store the user message
        and an empty `streaming` assistant message, and return the history within the budget.
        :class:`ThreadNotFound` when the thread does not exist or is not the user's."""
        ...

    async def progress(self, message_id: str, content: str | None) -> bool:
        """Write the answer so far (and the heartbeat); False when a stop was asked for or the message is
        no longer `streaming`."""
        ...

    async def finish(self, message_id: str, end: MessageEnd) -> bool:
        """End the message (only from `streaming`; False when it had already ended)."""
        ...

    async def stop(self, user_id: str, thread_id: str | None, message_id: str | None, stale_seconds: int) -> StopAnswer:
        """Ask the thread's running generation (or that message) to stop. A `streaming` message whose
        instance died (not written for ``stale_seconds``) is marked `stopped` at once.
        :class:`ThreadNotFound` for another user's or an unknown thread or message."""
        ...

    async def aclose(self) -> None: ...

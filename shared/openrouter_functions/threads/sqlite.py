"""Threads in the embedded SQLite file (the ledger's file, its own connection), for local runs.

The same tables and the same four operations as the SQL functions (docs/threads.md), each one
``begin immediate`` transaction: SQLite serializes writers, which is what makes concurrent turns on one
thread refuse each other instead of interleaving. Calls run inline on the event loop like the ledger's:
a few local statements each.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import (
    ERROR_MESSAGE_CHARS,
    MESSAGE_CHARS,
    MESSAGE_STATUSES,
    MessageEnd,
    StopAnswer,
    ThreadBusy,
    ThreadNotFound,
    ThreadStoreUnavailable,
    Turn,
    TurnRequest,
    estimate_tokens,
    title_for,
)

__all__ = ["THREAD_TABLES", "SQLiteThreadStore", "create_thread_tables"]

THREAD_TABLES = ("threads", "messages")

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
_STATUSES = ", ".join(f"'{s}'" for s in MESSAGE_STATUSES)

_SCHEMA = (
    f"""create table if not exists threads (
      id            text primary key,
      user_id       text not null,
      title         text check (length(title) <= 200),
      model         text,
      system_prompt text,
      created_at    text not null default {_NOW},
      updated_at    text not null default {_NOW})""",
    "create index if not exists threads_user_id_updated_at_idx on threads (user_id, updated_at desc)",
    f"""create table if not exists messages (
      id                text primary key,
      thread_id         text not null references threads (id) on delete cascade,
      user_id           text not null,
      seq               integer not null,
      role              text not null check (role in ('user', 'assistant')),
      content           text not null default '' check (length(content) <= {MESSAGE_CHARS}),
      model             text,
      status            text not null default 'complete' check (status in ({_STATUSES})),
      request_id        text,
      prompt_tokens     integer,
      completion_tokens integer,
      total_tokens      integer,
      cost_usd          real,
      generation_id     text,
      finish_reason     text,
      error_type        text,
      error_message     text,
      stop_requested    integer not null default 0,
      created_at        text not null default {_NOW},
      updated_at        text not null default {_NOW},
      unique (thread_id, seq))""",
    "create unique index if not exists messages_streaming_thread_id_idx on messages (thread_id)"
    " where status = 'streaming'",
    "create index if not exists messages_user_id_created_at_idx on messages (user_id, created_at desc)",
)


def create_thread_tables(conn: sqlite3.Connection) -> None:
    """Create the thread tables when missing (they sit beside the ledger's in the same file)."""
    for statement in _SCHEMA:
        conn.execute(statement)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def history_within(
    system: str | None, messages: list[tuple[str, str]], max_messages: int, max_tokens: int
) -> tuple[list[dict[str, str]], int]:
    """The history sent upstream: the system prompt, then the newest ``messages`` (oldest first, the new
    user message last) that fit the budget, starting at a user message; and how many were left out."""
    budget = max_tokens - (estimate_tokens(system) if system else 0)
    kept: list[tuple[str, str]] = []
    used = 0
    for role, content in reversed(messages):
        cost = estimate_tokens(content)
        if kept and (len(kept) + 1 > max_messages or used + cost > budget):
            break
        kept.append((role, content))
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0][0] == "assistant":
        kept.pop(0)
    history = ([{"role": "system", "content": system}] if system else []) + [
        {"role": role, "content": content} for role, content in kept
    ]
    return history, len(messages) - len(kept)


class SQLiteThreadStore:
    """Threads and messages in the SQLite file at ``path``; ``clock`` is ``now()`` (tests move it)."""

    name = "sqlite"

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        if self._closed:  # a late write after the runtime closed (a turn still ending) does not reopen it
            raise ThreadStoreUnavailable("sqlite: the thread store is closed")
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("pragma journal_mode=wal")
                conn.execute("pragma synchronous=normal")
                conn.execute("pragma foreign_keys=on")
                create_thread_tables(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("begin immediate")
            except (sqlite3.Error, OSError) as exc:
                raise ThreadStoreUnavailable(f"sqlite: {exc}") from exc
            try:
                result = fn(conn, *args)
                conn.execute("commit")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("rollback")
                if isinstance(exc, sqlite3.Error | OSError):
                    raise ThreadStoreUnavailable(f"sqlite: {exc}") from exc
                raise
            return result

    def _fail_stale(self, conn: sqlite3.Connection, thread_id: str, stale_seconds: int, now: datetime) -> None:
        before = _timestamp(now - timedelta(seconds=stale_seconds))
        conn.execute(
            "update messages set status = 'failed', error_type = 'interrupted',"
            " error_message = 'the generation stopped without finishing (its instance went away)', updated_at = ?"
            " where thread_id = ? and status = 'streaming' and updated_at < ?",
            (_timestamp(now), thread_id, before),
        )

    async def begin_turn(self, turn: TurnRequest) -> Turn:
        return await self._run(self._begin_turn, turn)  # type: ignore[no-any-return]

    def _begin_turn(self, conn: sqlite3.Connection, turn: TurnRequest) -> Turn:
        now = self._now()
        stamp = _timestamp(now)
        created = turn.thread_id is None
        if created:
            thread_id = str(uuid.uuid4())
            system = turn.system
            conn.execute(
                "insert into threads (id, user_id, title, model, system_prompt, created_at, updated_at)"
                " values (?, ?, ?, ?, ?, ?, ?)",
                (thread_id, turn.user_id, turn.title or title_for(turn.user_text), turn.model, system, stamp, stamp),
            )
        else:
            thread_id = str(turn.thread_id)
            row = conn.execute(
                "select system_prompt from threads where id = ? and user_id = ?", (thread_id, turn.user_id)
            ).fetchone()
            if row is None:
                raise ThreadNotFound()
            system = row[0]
            self._fail_stale(conn, thread_id, turn.stale_seconds, now)
            running = conn.execute(
                "select id from messages where thread_id = ? and status = 'streaming' limit 1", (thread_id,)
            ).fetchone()
            if running is not None:
                raise ThreadBusy(running[0])
        (last,) = conn.execute(
            "select coalesce(max(seq), 0) from messages where thread_id = ?", (thread_id,)
        ).fetchone()
        user_message_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
        conn.execute(
            "insert into messages (id, thread_id, user_id, seq, role, content, status, request_id, created_at,"
            " updated_at) values (?, ?, ?, ?, 'user', ?, 'complete', ?, ?, ?)",
            (user_message_id, thread_id, turn.user_id, last + 1, turn.user_text, turn.request_id, stamp, stamp),
        )
        conn.execute(
            "insert into messages (id, thread_id, user_id, seq, role, content, model, status, request_id,"
            " created_at, updated_at) values (?, ?, ?, ?, 'assistant', '', ?, 'streaming', ?, ?, ?)",
            (message_id, thread_id, turn.user_id, last + 2, turn.model, turn.request_id, stamp, stamp),
        )
        conn.execute("update threads set updated_at = ?, model = ? where id = ?", (stamp, turn.model, thread_id))
        # Newest first, no further back than the budget could reach (each message costs at least 5).
        rows = conn.execute(
            "select role, content from messages where thread_id = ? and seq <= ? and content <> ''"
            " and status in ('complete', 'stopped') order by seq desc limit ?",
            (thread_id, last + 1, max(turn.max_messages, 1) + 1),
        ).fetchall()
        (eligible,) = conn.execute(
            "select count(*) from messages where thread_id = ? and seq <= ? and content <> ''"
            " and status in ('complete', 'stopped')",
            (thread_id, last + 1),
        ).fetchone()
        newest = [(str(role), str(content)) for role, content in reversed(rows)]
        history, dropped_here = history_within(system, newest, turn.max_messages, turn.max_tokens)
        dropped = dropped_here + (eligible - len(newest))
        return Turn(thread_id, user_message_id, message_id, history, dropped, created)

    async def progress(self, message_id: str, content: str | None) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "update messages set content = coalesce(?, content), updated_at = ?"
                " where id = ? and status = 'streaming' returning stop_requested",
                (None if content is None else content[:MESSAGE_CHARS], _timestamp(self._now()), message_id),
            ).fetchone()
            return row is not None and not row[0]

        return await self._run(write)  # type: ignore[no-any-return]

    async def finish(self, message_id: str, end: MessageEnd) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            stamp = _timestamp(self._now())
            row = conn.execute(
                "update messages set status = ?, content = ?, model = coalesce(?, model), prompt_tokens = ?,"
                " completion_tokens = ?, total_tokens = ?, cost_usd = ?, generation_id = ?, finish_reason = ?,"
                " error_type = ?, error_message = ?, updated_at = ? where id = ? and status = 'streaming'"
                " returning thread_id",
                (
                    end.status,
                    end.content[:MESSAGE_CHARS],
                    end.model,
                    end.prompt_tokens,
                    end.completion_tokens,
                    end.total_tokens,
                    end.cost_usd if end.cost_usd is None or math.isfinite(end.cost_usd) else None,
                    end.generation_id,
                    end.finish_reason,
                    end.error_type,
                    end.error_message[:ERROR_MESSAGE_CHARS] if end.error_message else None,
                    stamp,
                    message_id,
                ),
            ).fetchone()
            # The thread was touched when the turn began (as in SQL: touching it here would lock the thread
            # after the message, the reverse of thread_turn_begin's order).
            return row is not None

        return await self._run(write)  # type: ignore[no-any-return]

    async def stop(self, user_id: str, thread_id: str | None, message_id: str | None, stale_seconds: int) -> StopAnswer:
        def write(conn: sqlite3.Connection) -> StopAnswer:
            thread = thread_id
            if thread is None:  # named by its message alone
                found = conn.execute("select thread_id from messages where id = ?", (message_id,)).fetchone()
                if found is None:
                    raise ThreadNotFound()
                thread = str(found[0])
            owned = conn.execute("select 1 from threads where id = ? and user_id = ?", (thread, user_id))
            if owned.fetchone() is None:
                raise ThreadNotFound()
            return self._stop(conn, thread, message_id, stale_seconds)

        return await self._run(write)  # type: ignore[no-any-return]

    def _stop(self, conn: sqlite3.Connection, thread_id: str, message_id: str | None, stale_seconds: int) -> StopAnswer:
        """``thread_stop`` once the thread is known to be the user's."""
        now = self._now()
        if message_id is not None:
            row = conn.execute(
                "select id, status, updated_at from messages where id = ? and thread_id = ? and role = 'assistant'",
                (message_id, thread_id),
            ).fetchone()
            if row is None:
                raise ThreadNotFound()
        else:
            row = conn.execute(
                "select id, status, updated_at from messages where thread_id = ? and role = 'assistant'"
                " order by (status = 'streaming') desc, seq desc limit 1",
                (thread_id,),
            ).fetchone()
            if row is None:
                return StopAnswer(thread_id, None, "idle")
        found, status, updated = row
        if status != "streaming":
            return StopAnswer(thread_id, found, status)
        stamp = _timestamp(now)
        if updated < _timestamp(now - timedelta(seconds=stale_seconds)):  # its instance is gone
            conn.execute(
                "update messages set status = 'stopped', stop_requested = 1, finish_reason = 'stop',"
                " updated_at = ? where id = ?",
                (stamp, found),
            )
            return StopAnswer(thread_id, found, "stopped", True)
        conn.execute("update messages set stop_requested = 1 where id = ?", (found,))
        return StopAnswer(thread_id, found, "streaming", True)

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``threads`` or ``messages`` (tests and local tools)."""
        if table not in THREAD_TABLES:
            raise ValueError(table)

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(f"select * from {table} order by created_at")  # noqa: S608 (a known name)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

        return await self._run(read)  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

"""Threads in Postgres over a direct connection (``DATABASE_URL``, e.g. Supabase's pooler).

Each operation is one autocommit statement calling one SQL function of
``supabase/migrations/20261202070000_threads.sql``, with server-side prepared statements off: safe under
transaction pooling (Supavisor/PgBouncer).

A connection lost with the server drops the pool (psycopg_pool would otherwise hand out the dead ones and
reconnect on its own slow schedule); calls then connect on their own until one succeeds. A call that failed
on a pooled connection is run once more on a fresh one only when running it twice is harmless
(``progress``, ``finish``, ``stop``); a turn's begin is not retried, since it may have been stored already.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from . import MessageEnd, StopAnswer, ThreadStoreUnavailable, Turn, TurnRequest, title_for

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresThreadStore"]

_BEGIN = (
    "select public.thread_turn_begin(%s::uuid, %s::uuid, %s, %s, %s, %s, %s, %s::integer, %s::integer, %s::integer)"
)
_PROGRESS = "select public.thread_message_progress(%s::uuid, %s)"
_FINISH = "select public.thread_message_finish(%s::uuid, %s::jsonb)"
_STOP = "select public.thread_stop(%s::uuid, %s::uuid, %s::uuid, %s::integer)"

_ERASED_USER = "23514"  # thread_turn_begin's refusal for a user deleted in the last day


class PostgresThreadStore:
    """Calls the thread functions over a small connection pool, opened on first use."""

    name = "postgres"

    # Running turns write every THREAD_FLUSH_SECONDS besides their begin and finish: more connections than
    # the ledger's four.
    def __init__(self, dsn: str, *, pool_size: int = 8, connect_timeout: float = 5.0) -> None:
        # connect_timeout bounds reaching the store (libpq's connect, and the wait for a pooled connection).
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = connect_timeout
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()
        self._degraded = False  # a connection was lost: calls connect on their own until one succeeds
        self._own_connections = asyncio.Semaphore(pool_size)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
        if self._closed:  # a late write after the runtime closed (a turn still ending) opens no new pool
            raise ThreadStoreUnavailable("postgres: the thread store is closed")
        async with self._opening:  # two first calls at once must not open two pools
            if self._pool is not None:
                return self._pool
            from psycopg_pool import AsyncConnectionPool

            pool = AsyncConnectionPool(
                self._dsn,
                min_size=0,
                max_size=self._pool_size,
                kwargs={"autocommit": True, "prepare_threshold": None, "connect_timeout": int(self._timeout)},
                timeout=self._timeout,
                reconnect_timeout=self._timeout,
                open=False,
            )
            await pool.open()
            self._pool = pool
        return self._pool

    async def _one(self, function: str, sql: str, params: tuple[Any, ...], *, repeatable: bool) -> Any:
        """The statement's single value; every failure is :class:`ThreadStoreUnavailable`."""
        import psycopg

        try:
            row = await self._execute(sql, params, repeatable=repeatable)
        except psycopg.Error as exc:
            if exc.sqlstate == _ERASED_USER:
                raise ThreadStoreUnavailable(
                    f"postgres {function}: the user was deleted; nothing more is stored for them"
                ) from exc
            raise ThreadStoreUnavailable(f"postgres {function}: {exc.__class__.__name__}: {exc}") from exc
        except OSError as exc:
            raise ThreadStoreUnavailable(f"postgres {function}: {exc.__class__.__name__}: {exc}") from exc
        except Exception as exc:  # pool timeouts and the like
            if exc.__class__.__module__.startswith("psycopg_pool"):
                raise ThreadStoreUnavailable(f"postgres {function}: {exc.__class__.__name__}") from exc
            raise
        return row[0] if row else None

    async def _execute(self, sql: str, params: tuple[Any, ...], *, repeatable: bool) -> Any:
        """The first row: on the pool, or on a connection of its own once one was lost."""
        if not self._degraded:
            pool = await self._get_pool()
            sent = False
            try:
                async with pool.connection() as conn, conn.cursor() as cursor:
                    sent = True
                    await cursor.execute(sql, params)
                    return await cursor.fetchone()
            except Exception as exc:
                if not _lost_connection(exc):
                    raise
                self._drop_pool(pool)
                if sent and not repeatable:
                    raise  # the statement may have run: a second begin would store a second turn
        return await self._execute_alone(sql, params)

    async def _execute_alone(self, sql: str, params: tuple[Any, ...]) -> Any:
        import psycopg

        async with self._own_connections:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, prepare_threshold=None, connect_timeout=int(self._timeout)
            )
            async with conn, conn.cursor() as cursor:
                await cursor.execute(sql, params)
                row = await cursor.fetchone()
        self._degraded = False  # the store answers: the next call opens a fresh pool
        return row

    def _drop_pool(self, pool: AsyncConnectionPool) -> None:
        """Forget ``pool`` (its connections died with the server) and close it in the background."""
        self._degraded = True
        if self._pool is not pool:
            return
        self._pool = None
        task = asyncio.get_running_loop().create_task(pool.close(timeout=1.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def begin_turn(self, turn: TurnRequest) -> Turn:
        new = turn.thread_id is None
        title = (turn.title or title_for(turn.user_text)) if new else None
        answer = await self._one(
            "thread_turn_begin",
            _BEGIN,
            (
                turn.user_id,
                turn.thread_id,
                turn.system if new else None,
                title,
                turn.user_text,
                turn.model,
                turn.request_id,
                turn.max_messages,
                turn.max_tokens,
                turn.stale_seconds,
            ),
            repeatable=False,
        )
        return Turn.from_json(answer)

    async def progress(self, message_id: str, content: str | None) -> bool:
        answer = await self._one("thread_message_progress", _PROGRESS, (message_id, content), repeatable=True)
        if not isinstance(answer, dict):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_message_progress: {answer!r}")
        return bool(answer.get("streaming")) and not answer.get("stop_requested")

    async def finish(self, message_id: str, end: MessageEnd) -> bool:
        answer = await self._one("thread_message_finish", _FINISH, (message_id, json.dumps(end.row())), repeatable=True)
        if not isinstance(answer, bool):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_message_finish: {answer!r}")
        return answer

    async def stop(self, user_id: str, thread_id: str | None, message_id: str | None, stale_seconds: int) -> StopAnswer:
        answer = await self._one("thread_stop", _STOP, (user_id, thread_id, message_id, stale_seconds), repeatable=True)
        return StopAnswer.from_json(answer)

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection (and so likely the server) is gone, not that a statement failed:
    no SQLSTATE, class 08 (connection exception) or 57 (the server shutting down), or a pool that could
    not hand out a connection."""
    import psycopg

    if isinstance(exc, OSError) or exc.__class__.__module__.startswith("psycopg_pool"):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(("08", "57"))
    return False

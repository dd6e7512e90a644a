"""The ledger in Postgres over a direct connection (``DATABASE_URL``, e.g. Supabase's pooler).

Safe under transaction pooling (Supavisor/PgBouncer): every call is one autocommit statement, no
session state, and server-side prepared statements are off.

The connections are a few autocommit connections kept here, not a psycopg_pool: every call is one
statement on one connection, and the general pool's checkout (its lock, a waiting task per queued caller,
the connection's own context) cost more CPU than the statement's own client side.

Recovery after an outage is the store's answer, not a schedule: a lost connection drops every pooled
connection, and until the store answers again each call opens a connection of its own (refused at once
while the server is down, found at once when it is back); the first success lets the pool fill up again.
Both ledger functions are idempotent by request id, so a call whose pooled connection turned out dead is
run once more on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import TYPE_CHECKING, Any

from . import Admission, LedgerRejected, LedgerUnavailable, Limits, UsageRecord

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor

__all__ = ["PostgresLedger"]

_BEGIN = "select public.ledger_begin(%s, %s::uuid, %s::numeric, %s::integer, %s::integer, %s::numeric)"
_FINISH = "select public.ledger_finish(%s, %s::uuid, %s::jsonb)"
_RELEASE_STALE = "select public.ledger_release_stale(%s::uuid, %s::integer)"


class PoolLost(Exception):
    """The pooled connections were dropped (or none freed up in time) while a call waited for one."""


class PostgresLedger:
    """Calls the ledger's SQL functions over a few pooled connections, opened on demand."""

    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        # connect_timeout is how long reaching the store may take (libpq's connect, and the wait for a
        # pooled connection), not a per-call bound (the meter owns that).
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = connect_timeout
        # Each pooled connection is kept with one cursor on it, reused by every call that gets it.
        self._idle: deque[AsyncCursor[Any]] = deque()
        self._waiting: deque[asyncio.Future[AsyncCursor[Any] | None]] = deque()
        self._size = 0  # the pool's connections: idle, in use, or being opened
        self._epoch = 0  # bumped when the pool is dropped: connections from before are closed on return
        self._degraded = False  # a connection was lost: calls connect on their own until one succeeds
        self._own_connections = asyncio.Semaphore(pool_size)  # as many at once as the pool would hold

    async def _connect(self) -> AsyncConnection[Any]:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self._dsn, autocommit=True, prepare_threshold=None, connect_timeout=max(1, int(self._timeout))
        )

    async def _checkout(self) -> AsyncCursor[Any]:
        """A pooled connection's cursor: an idle one, a new one while the pool is smaller than its size, else the
        next one returned (FIFO), waiting at most ``connect_timeout``."""
        if self._idle:
            return self._idle.popleft()
        epoch = self._epoch
        if self._size >= self._pool_size:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[AsyncCursor[Any] | None] = loop.create_future()
            self._waiting.append(waiter)
            timer = loop.call_later(self._timeout, _expire, waiter)
            try:
                cursor = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    # Handed a connection (or a free place) just as this call was cancelled: pass it on.
                    handed = waiter.result()
                    if handed is not None:
                        await self._checkin(handed, epoch)
                    elif epoch == self._epoch:
                        self._size -= 1
                        self._hand_on_place()
                raise
            finally:
                timer.cancel()
            if cursor is not None:
                return cursor
            # A connection was closed and its place handed over: open one in it (the place is counted).
        else:
            self._size += 1
        try:
            return (await self._connect()).cursor()
        except BaseException:
            if epoch == self._epoch:
                self._size -= 1
                self._hand_on_place()
            raise

    async def _checkin(self, cursor: AsyncCursor[Any], epoch: int) -> None:
        """Back to the pool after one statement: to the first caller waiting, else idle. A connection that is
        not idle (broken, or left mid-statement by a cancelled call) or from before a drop is closed."""
        from psycopg.pq import TransactionStatus

        conn = cursor.connection
        if epoch != self._epoch or conn.pgconn.transaction_status != TransactionStatus.IDLE:
            await conn.close()
            if epoch == self._epoch:
                self._size -= 1
                self._hand_on_place()
            return
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(cursor)
                return
        self._idle.append(cursor)

    def _hand_on_place(self) -> None:
        """A place in the pool came free: the first caller waiting opens a connection in it."""
        waiting = self._waiting
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        import psycopg

        try:
            row = await self._execute(sql, params)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:  # this request's values
            raise LedgerRejected(f"postgres: {exc.__class__.__name__}: {exc}") from exc
        except (psycopg.Error, OSError) as exc:
            raise LedgerUnavailable(f"postgres: {exc.__class__.__name__}: {exc}") from exc
        except PoolLost as exc:
            raise LedgerUnavailable(f"postgres: {exc}") from exc
        return row[0] if row else None

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        """The statement's first row: on the pool, or on a connection of its own once one was lost."""
        if not self._degraded:
            epoch = self._epoch
            try:
                cursor = await self._checkout()
                try:
                    await cursor.execute(sql, params, prepare=False)
                    return await cursor.fetchone()
                finally:
                    await self._checkin(cursor, epoch)
            except Exception as exc:
                if not _lost_connection(exc):
                    raise
                self._drop_pool(epoch)
        return await self._execute_alone(sql, params)

    async def _execute_alone(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._own_connections:
            conn = await self._connect()
            async with conn:
                cursor = conn.cursor()
                await cursor.execute(sql, params, prepare=False)
                row = await cursor.fetchone()
        self._degraded = False  # the store answers: the next calls fill the pool again
        return row

    def _drop_pool(self, epoch: int) -> None:
        """Forget the pooled connections of ``epoch`` (they died with the server): close the idle ones, the
        ones in use as they come back, and send the callers waiting for one to connect on their own."""
        self._degraded = True
        if epoch != self._epoch:
            return  # another call dropped it already
        self._epoch += 1
        self._size = 0
        idle, self._idle = self._idle, deque()
        for cursor in idle:
            cursor.connection.pgconn.finish()  # what AsyncConnection.close() does, without a wait
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(PoolLost("the pooled connections were lost"))

    async def begin(self, request_id: str, user_id: str, reserve_usd: float, limits: Limits) -> Admission:
        answer = await self._one(
            _BEGIN, (request_id, user_id, reserve_usd, limits.rpm, limits.daily_requests, limits.daily_cost_usd)
        )
        return Admission.from_json(answer)

    async def finish(self, record: UsageRecord) -> bool:
        answer = await self._one(_FINISH, (record.request_id, record.user_id, json.dumps(record.row())))
        if not isinstance(answer, dict):
            raise LedgerUnavailable(f"unexpected answer from ledger_finish: {answer!r}")
        return bool(answer.get("recorded"))

    async def release_stale(self, user_id: str, older_than_seconds: int) -> int:
        answer = await self._one(_RELEASE_STALE, (user_id, older_than_seconds))
        if not isinstance(answer, int):
            raise LedgerUnavailable(f"unexpected answer from ledger_release_stale: {answer!r}")
        return answer

    async def check(self) -> bool:
        try:
            return bool(await self._one("select 1", ()) == 1)
        except LedgerUnavailable:
            return False

    async def aclose(self) -> None:
        """Close the pooled connections (server shutdown); ones in use are closed as they come back."""
        self._epoch += 1
        self._size = 0
        idle, self._idle = self._idle, deque()
        for cursor in idle:
            await cursor.connection.close()
        waiting, self._waiting = self._waiting, deque()
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(PoolLost("the ledger was closed"))


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(PoolLost("no pooled connection came free in time"))


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection (and so likely the server) is gone, not that a statement failed.

    Errors the server sends carry a SQLSTATE; a connection that broke has none, or class 08 (connection
    exception) or 57 (the server shutting down: ``terminating connection due to administrator command``).
    No pooled connection coming free in time is the same story.
    """
    import psycopg

    if isinstance(exc, (OSError, PoolLost)):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(("08", "57"))
    return False

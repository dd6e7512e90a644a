"""The ledger in Postgres over a direct connection (``DATABASE_URL``, e.g. Supabase's pooler).

Safe under transaction pooling (Supavisor/PgBouncer): every call is one autocommit statement, no
session state, and server-side prepared statements are off.

Recovery after an outage is the store's answer, not the pool's schedule: psycopg_pool reconnects in the
background with a backoff that grows to 32 s, and hands out pooled connections that died with the
server. So a lost connection drops the whole pool, and until the store answers again each call opens a
connection of its own (refused at once while the server is down, found at once when it is back); the
first success starts a fresh pool. Both ledger functions are idempotent by request id, so a call whose
pooled connection turned out dead is run once more on a fresh one.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from . import Admission, LedgerRejected, LedgerUnavailable, Limits, UsageRecord

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresLedger"]

_BEGIN = "select public.ledger_begin(%s, %s::uuid, %s::numeric, %s::integer, %s::integer, %s::numeric)"
_FINISH = "select public.ledger_finish(%s, %s::uuid, %s::jsonb)"
_RELEASE_STALE = "select public.ledger_release_stale(%s::uuid, %s::integer)"


class PostgresLedger:
    """Calls the ledger's SQL functions over a small connection pool, opened on first use."""

    name = "postgres"

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout: float = 5.0) -> None:
        # connect_timeout is how long reaching the store may take (libpq's connect, and the wait for a
        # pooled connection), not a per-call bound (the meter owns that): the pool connects in a worker
        # task that a caller's cancellation does not stop, so only this keeps it from hanging.
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = connect_timeout
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()
        self._degraded = False  # a connection was lost: calls connect on their own until one succeeds
        self._own_connections = asyncio.Semaphore(pool_size)  # as many at once as the pool would hold
        self._closing: set[asyncio.Task[None]] = set()

    async def _get_pool(self) -> AsyncConnectionPool:
        if self._pool is not None:
            return self._pool
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
                # Background reconnection gives up quickly: a call that finds the store gone drops the
                # pool and connects on its own instead (see the module's docstring).
                reconnect_timeout=self._timeout,
                open=False,
            )
            await pool.open()
            self._pool = pool
        return self._pool

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        import psycopg

        try:
            row = await self._execute(sql, params)
        except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:  # this request's values
            raise LedgerRejected(f"postgres: {exc.__class__.__name__}: {exc}") from exc
        except (psycopg.Error, OSError) as exc:
            raise LedgerUnavailable(f"postgres: {exc.__class__.__name__}: {exc}") from exc
        except Exception as exc:  # pool timeouts and the like
            if exc.__class__.__module__.startswith("psycopg_pool"):
                raise LedgerUnavailable(f"postgres: {exc.__class__.__name__}") from exc
            raise
        return row[0] if row else None

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> Any:
        """The statement's first row: on the pool, or on a connection of its own once one was lost."""
        if not self._degraded:
            pool = await self._get_pool()
            try:
                async with pool.connection() as conn, conn.cursor() as cursor:
                    await cursor.execute(sql, params)
                    return await cursor.fetchone()
            except Exception as exc:
                if not _lost_connection(exc):
                    raise
                self._drop_pool(pool)
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
            return  # another call dropped it already
        self._pool = None
        task = asyncio.get_running_loop().create_task(pool.close(timeout=1.0))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _lost_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection (and so likely the server) is gone, not that a statement failed.

    Errors the server sends carry a SQLSTATE; a connection that broke has none, or class 08 (connection
    exception) or 57 (the server shutting down: ``terminating connection due to administrator command``).
    A pool that could not hand out a connection in time is the same story.
    """
    import psycopg

    if isinstance(exc, OSError) or exc.__class__.__module__.startswith("psycopg_pool"):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(("08", "57"))
    return False

"""The ledger in Postgres over a direct connection (``DATABASE_URL``, e.g. Supabase's pooler).

Safe under transaction pooling (Supavisor/PgBouncer): every call is one autocommit statement, no
session state, and server-side prepared statements are off.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from . import Admission, LedgerUnavailable, Limits, UsageRecord

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresLedger"]

_BEGIN = "select public.ledger_begin(%s, %s::uuid, %s::numeric, %s::integer, %s::integer, %s::numeric)"
_FINISH = "select public.ledger_finish(%s, %s::uuid, %s::jsonb)"


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
                open=False,
            )
            await pool.open()
            self._pool = pool
        return self._pool

    async def _one(self, sql: str, params: tuple[Any, ...]) -> Any:
        import psycopg

        try:
            pool = await self._get_pool()
            async with pool.connection() as conn, conn.cursor() as cursor:
                await cursor.execute(sql, params)
                row = await cursor.fetchone()
        except (psycopg.Error, OSError) as exc:
            raise LedgerUnavailable(f"postgres: {exc.__class__.__name__}: {exc}") from exc
        except Exception as exc:  # pool timeouts and the like
            if exc.__class__.__module__.startswith("psycopg_pool"):
                raise LedgerUnavailable(f"postgres: {exc.__class__.__name__}") from exc
            raise
        return row[0] if row else None

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

    async def check(self) -> bool:
        try:
            return bool(await self._one("select 1", ()) == 1)
        except LedgerUnavailable:
            return False

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

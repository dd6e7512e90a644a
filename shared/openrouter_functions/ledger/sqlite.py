"""The embedded ledger: SQLite, for local runs. Same contract and semantics as the SQL functions.

``BEGIN IMMEDIATE`` takes SQLite's write lock before reading, which makes each begin/finish atomic
across threads and processes sharing the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import Admission, LedgerUnavailable, Limits, UsageRecord

__all__ = ["SQLiteLedger"]

STALE_RESERVATION_SECONDS = 15 * 60

_SCHEMA = """
create table if not exists request_log (
  request_id text primary key, user_id text not null, function text not null, model text,
  status integer not null, error_type text, outcome text, latency_ms real, attempts integer,
  prompt_tokens integer, completion_tokens integer, total_tokens integer, cost_usd real,
  generation_id text, prompt_preview text, response_preview text,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
create index if not exists request_log_user_created on request_log (user_id, created_at desc);
create table if not exists usage_daily (
  user_id text not null, day text not null, requests integer not null default 0,
  prompt_tokens integer not null default 0, completion_tokens integer not null default 0,
  cost_usd real not null default 0, reserved_usd real not null default 0, in_flight integer not null default 0,
  primary key (user_id, day));
create table if not exists user_limits (
  user_id text primary key, rpm integer, daily_requests integer, daily_cost_usd real, updated_at text);
create table if not exists rate_windows (
  user_id text not null, window_start integer not null, count integer not null default 0,
  primary key (user_id, window_start));
create table if not exists ledger_reservations (
  request_id text primary key, user_id text not null, day text not null, reserved_usd real not null,
  created_at real not null);
"""

_ROW_KEYS = (
    "function",
    "model",
    "status",
    "error_type",
    "outcome",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "generation_id",
    "prompt_preview",
    "response_preview",
)


class SQLiteLedger:
    """Ledger in one SQLite file, for local runs.

    Calls run inline on the event loop: each is a few local statements (~0.3 ms), and handing them to a
    worker thread cost more CPU than the work itself on our machines. The lock keeps the connection
    safe if the ledger is ever shared across threads.
    """

    name = "sqlite"

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def locked() -> Any:
            with self._lock:
                conn = self._connection()
                conn.execute("begin immediate")
                try:
                    result = fn(conn, *args)
                except BaseException:
                    conn.execute("rollback")
                    raise
                conn.execute("commit")
                return result

        try:
            return locked()
        except (sqlite3.Error, OSError) as exc:
            raise LedgerUnavailable(f"sqlite: {exc}") from exc

    # -- begin --------------------------------------------------------------------------------------

    async def begin(
        self, request_id: str, user_id: str, function: str, model: str | None, reserve_usd: float, limits: Limits
    ) -> Admission:
        result: Admission = await self._run(self._begin, request_id, user_id, max(0.0, reserve_usd), limits)
        return result

    def _begin(
        self, conn: sqlite3.Connection, request_id: str, user_id: str, reserve: float, defaults: Limits
    ) -> Admission:
        now = self._clock()
        moment = datetime.fromtimestamp(now, UTC)
        day = moment.date().isoformat()
        existing = conn.execute(
            "select reserved_usd from ledger_reservations where request_id = ?", (request_id,)
        ).fetchone()
        if existing is not None:
            return Admission(True, reserved_usd=existing[0])
        self._release_stale(conn, user_id, now)
        row = conn.execute(
            "select rpm, daily_requests, daily_cost_usd from user_limits where user_id = ?", (user_id,)
        ).fetchone()
        rpm = row[0] if row and row[0] is not None else defaults.rpm
        daily_requests = row[1] if row and row[1] is not None else defaults.daily_requests
        daily_cost = row[2] if row and row[2] is not None else defaults.daily_cost_usd
        conn.execute("insert or ignore into usage_daily (user_id, day) values (?, ?)", (user_id, day))
        requests, cost, reserved, in_flight = conn.execute(
            "select requests, cost_usd, reserved_usd, in_flight from usage_daily where user_id = ? and day = ?",
            (user_id, day),
        ).fetchone()
        window = int(now // 60) * 60
        if rpm is not None:
            count = conn.execute(
                "select count from rate_windows where user_id = ? and window_start = ?", (user_id, window)
            ).fetchone()
            if (count[0] if count else 0) >= rpm:
                return Admission(False, "rate_limited", "rpm", max(1, int(window + 60 - now + 0.999)))
        to_midnight = max(
            1,
            int(
                (datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC) - moment).total_seconds()
                + 0.999
            ),
        )
        if daily_requests is not None and requests + in_flight >= daily_requests:
            return Admission(False, "quota_exceeded", "daily_requests", to_midnight)
        if daily_cost is not None and cost + reserved + reserve > daily_cost + 1e-12:
            return Admission(False, "quota_exceeded", "daily_cost_usd", to_midnight)
        conn.execute(
            "insert into rate_windows (user_id, window_start, count) values (?, ?, 1) "
            "on conflict (user_id, window_start) do update set count = count + 1",
            (user_id, window),
        )
        conn.execute("delete from rate_windows where user_id = ? and window_start < ?", (user_id, window - 120))
        conn.execute(
            "update usage_daily set in_flight = in_flight + 1, reserved_usd = reserved_usd + ? "
            "where user_id = ? and day = ?",
            (reserve, user_id, day),
        )
        conn.execute(
            "insert into ledger_reservations (request_id, user_id, day, reserved_usd, created_at) "
            "values (?, ?, ?, ?, ?)",
            (request_id, user_id, day, reserve, now),
        )
        return Admission(True, reserved_usd=reserve)

    def _release_stale(self, conn: sqlite3.Connection, user_id: str, now: float) -> None:
        stale = conn.execute(
            "select request_id, day, reserved_usd from ledger_reservations where user_id = ? and created_at < ?",
            (user_id, now - STALE_RESERVATION_SECONDS),
        ).fetchall()
        for request_id, day, amount in stale:
            conn.execute(
                "update usage_daily set in_flight = max(in_flight - 1, 0), reserved_usd = max(reserved_usd - ?, 0) "
                "where user_id = ? and day = ?",
                (amount, user_id, day),
            )
            conn.execute("delete from ledger_reservations where request_id = ?", (request_id,))

    # -- finish -------------------------------------------------------------------------------------

    async def finish(self, record: UsageRecord) -> bool:
        recorded: bool = await self._run(self._finish, record)
        return recorded

    def _finish(self, conn: sqlite3.Connection, record: UsageRecord) -> bool:
        row = record.row()
        values = [row.get(key) for key in _ROW_KEYS]
        cursor = conn.execute(
            f"insert or ignore into request_log (request_id, user_id, {', '.join(_ROW_KEYS)}) "  # noqa: S608
            f"values (?, ?, {', '.join('?' for _ in _ROW_KEYS)})",
            (record.request_id, record.user_id, *values),
        )
        if cursor.rowcount == 0:
            return False
        reservation = conn.execute(
            "select day, reserved_usd from ledger_reservations where request_id = ? and user_id = ?",
            (record.request_id, record.user_id),
        ).fetchone()
        if reservation is not None:
            day, amount = reservation
            conn.execute("delete from ledger_reservations where request_id = ?", (record.request_id,))
            released = 1
        elif record.admitted:
            # It ran but its reservation is gone (outlived the stale sweep, or the ledger was down at begin).
            day, amount, released = datetime.fromtimestamp(self._clock(), UTC).date().isoformat(), 0.0, 0
            conn.execute("insert or ignore into usage_daily (user_id, day) values (?, ?)", (record.user_id, day))
        else:
            return True
        conn.execute(
            "update usage_daily set requests = requests + 1, prompt_tokens = prompt_tokens + ?, "
            "completion_tokens = completion_tokens + ?, cost_usd = round(cost_usd + ?, 8), "
            "reserved_usd = max(round(reserved_usd - ?, 8), 0), in_flight = max(in_flight - ?, 0) "
            "where user_id = ? and day = ?",
            (
                record.prompt_tokens or 0,
                record.completion_tokens or 0,
                record.cost_usd or 0.0,
                amount,
                released,
                record.user_id,
                day,
            ),
        )
        return True

    async def check(self) -> bool:
        try:
            await self._run(lambda conn: conn.execute("select 1").fetchone())
        except LedgerUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading (tests, local tools) ---------------------------------------------------------------

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one ledger table, as dicts."""
        if table not in ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations"):
            raise ValueError(table)

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(f"select * from {table}")  # noqa: S608 - table name checked above
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

        result: list[dict[str, Any]] = await self._run(read)
        return result

    async def set_limits(self, user_id: str, limits: Limits) -> None:
        """Per-user limits (what an operator would edit in the ``user_limits`` table)."""
        await self._run(
            lambda conn: conn.execute(
                "insert into user_limits (user_id, rpm, daily_requests, daily_cost_usd, updated_at) "
                "values (?, ?, ?, ?, ?) "
                "on conflict (user_id) do update set rpm = excluded.rpm, daily_requests = excluded.daily_requests, "
                "daily_cost_usd = excluded.daily_cost_usd, updated_at = excluded.updated_at",
                (user_id, limits.rpm, limits.daily_requests, limits.daily_cost_usd, json.dumps(self._clock())),
            )
        )

"""The ledger contract (docs/ledger.md), each rule tested once against every backend.

* ``sqlite``: :class:`SQLiteLedger` on a file of its own;
* ``postgres``: :class:`PostgresLedger` on the throwaway PostgreSQL with the real migrations;
* ``supabase_rest``: :class:`SupabaseRestLedger` whose HTTP client reaches a PostgREST stand-in
  (``postgrest_stand_in.py``) that runs the same SQL functions on that PostgreSQL as ``service_role``.

A :class:`Store` does what the tests need behind the ledger's back, with SQL on the backend's own
tables: set a user's limits, read usage, age reservations. The two PostgreSQL backends share one.
Each test uses fresh user ids, so they share the session's cluster without interfering.

Time is the stores' own clock (Postgres' ``now()``, on this machine), so a retry-after is checked
against the whole seconds left just before and just after the call; ``steady_clock`` keeps every test
away from the end of a minute (and of a UTC day), so its calls fall in one rpm window and one day.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sqlite3
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from helpers import mint
from openrouter_functions.ledger import Admission, Ledger, LedgerRejected, LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.postgres import PostgresLedger
from openrouter_functions.ledger.rest import SupabaseRestLedger
from openrouter_functions.ledger.sqlite import SQLiteLedger
from pgcluster import PgCluster
from postgrest_stand_in import PostgrestStandIn

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
SERVICE_ROLE_KEY = mint(
    role="service_role", sub=None, aud=None, email=None, is_anonymous=None, iss="supabase", exp=None
)
PARALLEL = 20


@dataclass(frozen=True)
class Usage:
    """One ``usage_daily`` row."""

    day: str
    requests: int = 0
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    reserved_usd: Decimal = Decimal(0)


def money(value: Any) -> Decimal | None:
    """A stored amount, compared exactly: Postgres gives Decimal, SQLite a float (its shortest repr)."""
    return None if value is None else Decimal(str(value))


class Store(ABC):
    """The tables behind one backend, read and changed with SQL (``?`` placeholders, no schema prefix)."""

    ledger: Ledger

    # Make every reservation of a user ``?`` minutes older; move a user's usage rows and reservations
    # ``?`` days back (as if admitted earlier).
    AGE: str
    SHIFT_USAGE: str
    SHIFT_RESERVATIONS: str

    @abstractmethod
    async def fetch(self, query: str, *params: Any) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    async def execute(self, query: str, *params: Any) -> None: ...

    async def set_limits(self, user_id: str, limits: Limits) -> None:
        await self.execute(
            "insert into user_limits (user_id, rpm, daily_requests, daily_cost_usd) values (?, ?, ?, ?)",
            user_id,
            limits.rpm,
            limits.daily_requests,
            limits.daily_cost_usd,
        )

    async def usage(self, user_id: str) -> list[Usage]:
        rows = await self.fetch(
            "select day, requests, in_flight, prompt_tokens, completion_tokens, total_tokens, cost_usd, reserved_usd"
            " from usage_daily where user_id = ? order by day",
            user_id,
        )
        return [
            Usage(str(day), requests, in_flight, prompt, completion, total, Decimal(str(cost)), Decimal(str(reserved)))
            for day, requests, in_flight, prompt, completion, total, cost, reserved in rows
        ]

    async def reservations(self, user_id: str) -> list[tuple[str, str, Decimal | None]]:
        rows = await self.fetch(
            "select request_id, day, amount_usd from ledger_reservations where user_id = ? order by request_id",
            user_id,
        )
        return [(request_id, str(day), money(amount)) for request_id, day, amount in rows]

    async def admission(self, request_id: str) -> Any:
        """The admission a reservation keeps (for a repeated begin)."""
        [(stored,)] = await self.fetch("select admission from ledger_reservations where request_id = ?", request_id)
        return json.loads(stored) if isinstance(stored, str) else stored

    async def log(self, user_id: str) -> list[dict[str, Any]]:
        columns = (
            "request_id, function, model, status, error_type, outcome, latency_ms, attempts, prompt_tokens,"
            " completion_tokens, total_tokens, cost_usd, generation_id, prompt_preview, response_preview"
        )
        rows = await self.fetch(f"select {columns} from request_log where user_id = ? order by request_id", user_id)
        logged = [dict(zip(columns.replace(" ", "").split(","), row, strict=True)) for row in rows]
        return [{**row, "cost_usd": money(row["cost_usd"])} for row in logged]

    async def window(self, user_id: str) -> int | None:
        rows = await self.fetch("select requests from rate_windows where user_id = ?", user_id)
        return rows[0][0] if rows else None

    async def age_reservations(self, user_id: str, minutes: int) -> None:
        await self.execute(self.AGE, minutes, user_id)

    async def shift_days(self, user_id: str, days: int) -> None:
        await self.execute(self.SHIFT_USAGE, days, user_id)
        await self.execute(self.SHIFT_RESERVATIONS, days, user_id)


class SQLiteStore(Store):
    AGE = "update ledger_reservations set created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, -? || ' minutes') where user_id = ?"
    SHIFT_USAGE = "update usage_daily set day = date(day, -? || ' days') where user_id = ?"
    SHIFT_RESERVATIONS = "update ledger_reservations set day = date(day, -? || ' days') where user_id = ?"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ledger = SQLiteLedger(path)

    async def fetch(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(query, params).fetchall()

    async def execute(self, query: str, *params: Any) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:  # the inner `conn` commits
            conn.execute(query, params)


class PostgresStore(Store):
    AGE = "update ledger_reservations set created_at = created_at - make_interval(mins => ?) where user_id = ?"
    SHIFT_USAGE = "update usage_daily set day = day - ?::integer where user_id = ?"
    SHIFT_RESERVATIONS = "update ledger_reservations set day = day - ?::integer where user_id = ?"

    def __init__(self, ledger: Ledger, conn: psycopg.AsyncConnection[Any]) -> None:
        self.ledger = ledger
        self.conn = conn

    async def fetch(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return await (await self.conn.execute(query.replace("?", "%s"), params)).fetchall()

    async def execute(self, query: str, *params: Any) -> None:
        await self.conn.execute(query.replace("?", "%s"), params)


@pytest.fixture(params=["sqlite", "postgres", "supabase_rest"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with contextlib.AsyncExitStack() as cleanup:
        if request.param == "sqlite":
            sqlite_store = SQLiteStore(tmp_path / "ledger.sqlite3")
            cleanup.push_async_callback(sqlite_store.ledger.aclose)
            await sqlite_store.ledger.check()  # creates the tables the store's SQL reads
            yield sqlite_store
            return
        pg: PgCluster = request.getfixturevalue("pg")  # skips without PostgreSQL, as every DB test does
        conn = await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True)
        cleanup.push_async_callback(conn.close)
        ledger: Ledger
        if request.param == "postgres":
            ledger = PostgresLedger(pg.dsn, pool_size=PARALLEL)
        else:
            stand_in = PostgrestStandIn(pg.dsn, connections=PARALLEL)
            await stand_in.open()
            cleanup.push_async_callback(stand_in.aclose)
            client = httpx.AsyncClient(transport=httpx.MockTransport(stand_in.handler))
            cleanup.push_async_callback(client.aclose)
            ledger = SupabaseRestLedger(SUPABASE_URL, SERVICE_ROLE_KEY, http_client=client)
        cleanup.push_async_callback(ledger.aclose)
        yield PostgresStore(ledger, conn)


@pytest.fixture(autouse=True)
async def steady_clock() -> None:
    """Wait out the last seconds of a minute, so a test's calls fall in one rpm window and one UTC day."""
    second = time.time() % 60
    if second > 55:
        await asyncio.sleep(60.2 - second)


@dataclass(frozen=True)
class User:
    """A fresh user; ``request(name)`` is an id of theirs, unique in the database the tests share."""

    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def request(self, name: str) -> str:
        return f"{name}-{self.id}"


def today(days: int = 0) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


async def timed(call: Awaitable[Admission], until: Callable[[datetime], datetime]) -> tuple[Admission, set[int]]:
    """The answer, and the retry-after it may carry: the whole seconds from the call to ``until(now)``."""
    before = datetime.now(UTC)
    answer = await call
    after = datetime.now(UTC)
    return answer, {max(1, math.ceil((until(moment) - moment).total_seconds())) for moment in (before, after)}


def minute_end(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def utc_midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC)


def finished(request_id: str, user_id: str, **fields: Any) -> UsageRecord:
    """The record the functions send for a request that ran, unless ``fields`` say otherwise."""
    values: dict[str, Any] = {
        "function": "chat",
        "model": "test/model",
        "attempts": 1,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.002,
        "admitted": True,
        **fields,
    }
    return UsageRecord(request_id, user_id, **values)


def settled(cost_usd: str, *, in_flight: int = 0, reserved_usd: str = "0", day: str | None = None) -> Usage:
    """A day's usage once one request from ``finished()`` (10 + 5 tokens) has settled there at ``cost_usd``."""
    return Usage(
        day or today(),
        requests=1,
        in_flight=in_flight,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cost_usd=Decimal(cost_usd),
        reserved_usd=Decimal(reserved_usd),
    )


def refused(retry_after: int, limit: str) -> Admission:
    reason = "rate_limited" if limit == "rpm" else "quota_exceeded"
    return Admission(False, reason, limit, retry_after)


# -- admission ---------------------------------------------------------------------------------------


async def test_a_request_within_every_limit_is_admitted_and_reserves_its_cost(store: Store) -> None:
    user = User()

    admission = await store.ledger.begin(
        user.request("r1"), user.id, 0.01, Limits(rpm=60, daily_requests=100, daily_cost_usd=1.0)
    )

    assert admission == Admission(True, reserved_usd=0.01)
    assert await store.usage(user.id) == [Usage(today(), in_flight=1, reserved_usd=Decimal("0.01"))]
    assert await store.reservations(user.id) == [(user.request("r1"), today(), Decimal("0.01"))]
    assert await store.window(user.id) == 1
    assert await store.admission(user.request("r1")) == {
        "admitted": True,
        "day": today(),
        "reserved_usd": 0.01,
        "limits": {"rpm": 60, "daily_requests": 100, "daily_cost_usd": 1.0},
    }


async def test_rpm_refuses_until_the_minute_window_ends(store: Store) -> None:
    user, limits = User(), Limits(rpm=2)
    assert (await store.ledger.begin(user.request("a"), user.id, 0.01, limits)).admitted
    assert (await store.ledger.begin(user.request("b"), user.id, 0.01, limits)).admitted

    answer, retry_after = await timed(store.ledger.begin(user.request("c"), user.id, 0.01, limits), minute_end)

    assert answer in {refused(seconds, "rpm") for seconds in retry_after}
    assert await store.window(user.id) == 2  # a refused request does not count in the window
    assert await store.usage(user.id) == [Usage(today(), in_flight=2, reserved_usd=Decimal("0.02"))]


async def test_the_daily_request_quota_counts_requests_in_flight(store: Store) -> None:
    user, limits = User(), Limits(daily_requests=2)
    assert (await store.ledger.begin(user.request("done"), user.id, 0, limits)).admitted
    assert await store.ledger.finish(finished(user.request("done"), user.id))
    assert (await store.ledger.begin(user.request("running"), user.id, 0, limits)).admitted

    answer, retry_after = await timed(store.ledger.begin(user.request("third"), user.id, 0, limits), utc_midnight)

    assert answer in {refused(seconds, "daily_requests") for seconds in retry_after}
    assert [(u.requests, u.in_flight) for u in await store.usage(user.id)] == [(1, 1)]


async def test_the_daily_cost_quota_counts_spent_reserved_and_this_reservation(store: Store) -> None:
    user, limits = User(), Limits(daily_cost_usd=0.05)
    assert (await store.ledger.begin(user.request("u1"), user.id, 0.02, limits)).admitted
    assert await store.ledger.finish(finished(user.request("u1"), user.id, cost_usd=0.03))

    # spent 0.03 + reserved 0 + 0.02 reaches the limit without passing it
    assert await store.ledger.begin(user.request("u2"), user.id, 0.02, limits) == Admission(True, reserved_usd=0.02)
    # spent 0.03 + reserved 0.02 + 0.01 would pass it
    answer, retry_after = await timed(store.ledger.begin(user.request("u3"), user.id, 0.01, limits), utc_midnight)
    assert answer in {refused(seconds, "daily_cost_usd") for seconds in retry_after}
    # a free request still fits
    assert await store.ledger.begin(user.request("u4"), user.id, 0, limits) == Admission(True, reserved_usd=0.0)

    assert await store.usage(user.id) == [settled("0.03", in_flight=2, reserved_usd="0.02")]


async def test_a_users_own_limits_beat_the_defaults(store: Store) -> None:
    user, defaults = User(), Limits(rpm=60, daily_requests=100, daily_cost_usd=1.0)
    await store.set_limits(user.id, Limits(rpm=1, daily_requests=None, daily_cost_usd=0.5))

    assert (await store.ledger.begin(user.request("first"), user.id, 0.01, defaults)).admitted
    second = await store.ledger.begin(user.request("second"), user.id, 0.01, defaults)

    assert (second.admitted, second.limit) == (False, "rpm")  # the user's rpm 1, not the default 60
    # A null override falls back to the default.
    assert (await store.admission(user.request("first")))["limits"] == {
        "rpm": 1,
        "daily_requests": 100,
        "daily_cost_usd": 0.5,
    }

    capped = User()
    await store.set_limits(capped.id, Limits(daily_requests=0))
    answer = await store.ledger.begin(capped.request("capped"), capped.id, 0, Limits())
    assert (answer.admitted, answer.limit) == (False, "daily_requests")  # even with no default at all


async def test_users_have_separate_limits(store: Store) -> None:
    alice, bob, limits = User(), User(), Limits(rpm=1, daily_requests=1)
    assert (await store.ledger.begin(alice.request("first"), alice.id, 0, limits)).admitted
    assert not (await store.ledger.begin(alice.request("second"), alice.id, 0, limits)).admitted

    assert (await store.ledger.begin(bob.request("first"), bob.id, 0, limits)).admitted
    assert [u.in_flight for u in await store.usage(alice.id)] == [1]
    assert [u.in_flight for u in await store.usage(bob.id)] == [1]


async def test_a_repeated_begin_returns_the_first_admission_and_reserves_nothing_more(store: Store) -> None:
    user, limits = User(), Limits(rpm=1)
    first = await store.ledger.begin(user.request("r1"), user.id, 0.02, limits)

    # rpm 1 is used up, yet the retried call gets its admission back
    again = await store.ledger.begin(user.request("r1"), user.id, 0.02, limits)

    assert again == first == Admission(True, reserved_usd=0.02)
    assert await store.usage(user.id) == [Usage(today(), in_flight=1, reserved_usd=Decimal("0.02"))]
    assert await store.reservations(user.id) == [(user.request("r1"), today(), Decimal("0.02"))]
    assert await store.window(user.id) == 1


async def test_a_negative_reservation_is_an_error_of_the_store(store: Store) -> None:
    user = User()
    with pytest.raises(LedgerUnavailable):
        await store.ledger.begin(user.request("negative"), user.id, -0.01, Limits())
    assert await store.usage(user.id) == []  # nothing written: the whole call failed
    assert await store.reservations(user.id) == []


# -- finish ------------------------------------------------------------------------------------------


async def test_finish_logs_the_request_settles_reported_usage_and_releases_the_reservation(store: Store) -> None:
    user = User()
    await store.ledger.begin(user.request("r1"), user.id, 0.01, Limits())
    record = finished(
        user.request("r1"),
        user.id,
        status=200,
        outcome="ok",
        latency_ms=812.6,
        attempts=2,
        cost_usd=0.0042,
        generation_id="gen-1",
        prompt_preview="p" * 600,
        response_preview="Hi!",
    )

    assert await store.ledger.finish(record) is True

    assert await store.usage(user.id) == [settled("0.0042")]
    assert await store.reservations(user.id) == []
    assert await store.log(user.id) == [
        {
            "request_id": user.request("r1"),
            "function": "chat",
            "model": "test/model",
            "status": 200,
            "error_type": None,
            "outcome": "ok",
            "latency_ms": 813,  # whole milliseconds, rounded
            "attempts": 2,
            "prompt_tokens": 10,
            "completion_tokens": 5,
            "total_tokens": 15,
            "cost_usd": Decimal("0.0042"),
            "generation_id": "gen-1",
            "prompt_preview": "p" * 512,  # cut, not refused
            "response_preview": "Hi!",
        }
    ]


async def test_a_duplicate_finish_returns_false_and_settles_nothing(store: Store) -> None:
    user = User()
    await store.ledger.begin(user.request("r1"), user.id, 0.05, Limits())
    assert await store.ledger.finish(finished(user.request("r1"), user.id, cost_usd=0.01)) is True

    assert await store.ledger.finish(finished(user.request("r1"), user.id, cost_usd=0.99, status=500)) is False

    assert await store.usage(user.id) == [settled("0.01")]  # as the first finish left it
    assert [(row["status"], row["cost_usd"]) for row in await store.log(user.id)] == [(200, Decimal("0.01"))]


async def test_a_refused_requests_finish_writes_only_its_log_row(store: Store) -> None:
    user = User()
    assert not (await store.ledger.begin(user.request("r1"), user.id, 0.01, Limits(daily_requests=0))).admitted

    record = finished(
        user.request("r1"), user.id, status=429, error_type="quota_exceeded", outcome="refused", admitted=False
    )
    assert await store.ledger.finish(record) is True

    assert [(row["request_id"], row["status"]) for row in await store.log(user.id)] == [(user.request("r1"), 429)]
    assert await store.usage(user.id) == [Usage(today())]  # begin's row, untouched
    assert await store.reservations(user.id) == []


async def test_a_request_that_ran_without_a_reservation_is_still_counted_today(store: Store) -> None:
    """Served while begin was failing (LEDGER_FAILURE_MODE=open): no begin, but the finish says it ran."""
    user = User()

    assert await store.ledger.finish(finished(user.request("r1"), user.id, cost_usd=0.004)) is True

    assert await store.usage(user.id) == [settled("0.004")]


async def test_a_request_settles_on_the_day_it_was_admitted(store: Store) -> None:
    user = User()
    await store.ledger.begin(user.request("late"), user.id, 0.01, Limits())
    await store.shift_days(user.id, 1)  # admitted yesterday, finishing after midnight

    assert await store.ledger.finish(finished(user.request("late"), user.id, cost_usd=0.004))

    assert await store.usage(user.id) == [settled("0.004", day=today(-1))]


# -- stale reservations ------------------------------------------------------------------------------


async def test_reservations_older_than_15_minutes_are_released_by_the_next_begin(store: Store) -> None:
    user, limits = User(), Limits(daily_requests=1)
    assert (await store.ledger.begin(user.request("lost"), user.id, 0.03, limits)).admitted

    await store.age_reservations(user.id, 14)
    early = await store.ledger.begin(user.request("early"), user.id, 0.01, limits)
    assert not early.admitted  # still held at 14 minutes

    await store.age_reservations(user.id, 2)  # 16 minutes: its instance died between begin and finish
    assert (await store.ledger.begin(user.request("next"), user.id, 0.01, limits)).admitted

    assert await store.reservations(user.id) == [(user.request("next"), today(), Decimal("0.01"))]
    assert await store.usage(user.id) == [Usage(today(), in_flight=1, reserved_usd=Decimal("0.01"))]

    # The lost request did run after all (a stream longer than the sweep): it is counted on finishing.
    assert await store.ledger.finish(finished(user.request("lost"), user.id, cost_usd=0.02))
    assert await store.usage(user.id) == [settled("0.02", in_flight=1, reserved_usd="0.01")]


async def test_a_begin_repeated_after_its_reservation_went_stale_is_admitted_afresh(store: Store) -> None:
    user, limits = User(), Limits(daily_requests=5)
    assert (await store.ledger.begin(user.request("r"), user.id, 0.03, limits)).admitted
    await store.age_reservations(user.id, 16)  # released by the sweep of the next begin: this one

    assert await store.ledger.begin(user.request("r"), user.id, 0.01, limits) == Admission(True, reserved_usd=0.01)
    assert await store.reservations(user.id) == [(user.request("r"), today(), Decimal("0.01"))]
    assert await store.usage(user.id) == [Usage(today(), in_flight=1, reserved_usd=Decimal("0.01"))]


async def test_release_stale_frees_only_reservations_older_than_asked(store: Store) -> None:
    """What a refused user gets back when a crashed instance holds part of its quota (Meter)."""
    user, other, limits = User(), User(), Limits(daily_requests=2)
    assert (await store.ledger.begin(user.request("dead"), user.id, 0.03, limits)).admitted
    assert (await store.ledger.begin(other.request("dead"), other.id, 0.03, limits)).admitted
    await store.age_reservations(user.id, 6)
    await store.age_reservations(other.id, 6)
    assert (await store.ledger.begin(user.request("live"), user.id, 0.01, limits)).admitted

    assert await store.ledger.release_stale(user.id, 600) == 0  # 6 minutes is younger than 10
    assert await store.ledger.release_stale(user.id, 300) == 1
    assert await store.ledger.release_stale(user.id, 300) == 0  # already released

    assert await store.reservations(user.id) == [(user.request("live"), today(), Decimal("0.01"))]
    assert await store.usage(user.id) == [Usage(today(), in_flight=1, reserved_usd=Decimal("0.01"))]
    assert len(await store.reservations(other.id)) == 1, "another user's reservations are not touched"
    assert (await store.ledger.begin(user.request("next"), user.id, 0.01, limits)).admitted


async def test_release_stale_refuses_a_negative_age(store: Store) -> None:
    with pytest.raises(LedgerUnavailable):
        await store.ledger.release_stale(User().id, -1)


# -- concurrency -------------------------------------------------------------------------------------


async def test_parallel_begins_for_one_user_admit_exactly_the_daily_quota(store: Store) -> None:
    user, limits = User(), Limits(daily_requests=7)

    answers: Sequence[Admission] = await asyncio.wait_for(
        asyncio.gather(*(store.ledger.begin(user.request(f"p{i}"), user.id, 0.01, limits) for i in range(PARALLEL))), 30
    )

    assert sum(answer.admitted for answer in answers) == 7
    assert {(a.reason, a.limit) for a in answers if not a.admitted} == {("quota_exceeded", "daily_requests")}
    assert await store.usage(user.id) == [Usage(today(), in_flight=7, reserved_usd=Decimal("0.07"))]
    assert len(await store.reservations(user.id)) == 7


async def test_check_answers_when_the_store_is_up(store: Store) -> None:
    assert await store.ledger.check() is True


# -- a value the store cannot hold -----------------------------------------------------------------
# Each backend raises LedgerRejected (not a plain outage, which would open the meter's breaker for every
# user), writes nothing of the refused record, and goes on answering everyone else. The edge refuses such
# text and the exchange drops absurd usage first; these records reach the store directly, as a bug or a
# new field could make them.


@pytest.mark.parametrize(
    ("fields", "sqlite_holds_it"),
    [
        ({"model": "openai/gpt-4o\ud800"}, False),  # a lone surrogate: no UTF-8, no jsonb
        ({"completion_tokens": 10**20}, False),  # beyond an integer column
        ({"model": "openai/\x00gpt-4o"}, True),  # NUL: PostgreSQL text refuses it, SQLite keeps it
        ({"error_type": "bad\x00"}, True),
        ({"cost_usd": float("nan")}, True),  # not JSON for Postgres; SQLite stores NaN as NULL
    ],
    ids=["surrogate", "huge-tokens", "nul-model", "nul-error-type", "nan-cost"],
)
async def test_a_value_the_store_cannot_hold_is_rejected_and_the_store_goes_on(
    store: Store,
    fields: dict[str, Any],
    sqlite_holds_it: bool,
) -> None:
    user = User()
    await store.ledger.begin(user.request("bad"), user.id, 0.01, Limits())
    await store.ledger.begin(user.request("good"), user.id, 0.01, Limits())
    if store.ledger.name == "sqlite" and sqlite_holds_it:
        assert await store.ledger.finish(finished(user.request("bad"), user.id, **fields)) is True
        return

    with pytest.raises(LedgerRejected):
        await store.ledger.finish(finished(user.request("bad"), user.id, **fields))

    assert await store.ledger.finish(finished(user.request("good"), user.id, cost_usd=0.002)) is True
    assert [row["request_id"] for row in await store.log(user.id)] == [user.request("good")]
    # Nothing of the refused record is written: its reservation waits for the stale sweep.
    assert await store.usage(user.id) == [settled("0.002", in_flight=1, reserved_usd="0.01")]

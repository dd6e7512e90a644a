"""Concurrent ledger calls: one user's begins serialize and never overshoot a limit; users never wait on each other.

Every call goes on its own connection (as separate function instances would), fired together with
asyncio.gather. Each test uses fresh user ids, so they share the session's cluster without interfering.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeAlias, TypeVar

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pgcluster import PgCluster

T = TypeVar("T")
Conn: TypeAlias = psycopg.AsyncConnection[Any]
Connect: TypeAlias = Callable[[int], Awaitable[list[Conn]]]

TIMEOUT = 20.0  # seconds for a whole test's database work; a deadlock or lost wake-up fails, never hangs

BEGIN = """
select public.ledger_begin(%(request_id)s, %(user_id)s, %(reserve_usd)s::numeric,
                           %(rpm)s::integer, %(daily_requests)s::integer, %(daily_cost_usd)s::numeric)
"""
FINISH = "select public.ledger_finish(%(request_id)s, %(user_id)s, %(row)s)"


@pytest.fixture
async def connect(pg: PgCluster) -> AsyncIterator[Connect]:
    """Open N autocommit connections as the owner (like a direct DATABASE_URL); all closed afterwards."""
    opened: list[Conn] = []

    async def one() -> Conn:
        conn = await psycopg.AsyncConnection.connect(
            pg.dsn, autocommit=True, connect_timeout=10, options="-c statement_timeout=15s -c lock_timeout=15s"
        )
        opened.append(conn)
        return conn

    async def open_many(count: int) -> list[Conn]:
        return list(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), TIMEOUT))

    yield open_many
    await asyncio.gather(*(conn.close() for conn in opened), return_exceptions=True)


async def begin(
    conn: Conn,
    request_id: str,
    user_id: uuid.UUID,
    *,
    reserve_usd: str = "0",
    rpm: int | None = None,
    daily_requests: int | None = None,
    daily_cost_usd: str | None = None,
) -> dict[str, Any]:
    params = {
        "request_id": request_id,
        "user_id": user_id,
        "reserve_usd": Decimal(reserve_usd),
        "rpm": rpm,
        "daily_requests": daily_requests,
        "daily_cost_usd": None if daily_cost_usd is None else Decimal(daily_cost_usd),
    }
    row = await (await conn.execute(BEGIN, params)).fetchone()
    assert row is not None
    answer: dict[str, Any] = row[0]
    return answer


async def finish(conn: Conn, request_id: str, user_id: uuid.UUID, row: dict[str, Any]) -> dict[str, Any]:
    result = await (
        await conn.execute(FINISH, {"request_id": request_id, "user_id": user_id, "row": Jsonb(row)})
    ).fetchone()
    assert result is not None
    answer: dict[str, Any] = result[0]
    return answer


async def together(*calls: Awaitable[T]) -> list[T]:
    """Run the calls at once and wait for all of them, within the test timeout."""
    return list(await asyncio.wait_for(asyncio.gather(*calls), TIMEOUT))


async def usage(conn: Conn, user_id: uuid.UUID) -> dict[str, Any]:
    cur = await conn.execute(
        "select requests, in_flight, total_tokens, cost_usd, reserved_usd from public.usage_daily"
        " where user_id = %s and day = (now() at time zone 'utc')::date",
        (user_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return dict(zip(["requests", "in_flight", "total_tokens", "cost_usd", "reserved_usd"], row, strict=True))


async def well_inside_a_minute(conn: Conn) -> None:
    """Wait out the last seconds of a minute (and so of a UTC day), so a burst falls in one window and one day."""
    row = await (await conn.execute("select extract(second from clock_timestamp())::float8")).fetchone()
    assert row is not None
    second: float = row[0]
    if second > 55:
        await asyncio.sleep(60.2 - second)


async def lock_waiters(conn: Conn) -> int:
    row = await (
        await conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
        )
    ).fetchone()
    assert row is not None
    waiting: int = row[0]
    return waiting


def verdicts(answers: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    return Counter((a["admitted"], a.get("reason"), a.get("limit")) for a in answers)


async def test_forty_simultaneous_begins_admit_exactly_the_daily_request_quota(connect: Connect) -> None:
    conns = await connect(40)
    user = uuid.uuid4()
    await well_inside_a_minute(conns[0])

    answers = await together(*(begin(c, f"daily-{i}-{user}", user, daily_requests=7) for i, c in enumerate(conns)))

    assert verdicts(answers) == {(True, None, None): 7, (False, "quota_exceeded", "daily_requests"): 33}
    assert all(a["retry_after"] >= 1 for a in answers if not a["admitted"])
    assert (await usage(conns[0], user))["in_flight"] == 7


async def test_simultaneous_begins_never_reserve_past_the_daily_cost_limit(connect: Connect) -> None:
    conns = await connect(40)
    user = uuid.uuid4()
    await well_inside_a_minute(conns[0])

    answers = await together(
        *(begin(c, f"cost-{i}-{user}", user, reserve_usd="0.01", daily_cost_usd="0.05") for i, c in enumerate(conns))
    )

    assert verdicts(answers) == {(True, None, None): 5, (False, "quota_exceeded", "daily_cost_usd"): 35}
    now = await usage(conns[0], user)
    assert (now["in_flight"], now["reserved_usd"]) == (5, Decimal("0.05"))


async def test_simultaneous_begins_admit_exactly_the_rpm_limit(connect: Connect) -> None:
    conns = await connect(30)
    user = uuid.uuid4()
    await well_inside_a_minute(conns[0])

    answers = await together(*(begin(c, f"rpm-{i}-{user}", user, rpm=10) for i, c in enumerate(conns)))

    assert verdicts(answers) == {(True, None, None): 10, (False, "rate_limited", "rpm"): 20}
    assert all(1 <= a["retry_after"] <= 60 for a in answers if not a["admitted"])


async def test_simultaneous_duplicate_finishes_count_once(connect: Connect) -> None:
    conns = await connect(20)
    user = uuid.uuid4()
    request_id = f"dup-{user}"
    assert (await begin(conns[0], request_id, user, reserve_usd="0.05"))["admitted"]
    row = {"function": "chat", "status": 200, "total_tokens": 15, "cost_usd": 0.0123}

    answers = await together(*(finish(c, request_id, user, row) for c in conns))

    assert Counter(a.get("recorded") for a in answers) == {True: 1, False: 19}
    assert all(a == {"recorded": False, "duplicate": True} for a in answers if not a["recorded"])
    assert await usage(conns[0], user) == {
        "requests": 1,
        "in_flight": 0,
        "total_tokens": 15,
        "cost_usd": Decimal("0.0123"),
        "reserved_usd": Decimal("0"),
    }
    logged = await (
        await conns[0].execute("select count(*) from public.request_log where request_id = %s", (request_id,))
    ).fetchone()
    assert logged == (1,)


async def test_users_have_separate_quotas_under_a_mixed_burst(connect: Connect) -> None:
    conns = await connect(40)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await well_inside_a_minute(conns[0])

    answers = await together(
        *(
            begin(c, f"mix-{i}-{alice if i % 2 else bob}", alice if i % 2 else bob, daily_requests=5)
            for i, c in enumerate(conns)
        )
    )

    admitted = Counter(i % 2 for i, a in enumerate(answers) if a["admitted"])
    assert admitted == {0: 5, 1: 5}  # each user gets their own 5, whoever else is busy


async def test_a_saturated_user_does_not_block_another(connect: Connect) -> None:
    """While one transaction holds Alice's usage row, Alice's other begins wait and Bob's go straight through."""
    holder, *conns = await connect(8)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    await well_inside_a_minute(holder)
    for i in range(2):
        assert (await begin(conns[0], f"sat-{i}-{alice}", alice, daily_requests=2))["admitted"]

    async with asyncio.timeout(TIMEOUT):
        await holder.set_autocommit(False)
        refused = await begin(holder, f"sat-hold-{alice}", alice, daily_requests=2)  # the lock stays until commit
        assert refused["reason"] == "quota_exceeded"

        waiting = [
            asyncio.create_task(begin(c, f"sat-wait-{i}-{alice}", alice, daily_requests=2))
            for i, c in enumerate(conns[:4])
        ]
        while await lock_waiters(conns[6]) < 4:  # all four of Alice's begins are queued on her row
            await asyncio.sleep(0.02)

        bobs = await asyncio.wait_for(
            asyncio.gather(*(begin(c, f"sat-bob-{i}-{bob}", bob, daily_requests=2) for i, c in enumerate(conns[4:7]))),
            5,
        )
        assert verdicts(bobs) == {(True, None, None): 2, (False, "quota_exceeded", "daily_requests"): 1}
        assert not any(task.done() for task in waiting), "Alice's begins should still wait behind her locked row"

        await holder.commit()
        assert not any(a["admitted"] for a in await asyncio.gather(*waiting))

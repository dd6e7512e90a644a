"""What only the direct-Postgres ledger has (a pool, pooler safety), and the functions writing through it.

The ledger's rules are tested once for every backend in test_ledger_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest

from helpers import JWT_SECRET, ROOT, UPSTREAM_KEY, bearer, mint
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import build_app
from openrouter_functions.config import Settings
from openrouter_functions.ledger import LedgerUnavailable, Limits
from openrouter_functions.ledger.postgres import PostgresLedger
from openrouter_functions.runtime import reset_runtime
from pgcluster import PgCluster


def new_user() -> str:
    return str(uuid.uuid4())


async def test_nothing_outlives_a_statement_so_a_transaction_pooler_is_safe(pg: PgCluster) -> None:
    """Supavisor/PgBouncer in transaction mode hand each statement any server connection: the ledger must
    keep no prepared statement and no open transaction on one."""
    ledger = PostgresLedger(pg.dsn, pool_size=1)  # one connection, so every call below runs on it
    user = new_user()
    for i in range(8):  # psycopg prepares a statement on the server from its 5th run, unless told not to
        await ledger.begin(f"pooler-{i}-{user}", user, 0, Limits())

    assert len(ledger._idle) == 1
    conn = ledger._idle[0].connection
    assert conn.autocommit
    prepared = await (await conn.execute("select count(*) from pg_prepared_statements")).fetchone()
    assert prepared == (0,)
    await ledger.aclose()


async def test_calls_at_once_open_no_more_connections_than_the_pool_holds(
    pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = PostgresLedger(pg.dsn, pool_size=2)
    opened = 0
    connect = ledger._connect

    async def counted() -> object:
        nonlocal opened
        opened += 1
        await asyncio.sleep(0.05)  # the window in which more first calls would open more connections
        return await connect()

    monkeypatch.setattr(ledger, "_connect", counted)

    assert list(await asyncio.gather(*(ledger.check() for _ in range(8)))) == [True] * 8
    assert opened == 2
    assert len(ledger._idle) == 2 and not ledger._waiting
    await ledger.aclose()


async def test_many_callers_share_the_pool_and_the_quota_stays_exact(pg: PgCluster) -> None:
    """Twenty-five admissions at once over two connections against a quota of twenty: exactly twenty are
    admitted, and the pool ends with its two connections idle and nobody waiting."""
    ledger = PostgresLedger(pg.dsn, pool_size=2)
    user = new_user()
    limits = Limits(rpm=1000, daily_requests=20, daily_cost_usd=100)
    admissions = await asyncio.gather(*(ledger.begin(f"many-{i}-{user}", user, 0.01, limits) for i in range(25)))
    assert sum(a.admitted for a in admissions) == 20
    assert ledger._size == 2 and len(ledger._idle) == 2 and not ledger._waiting
    await ledger.aclose()


async def test_a_call_cancelled_mid_statement_does_not_leave_its_connection_in_the_pool(pg: PgCluster) -> None:
    """A call the meter cuts short: psycopg cancels the statement on the server and the connection comes
    back idle (one that did not would be closed, its place open again); the next call gets a working one."""
    ledger = PostgresLedger(pg.dsn, pool_size=1)
    task = asyncio.create_task(ledger._one("select pg_sleep(5)", ()))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ledger._size == len(ledger._idle) <= 1
    assert all(cursor.connection.pgconn.transaction_status == 0 for cursor in ledger._idle)  # IDLE
    assert await ledger.check()
    assert ledger._size == 1 and len(ledger._idle) == 1
    await ledger.aclose()


async def test_a_caller_waiting_too_long_for_a_pooled_connection_uses_one_of_its_own(pg: PgCluster) -> None:
    ledger = PostgresLedger(pg.dsn, pool_size=1, connect_timeout=0.3)
    busy = asyncio.create_task(ledger._one("select pg_sleep(1)", ()))
    await asyncio.sleep(0.1)
    # No pooled connection comes free in time: the pool is dropped, as when the store is lost, and the
    # call runs on a connection of its own.
    assert await asyncio.wait_for(ledger._one("select 1", ()), 0.9) == 1
    await busy
    assert ledger._size == 0 and not ledger._idle  # the busy one was closed on its return
    assert await ledger.check()
    assert ledger._size == 1 and len(ledger._idle) == 1
    await ledger.aclose()


async def test_an_unreachable_database_is_ledger_unavailable() -> None:
    broken = PostgresLedger("postgresql://postgres@127.0.0.1:9/none", connect_timeout=1.0)

    assert not await broken.check()
    with pytest.raises(LedgerUnavailable, match="^postgres: "):
        await broken.begin("x", new_user(), 0, Limits())
    await broken.aclose()


async def test_functions_write_rows_to_postgres(pg: PgCluster) -> None:
    """chat (plain and streamed) and completion through the real functions; rows and sums in PostgreSQL."""
    user = new_user()
    token = mint(sub=user)
    async with FakeOpenRouter(api_key=UPSTREAM_KEY) as fake:
        runtime = reset_runtime(
            Settings.from_env(
                {
                    "OPENROUTER_API_KEY": UPSTREAM_KEY,
                    "OPENROUTER_BASE_URL": fake.url,
                    "SUPABASE_JWT_SECRET": JWT_SECRET,
                    "DATABASE_URL": pg.dsn,
                    "DEFAULT_DAILY_REQUESTS": "3",
                }
            )
        )
        assert runtime is not None
        transport = httpx.ASGITransport(app=build_app(ROOT / "functions"))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://functions.test") as client:
                plain = await client.post(
                    "/chat", json={"messages": [{"role": "user", "content": "one two"}]}, headers=bearer(token)
                )
                streamed = await client.post(
                    "/chat",
                    headers=bearer(token),
                    json={"messages": [{"role": "user", "content": "three"}], "stream": True},
                )
                done = await client.post("/completion", json={"prompt": "four"}, headers=bearer(token))
                refused = await client.post("/completion", json={"prompt": "five"}, headers=bearer(token))
        finally:
            await runtime.aclose()
            reset_runtime()
    assert (plain.status_code, streamed.status_code, done.status_code, refused.status_code) == (200, 200, 200, 429)
    final_chunk = json.loads(streamed.text.split("\n\n")[-3][len("data: ") :])
    costs = [plain.json()["usage"]["cost"], final_chunk["usage"]["cost"], done.json()["usage"]["cost"]]
    rows = pg.psql(
        f"select function, status, cost_usd from public.request_log where user_id = '{user}' order by created_at"
    ).split()
    assert [r.split("|")[:2] for r in rows] == [
        ["chat", "200"],
        ["chat", "200"],
        ["completion", "200"],
        ["completion", "429"],
    ]
    sums = pg.psql(
        f"select requests, cost_usd, reserved_usd, in_flight from public.usage_daily where user_id = '{user}'"
    )
    requests, cost, reserved, in_flight = sums.strip().split("|")
    assert (int(requests), float(reserved), int(in_flight)) == (3, 0.0, 0)
    assert float(cost) == pytest.approx(sum(costs))


async def test_a_connection_back_in_a_transaction_is_closed_and_its_place_goes_to_a_waiting_call(
    pg: PgCluster,
) -> None:
    ledger = PostgresLedger(pg.dsn, pool_size=1)
    cursor = await ledger._checkout()
    conn = cursor.connection
    waiting = asyncio.create_task(ledger._one("select 1", ()))
    await asyncio.sleep(0.05)
    assert len(ledger._waiting) == 1
    await conn.execute("begin")  # left in a transaction: must not reach the next call
    await ledger._checkin(cursor, ledger._epoch)
    assert conn.closed
    assert await waiting == 1  # on a connection opened in the freed place
    assert ledger._size == 1 and len(ledger._idle) == 1 and ledger._idle[0].connection is not conn
    await ledger.aclose()

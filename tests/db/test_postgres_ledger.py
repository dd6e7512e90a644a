"""What only the direct-Postgres ledger has (a pool, pooler safety), and the functions writing through it.

The ledger's rules are tested once for every backend in test_ledger_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg_pool
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

    pool = await ledger._get_pool()
    async with pool.connection() as conn:
        assert conn.autocommit
        prepared = await (await conn.execute("select count(*) from pg_prepared_statements")).fetchone()
    assert prepared == (0,)
    await ledger.aclose()


async def test_first_calls_at_once_open_one_pool(pg: PgCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[psycopg_pool.AsyncConnectionPool] = []

    class CountedPool(psycopg_pool.AsyncConnectionPool):
        async def open(self, wait: bool = False, timeout: float = 30.0) -> None:
            opened.append(self)
            await asyncio.sleep(0.05)  # the window in which a second first call would open another pool
            await super().open(wait, timeout)

    monkeypatch.setattr(psycopg_pool, "AsyncConnectionPool", CountedPool)
    ledger = PostgresLedger(pg.dsn)

    assert list(await asyncio.gather(ledger.check(), ledger.check(), ledger.check())) == [True, True, True]

    assert len(opened) == 1
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

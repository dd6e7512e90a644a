"""The direct-Postgres ledger backend against the real SQL functions, and the functions using it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from helpers import JWT_SECRET, ROOT, UPSTREAM_KEY, bearer, mint
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import build_app
from openrouter_functions.config import Settings
from openrouter_functions.ledger import LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.postgres import PostgresLedger
from openrouter_functions.runtime import reset_runtime
from pgcluster import PgCluster


def new_user() -> str:
    return str(uuid.uuid4())


@pytest.fixture
async def ledger(pg: PgCluster) -> AsyncIterator[PostgresLedger]:
    backend = PostgresLedger(pg.dsn)
    yield backend
    await backend.aclose()


async def test_begin_and_finish_round_trip(ledger: PostgresLedger, pg: PgCluster) -> None:
    user = new_user()
    admission = await ledger.begin("pg-r1-" + user, user, "chat", "openai/gpt-4o", 0.01, Limits(daily_cost_usd=1.0))
    assert admission.admitted
    assert admission.reserved_usd == 0.01
    record = UsageRecord(
        "pg-r1-" + user,
        user,
        "chat",
        "openai/gpt-4o",
        latency_ms=12.7,
        attempts=2,
        prompt_tokens=10,
        completion_tokens=4,
        total_tokens=14,
        cost_usd=0.00123,
        generation_id="gen-1",
        prompt_preview="hi",
    )
    assert await ledger.finish(record)
    assert not await ledger.finish(record)
    row = pg.psql(
        f"select requests, cost_usd, reserved_usd, in_flight from public.usage_daily where user_id = '{user}'"
    )
    assert row.strip() == "1|0.00123000|0.00000000|0"
    logged = pg.psql(f"select latency_ms, attempts, generation_id from public.request_log where user_id = '{user}'")
    assert logged.strip() == "13|2|gen-1"


async def test_refusals_come_back_as_admissions(ledger: PostgresLedger) -> None:
    user = new_user()
    assert (await ledger.begin("a-" + user, user, "chat", None, 0, Limits(daily_requests=1))).admitted
    refused = await ledger.begin("b-" + user, user, "chat", None, 0, Limits(daily_requests=1))
    assert (refused.admitted, refused.reason, refused.limit) == (False, "quota_exceeded", "daily_requests")
    assert refused.retry_after is not None
    assert refused.retry_after >= 1


async def test_concurrent_begins_through_the_pool(ledger: PostgresLedger) -> None:
    user = new_user()
    answers = await asyncio.gather(
        *(ledger.begin(f"c{i}-{user}", user, "chat", None, 0.01, Limits(daily_cost_usd=0.05)) for i in range(20))
    )
    assert sum(a.admitted for a in answers) == 5


async def test_unreachable_database_is_ledger_unavailable() -> None:
    broken = PostgresLedger("postgresql://postgres@127.0.0.1:9/none", connect_timeout=1.0)
    assert not await broken.check()
    with pytest.raises(LedgerUnavailable):
        await broken.begin("x", new_user(), "chat", None, 0, Limits())
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

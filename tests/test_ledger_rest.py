"""What only the Supabase REST ledger has: PostgREST's exact wire format (an httpx mock; PostgREST isn't here).

What the answers mean is tested once for every backend in tests/db/test_ledger_contract.py, where this
backend talks to a PostgREST stand-in over the real SQL.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from openrouter_functions.ledger import Admission, LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.rest import SupabaseRestLedger

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"


def build(reply: Any, status: int = 200) -> tuple[SupabaseRestLedger, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(reply, Exception):
            raise reply
        return httpx.Response(status, json=reply)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SupabaseRestLedger(URL, KEY, http_client=client), seen


async def test_begin_is_one_rpc_post_with_named_arguments() -> None:
    ledger, seen = build({"admitted": True, "day": "2026-11-27", "reserved_usd": 0.01})

    admission = await ledger.begin("req-1", USER, 0.01, Limits(60, 100, 1.5))

    assert admission == Admission(True, reserved_usd=0.01)
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", f"{URL}/rest/v1/rpc/ledger_begin")
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-profile"] == "public"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "p_request_id": "req-1",
        "p_user_id": USER,
        "p_reserve_usd": 0.01,
        "p_default_rpm": 60,
        "p_default_daily_requests": 100,
        "p_default_daily_cost_usd": 1.5,
    }


async def test_unlimited_defaults_are_sent_as_nulls() -> None:
    ledger, seen = build({"admitted": True, "day": "2026-11-27", "reserved_usd": 0})

    await ledger.begin("req-1", USER, 0, Limits())

    body = json.loads(seen[0].content)
    assert [body[key] for key in ("p_default_rpm", "p_default_daily_requests", "p_default_daily_cost_usd")] == [
        None,
        None,
        None,
    ]


async def test_finish_is_one_rpc_post_with_the_row() -> None:
    ledger, seen = build({"recorded": True})
    record = UsageRecord("req-1", USER, "chat", "openai/gpt-4o", prompt_tokens=3, cost_usd=0.001)

    assert await ledger.finish(record) is True

    [request] = seen
    assert (request.method, str(request.url)) == ("POST", f"{URL}/rest/v1/rpc/ledger_finish")
    assert json.loads(request.content) == {"p_request_id": "req-1", "p_user_id": USER, "p_row": record.row()}
    assert "request_id" not in record.row()


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (
            {"code": "42501", "message": "permission denied for function ledger_begin", "details": None, "hint": None},
            401,
        ),
        ({"code": "PGRST202", "message": "Could not find the function", "details": None, "hint": None}, 404),
        ({"code": "55P03", "message": "canceling statement due to lock timeout", "details": None, "hint": None}, 500),
        (httpx.ConnectError("refused"), 200),
        ("not an object", 200),
    ],
)
async def test_failures_are_ledger_unavailable(reply: Any, status: int) -> None:
    ledger, seen = build(reply, status)

    with pytest.raises(LedgerUnavailable, match="ledger_begin"):
        await ledger.begin("req-1", USER, 0.0, Limits())
    assert len(seen) == 1  # an RPC is never retried by the client


async def test_check_reads_one_row_of_usage_daily() -> None:
    ledger, seen = build([])

    assert await ledger.check() is True

    [request] = seen
    assert (request.method, request.url.path) == ("GET", "/rest/v1/usage_daily")
    assert dict(request.url.params) == {"select": "user_id", "limit": "1"}


async def test_check_asks_once_and_says_false_when_the_store_fails() -> None:
    """supabase-py would retry a GET that got a 503 with seconds of backoff; health wants the answer now."""
    ledger, seen = build({"code": "PGRST000", "message": "Database client error", "details": None, "hint": None}, 503)

    assert await ledger.check() is False

    assert len(seen) == 1

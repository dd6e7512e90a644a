"""The Supabase REST ledger against PostgREST's exact wire format (httpx mock: PostgREST isn't here)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from openrouter_functions.ledger import LedgerUnavailable, Limits, UsageRecord
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
    admission = await ledger.begin("req-1", USER, "chat", "openai/gpt-4o", 0.01, Limits(60, 100, 1.5))
    assert admission.admitted
    assert admission.reserved_usd == 0.01
    [request] = seen
    assert request.method == "POST"
    assert request.url.path == "/rest/v1/rpc/ledger_begin"
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-profile"] == "public"
    assert json.loads(request.content) == {
        "p_request_id": "req-1",
        "p_user_id": USER,
        "p_function": "chat",
        "p_model": "openai/gpt-4o",
        "p_reserve_usd": 0.01,
        "p_default_rpm": 60,
        "p_default_daily_requests": 100,
        "p_default_daily_cost_usd": 1.5,
    }


async def test_refusal_is_read_from_the_bare_json_result() -> None:
    ledger, _ = build({"admitted": False, "reason": "rate_limited", "limit": "rpm", "retry_after": 12})
    admission = await ledger.begin("req-1", USER, "chat", None, 0.0, Limits())
    assert (admission.admitted, admission.reason, admission.limit, admission.retry_after) == (
        False,
        "rate_limited",
        "rpm",
        12,
    )


async def test_finish_sends_the_row() -> None:
    ledger, seen = build({"recorded": True})
    record = UsageRecord("req-1", USER, "chat", "openai/gpt-4o", prompt_tokens=3, cost_usd=0.001)
    assert await ledger.finish(record)
    [request] = seen
    assert request.url.path == "/rest/v1/rpc/ledger_finish"
    body = json.loads(request.content)
    assert body["p_request_id"] == "req-1"
    assert body["p_user_id"] == USER
    assert body["p_row"]["prompt_tokens"] == 3
    assert body["p_row"]["cost_usd"] == 0.001
    assert "request_id" not in body["p_row"]


async def test_duplicate_finish_is_not_recorded() -> None:
    ledger, _ = build({"recorded": False, "duplicate": True})
    assert not await ledger.finish(UsageRecord("req-1", USER, "chat"))


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (
            {"code": "42501", "message": "permission denied for function ledger_begin", "details": None, "hint": None},
            401,
        ),
        ({"code": "PGRST202", "message": "Could not find the function", "details": None, "hint": None}, 404),
        (httpx.ConnectError("refused"), 200),
        ("not an object", 200),
    ],
)
async def test_failures_are_ledger_unavailable(reply: Any, status: int) -> None:
    ledger, _ = build(reply, status)
    with pytest.raises(LedgerUnavailable):
        await ledger.begin("req-1", USER, "chat", None, 0.0, Limits())


async def test_check() -> None:
    ledger, seen = build([])
    assert await ledger.check()
    assert seen[0].method == "GET"
    assert seen[0].url.path == "/rest/v1/usage_daily"
    broken, _ = build(httpx.ConnectError("refused"))
    assert not await broken.check(within=0.3)

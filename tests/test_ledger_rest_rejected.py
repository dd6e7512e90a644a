"""The Supabase REST ledger tells a value PostgreSQL refused (one request's problem) from an outage.

PostgREST answers a SQL error with its SQLSTATE as ``code``; classes 22 (data exception) and 23
(integrity) are about the values sent. A body httpx cannot encode never leaves at all.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from openrouter_functions.ledger import LedgerRejected, LedgerUnavailable, UsageRecord
from openrouter_functions.ledger.rest import SupabaseRestLedger

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"


def ledger_answering(status: int, body: Any, seen: list[httpx.Request]) -> SupabaseRestLedger:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    return SupabaseRestLedger(URL, KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


def error(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "details": None, "hint": None, "message": message}


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (400, "22P05", "unsupported Unicode escape sequence"),
        (400, "22003", "integer out of range"),
        (409, "23505", "duplicate key value violates unique constraint"),
    ],
)
async def test_a_value_postgres_refuses_is_rejected(status: int, code: str, message: str) -> None:
    ledger = ledger_answering(status, error(code, message), [])
    with pytest.raises(LedgerRejected, match=f"^supabase rpc ledger_finish: {code} {message}$"):
        await ledger.finish(UsageRecord("req-1", USER, "chat", "openai/\x00gpt-4o"))


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "PGRST000"), (500, "57014"), (500, "53300"), (401, "PGRST301"), (500, "XX000")],
)
async def test_any_other_error_is_an_outage(status: int, code: str) -> None:
    ledger = ledger_answering(status, error(code, "store trouble"), [])
    with pytest.raises(LedgerUnavailable) as caught:
        await ledger.finish(UsageRecord("req-1", USER, "chat", "openai/gpt-4o"))
    assert type(caught.value) is LedgerUnavailable


@pytest.mark.parametrize(
    "fields", [{"model": "openai/gpt-4o\ud800"}, {"cost_usd": float("nan")}, {"prompt_tokens": float("inf")}]
)
async def test_a_row_that_cannot_be_encoded_is_rejected_without_a_request(fields: dict[str, Any]) -> None:
    seen: list[httpx.Request] = []
    ledger = ledger_answering(200, {"recorded": True}, seen)
    with pytest.raises(LedgerRejected):
        await ledger.finish(UsageRecord("req-1", USER, "chat", **fields))
    assert seen == []


async def test_a_transport_failure_is_an_outage() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    ledger = SupabaseRestLedger(URL, KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    with pytest.raises(LedgerUnavailable) as caught:
        await ledger.finish(UsageRecord("req-1", USER, "chat", "openai/gpt-4o"))
    assert type(caught.value) is LedgerUnavailable

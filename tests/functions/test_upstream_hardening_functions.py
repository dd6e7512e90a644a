"""The client's hardening as a caller of the functions sees it: hostile schemas refused with 400 before
upstream is called, a hostile or broken upstream answered in the envelope (never a 500 `internal`),
and every such request settled in the ledger."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from helpers import UPSTREAM_KEY, bearer
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.runtime import get_runtime
from openrouter_service import OpenRouterService

HI = {"messages": [{"role": "user", "content": "Hello there"}]}
SANITY_SECONDS = 5.0


def ledger() -> SQLiteLedger:
    backend = get_runtime().meter.backend
    assert isinstance(backend, SQLiteLedger)
    return backend


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}}


async def assert_settled(status: int, attempts: int) -> None:
    [row] = await ledger().rows("request_log")
    assert (row["status"], row["attempts"]) == (status, attempts)
    [day] = await ledger().rows("usage_daily")
    assert (day["requests"], day["in_flight"], day["reserved_usd"]) == (1, 0, 0)


@pytest.mark.parametrize("ref", ["{fake}/models", "file:///etc/passwd", "#/$defs/missing"])
async def test_a_schema_ref_outside_itself_is_a_400_before_upstream_is_called(
    client: httpx.AsyncClient, fake: FakeOpenRouter, ref: str
) -> None:
    ref = ref.format(fake=fake.url)
    body = {"prompt": "Invent a city", "response_format": schema_format({"$ref": ref})}
    response = await client.post("/completion", json=body, headers=bearer())
    assert (response.status_code, response.json()["error"]) == (
        400,
        {
            "code": 400,
            "type": "invalid_request",
            "message": f"response_format.json_schema.schema: $ref {ref!r} does not resolve inside the schema "
            "(references to other documents are never fetched)",
        },
    )
    assert fake.received == []


async def test_a_catastrophic_pattern_cannot_stall_the_function(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    evil = "a" * 40 + "!"
    fake.script({"content": json.dumps(evil), "repeat": 2})
    body = {"prompt": "Say a", "response_format": schema_format({"type": "string", "pattern": "(a+)+$"})}
    started = time.perf_counter()
    response = await client.post("/completion", json=body, headers=bearer())
    assert time.perf_counter() - started < SANITY_SECONDS
    error = response.json()["error"]
    assert (response.status_code, error["type"], error["violations"]) == (
        502,
        "schema_violation",
        [{"path": "$", "message": f"{evil!r} does not match '(a+)+$'"}],
    )
    assert len(fake.received) == 2


@pytest.mark.parametrize(("hint", "told"), [("inf", "4"), ("nan", "4"), ("1e12", "86400")])
async def test_a_non_finite_or_absurd_retry_after_is_an_answer_and_a_settled_row(
    client: httpx.AsyncClient, fake: FakeOpenRouter, hint: str, told: str
) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": hint}, "repeat": 4})
    response = await client.post("/chat", json=HI, headers=bearer())
    assert (response.status_code, response.json()["error"]["type"], response.headers["retry-after"]) == (
        503,
        "upstream_rate_limited",
        told,
    )
    await assert_settled(503, len(fake.received))


async def test_eight_malformed_upstream_answers_are_retried_then_a_502_not_internal(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    fake.script({"fault": "garbage", "repeat": 8})
    for _ in range(2):
        response = await client.post("/chat", json=HI, headers=bearer())
        assert (response.status_code, response.json()["error"]["type"], response.headers["retry-after"]) == (
            502,
            "upstream_unreachable",
            "1",
        )
    assert len(fake.received) == 8
    rows = await ledger().rows("request_log")
    assert [(row["status"], row["attempts"]) for row in rows] == [(502, 4), (502, 4)]


async def test_a_plain_answer_cut_mid_body_is_asked_for_once(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "cut", "repeat": 4})
    response = await client.post("/chat", json=HI, headers=bearer())
    assert (response.status_code, response.json()["error"]["type"]) == (502, "upstream_unreachable")
    assert len(fake.received) == 1
    await assert_settled(502, 1)


async def test_our_key_echoed_by_upstream_never_reaches_the_caller(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    fake.script({"fault": "status", "status": 400, "message": f"Invalid key {UPSTREAM_KEY} for this model"})
    response = await client.post("/chat", json=HI, headers=bearer())
    assert (response.status_code, response.json()["error"]["message"]) == (400, "Invalid key *** for this model")
    assert UPSTREAM_KEY not in response.text


async def test_a_stream_of_only_keepalives_ends_with_a_timeout_event_and_a_settled_row(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Any
) -> None:
    configure(OPENROUTER_FIRST_CHUNK_TIMEOUT="0.3")
    fake.script({"fault": "keepalive", "count": 1000, "delay": 0.02})
    started = time.perf_counter()
    response = await client.post("/chat", json={**HI, "stream": True}, headers=bearer())
    assert time.perf_counter() - started < SANITY_SECONDS
    events = [e for e in response.text.split("\n\n") if e.startswith("data: ")]
    last_error = json.loads(events[-2][len("data: ") :])["error"]
    assert (response.status_code, events[-1], last_error["code"], last_error["message"]) == (
        200,
        "data: [DONE]",
        504,
        "OpenRouter sent no data within 0.3 s.",
    )
    assert last_error["metadata"]["type"] == "upstream_timeout"
    await assert_settled(200, 1)


@pytest.mark.parametrize("event", [b"[1, 2]", b"null", b"not json"])
async def test_a_bad_first_stream_event_is_recorded_with_its_attempt(
    client: httpx.AsyncClient, configure: Any, event: bytes
) -> None:
    body = b": OPENROUTER PROCESSING\n\ndata: " + event + b"\n\n"
    transport = httpx.MockTransport(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    runtime = get_runtime()
    runtime.use_service(
        OpenRouterService(UPSTREAM_KEY, http_client=httpx.AsyncClient(transport=transport), sleep=runtime.sleep)
    )
    for stream in (True, False):
        request = {**HI, "stream": True} if stream else HI
        await client.post("/chat", json=request, headers=bearer())
    rows = await ledger().rows("request_log")
    assert [(row["status"], row["attempts"]) for row in rows] == [(200, 1), (502, 1)]

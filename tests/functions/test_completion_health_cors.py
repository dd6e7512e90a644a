"""completion and health in-process, and what every function shares: CORS, preflight, metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import HEALTH_DETAIL, bearer
from openrouter_devtools.fake_upstream import FakeOpenRouter

PERSON = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 18}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}


async def test_completion_returns_text(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    response = await client.post(
        "/completion",
        json={
            "prompt": "Write a haiku",
            "system": "You are a poet",
            "model": "openai/gpt-4o-mini",
            "params": {"temperature": 1},
        },
        headers=bearer(),
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "model", "text", "data", "usage"}
    assert body["text"] == "Echo: Write a haiku"
    assert body["data"] is None
    assert body["model"] == "openai/gpt-4o-mini"
    sent = fake.received[0].json()
    assert sent["messages"][0] == {"role": "system", "content": "You are a poet"}
    assert sent["temperature"] == 1


async def test_completion_with_schema_returns_validated_data(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/completion", json={"prompt": "Invent a person", "response_format": PERSON}, headers=bearer()
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"name": "x", "age": 18}


async def test_completion_reasks_once_on_violation(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "reply", "content": '{"name": "Bo", "age": 3}'})
    response = await client.post(
        "/completion", json={"prompt": "Invent a person", "response_format": PERSON}, headers=bearer()
    )
    assert response.status_code == 200
    assert response.json()["data"] == {"name": "x", "age": 18}
    assert len(fake.received) == 2


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x", "colour": "red"}, "colour"),
        ({"prompt": "x", "params": {"stream": True}}, "stream"),
        ({"prompt": "x", "response_format": {"type": "yaml"}}, "response_format.type"),
        (
            {
                "prompt": "x",
                "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": 5}}},
            },
            "not a valid JSON Schema",
        ),
    ],
)
async def test_completion_bad_bodies(
    client: httpx.AsyncClient, fake: FakeOpenRouter, body: dict[str, Any], needle: str
) -> None:
    response = await client.post("/completion", json=body, headers=bearer())
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]
    assert fake.received == []


async def test_completion_requires_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/completion", json={"prompt": "x"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


# -- health ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_health_ok_without_token(client: httpx.AsyncClient, method: str) -> None:
    terse = await client.request(method, "/health")
    assert (terse.status_code, terse.json()) == (200, {"status": "ok"})
    response = await client.request(method, "/health", headers=HEALTH_DETAIL)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["upstream"]["ok"] is True
    assert body["checks"]["configuration"] == {
        "ok": True,
        "problems": [],
        "model": "openai/gpt-4o",
        "auth": "hs256",
        "prompt_guard": "block",
    }
    assert "sk-or" not in response.text
    assert "super-secret" not in response.text


async def test_health_503_when_upstream_down(client: httpx.AsyncClient, configure: Any) -> None:
    configure(OPENROUTER_BASE_URL="http://127.0.0.1:9/api/v1")
    assert (await client.get("/health")).json() == {"status": "down"}
    response = await client.get("/health", headers=HEALTH_DETAIL)
    assert response.status_code == 503
    assert response.json()["down"] == ["upstream"]


async def test_health_503_names_missing_configuration(client: httpx.AsyncClient, configure: Any) -> None:
    configure(OPENROUTER_API_KEY=None, SUPABASE_JWT_SECRET=None)
    response = await client.get("/health", headers=HEALTH_DETAIL)
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["upstream", "configuration"]  # with no key there is nothing OpenRouter could accept
    problems = " ".join(body["checks"]["configuration"]["problems"])
    assert "OPENROUTER_API_KEY" in problems
    assert "SUPABASE_JWT_SECRET" in problems


async def test_health_caches_upstream_probe(client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter) -> None:
    configure(HEALTH_CACHE_SECONDS="60")
    for _ in range(5):
        assert (await client.get("/health")).status_code == 200
    probes = [r for r in fake.received if r.path.endswith("/key")]
    assert len(probes) == 1
    assert (await client.get("/health", headers=HEALTH_DETAIL)).json()["checks"]["upstream"]["cached"] is True


async def test_health_is_down_when_openrouter_refuses_our_key(client: httpx.AsyncClient, configure: Any) -> None:
    """/models would answer anyway; /key proves the key, so a revoked key is caught by health and pings."""
    configure(OPENROUTER_API_KEY="sk-or-v1-revoked-key")
    assert (await client.get("/health")).json() == {"status": "down"}
    response = await client.get("/health", headers=HEALTH_DETAIL)
    assert response.status_code == 503
    body = response.json()
    assert body["down"] == ["upstream"]
    assert body["checks"]["upstream"]["detail"] == "OpenRouter refused the API key (HTTP 401)"
    assert "revoked" not in response.text


async def test_health_is_degraded_when_credits_run_low(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(HEALTH_LOW_CREDITS_USD="2.5")
    fake.key_limit = 3.0
    assert (await client.get("/health")).json() == {"status": "ok"}
    fake.key_limit = 2.0
    response = await client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "degraded"})  # it still serves
    body = (await client.get("/health", headers=HEALTH_DETAIL)).json()
    assert body["degraded"] == ["upstream_credits"]
    assert body["checks"]["upstream"]["credits_remaining_usd"] == 2.0
    assert body["checks"]["upstream"]["low_on_credits"] is True


async def test_the_public_answer_holds_no_configuration(client: httpx.AsyncClient, configure: Any) -> None:
    configure(OPENROUTER_API_KEY=None)
    response = await client.get("/health", headers={"Authorization": "Bearer health-token-guess"})
    assert (response.status_code, response.json()) == (503, {"status": "down"})


# -- CORS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["chat", "completion", "health"])
async def test_preflight(client: httpx.AsyncClient, function: str) -> None:
    response = await client.options(
        f"/{function}", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"]
    for header in ("authorization", "x-client-info", "apikey", "content-type"):
        assert header in allowed
    assert "POST" in response.headers["access-control-allow-methods"]


async def test_origins_from_allowed_origins(client: httpx.AsyncClient, configure: Any) -> None:
    configure(ALLOWED_ORIGINS="https://app.example,https://admin.example")
    good = await client.post("/chat", json={}, headers={"Origin": "https://app.example"})
    assert good.status_code == 401  # errors carry CORS too, so the browser can read them
    assert good.headers["access-control-allow-origin"] == "https://app.example"
    assert good.headers["vary"] == "Origin"
    bad = await client.options("/chat", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers


async def test_metrics_count_requests(client: httpx.AsyncClient) -> None:
    await client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]}, headers=bearer())
    text = (await client.get("/metrics")).text
    # orf_requests_total says what the caller got (`outcome`); durations are split by `stream`.
    assert 'orf_requests_total{function="chat",model="openai/gpt-4o",outcome="ok",status="200"}' in text
    assert 'orf_request_duration_seconds_bucket{function="chat",le="+Inf",stream="false"}' in text
    assert "orf_cost_usd_total" in text


async def test_unknown_function_is_404_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/nothing")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize("path", ["/health/robots.txt", "/health/anything"])
async def test_health_answers_only_its_own_url(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert (response.status_code, response.json()["error"]["type"]) == (404, "not_found")
    assert "checks" not in response.text


async def test_health_asks_the_ledger_once_per_cache_period(client: httpx.AsyncClient, configure: Any) -> None:
    """A flood of anonymous health requests costs the database one query per period, not one each."""
    runtime = configure(HEALTH_CACHE_SECONDS="60")
    asked: list[int] = []
    original = runtime.meter.check

    async def counted() -> bool:
        asked.append(1)
        return await original()

    runtime.meter.check = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert (await client.get("/health")).status_code == 200
    assert len(asked) == 1

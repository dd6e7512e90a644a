"""What callers and ``health`` see of the safe defaults and of an unsafe configuration (in-process)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import HEALTH_DETAIL, bearer
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.ledger import Limits

HI = {"messages": [{"role": "user", "content": "Hello there"}]}
ANY_ORIGIN_ON_CLOUD = (
    "ALLOWED_ORIGINS=* on a cloud runtime lets any web page read the answers: list your web app's origins, "
    "or set ALLOW_ANY_ORIGIN=true to confirm"
)


async def test_the_defaults_cap_output_and_rate_and_spend(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    runtime = configure()
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    assert fake.received[-1].json()["max_tokens"] == 16384
    assert runtime.meter.default_limits == Limits(rpm=60, daily_requests=None, daily_cost_usd=1.0)


async def test_the_61st_request_in_a_minute_is_rate_limited_by_default(client: httpx.AsyncClient) -> None:
    statuses = [(await client.post("/chat", json=HI, headers=bearer())).status_code for _ in range(61)]
    assert statuses == [200] * 60 + [429]
    refused = await client.post("/chat", json=HI, headers=bearer())
    assert refused.json()["error"]["type"] == "rate_limited"


async def test_unlimited_switches_the_defaults_off(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    runtime = configure(DEFAULT_RPM="unlimited", DEFAULT_DAILY_COST_USD="unlimited", MAX_OUTPUT_TOKENS="unlimited")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    assert "max_tokens" not in fake.received[-1].json()
    assert runtime.meter.default_limits == Limits(rpm=None, daily_requests=None, daily_cost_usd=None)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"ALLOWED_ORIGINS": "https://app.example/"},
            "ALLOWED_ORIGINS entry 'https://app.example/' has a path, query or trailing slash; "
            "an origin is https://app.example",
        ),
        (
            {"OPENROUTER_BASE_URL": "http://openrouter.ai/api/v1"},
            "OPENROUTER_BASE_URL must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true for a private network you trust)",
        ),
    ],
)
async def test_an_unsafe_configuration_refuses_calls_and_health_says_why(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter, env: dict[str, str], problem: str
) -> None:
    configure(**env)
    for path, body in (("/chat", HI), ("/completion", {"prompt": "Hi"})):
        response = await client.post(path, json=body, headers=bearer())
        assert response.status_code == 500
        assert response.json() == {
            "error": {
                "code": 500,
                "type": "configuration_error",
                "message": f"This server refuses to serve: {problem}.",
            }
        }
    assert [r for r in fake.received if r.path.endswith("/chat/completions")] == []
    health = await client.get("/health", headers=HEALTH_DETAIL)
    assert health.status_code == 503
    assert health.json()["down"] == ["upstream", "configuration"]
    assert health.json()["checks"]["upstream"]["detail"] == "not probed: the configuration is refused"
    assert health.json()["checks"]["configuration"]["problems"] == [problem]
    assert fake.received == []  # not even the health probe went upstream


async def test_any_origin_on_a_cloud_runtime_is_refused_until_confirmed(
    client: httpx.AsyncClient, configure: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K_SERVICE", "chat")
    configure(LEDGER_BACKEND="off")  # (the embedded SQLite ledger is a problem of its own on a cloud runtime)
    stranger = await client.post("/chat", json=HI)
    assert stranger.status_code == 401, "a stranger learns nothing about the configuration"
    assert "ALLOWED_ORIGINS" not in stranger.text
    assert (await client.get("/health")).json() == {"status": "down"}
    refused = await client.post("/chat", json=HI, headers=bearer())
    assert refused.status_code == 500
    assert refused.json()["error"]["message"] == f"This server refuses to serve: {ANY_ORIGIN_ON_CLOUD}."
    health = await client.get("/health", headers=HEALTH_DETAIL)
    assert health.json()["checks"]["configuration"]["problems"] == [ANY_ORIGIN_ON_CLOUD]

    configure(LEDGER_BACKEND="off", ALLOW_ANY_ORIGIN="true")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    configure(LEDGER_BACKEND="off", ALLOWED_ORIGINS="https://app.example")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200

"""What the metrics say about real requests through the real functions (in-process, fake OpenRouter on
loopback): a stream that fails after its 200 is an error, streams are timed by their first token, and a
function answers ``GET /metrics`` itself when the deployment turns it on."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from helpers import bearer
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import FunctionsRouter
from openrouter_functions.metrics import METRICS

HI = {"messages": [{"role": "user", "content": "Hello there"}]}
STREAM = {**HI, "stream": True}
WORDS = " ".join(f"w{i}" for i in range(20))


def requests(**labels: str) -> float:
    return METRICS.value("orf_requests_total", function="chat", **labels)


def error_ratio_parts() -> tuple[float, float]:
    """The numerator and denominator of the error-ratio alert, for chat (deploy/prometheus/alerts.yml)."""
    return requests(outcome="error"), requests()


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.startswith("data: ")]


@pytest.mark.parametrize(
    ("step", "env", "error_type"),
    [
        ({"fault": "midstream_error", "after": 2, "code": 502}, {}, "upstream_error"),
        ({"fault": "cut", "after": 2}, {}, "upstream_unreachable"),
        ({"content": WORDS, "chunk_delay": 0.05}, {"OPENROUTER_DEADLINE": "0.4"}, "upstream_timeout"),
    ],
    ids=["upstream-error-event", "upstream-cut", "deadline"],
)
async def test_a_stream_that_fails_mid_way_moves_the_error_ratio(
    client: httpx.AsyncClient,
    fake: FakeOpenRouter,
    configure: Any,
    caplog: pytest.LogCaptureFixture,
    step: dict[str, Any],
    env: dict[str, str],
    error_type: str,
) -> None:
    if env:
        configure(**env)
    caplog.set_level("INFO", logger="openrouter_functions.request")
    failed_before, all_before = error_ratio_parts()
    ttft_before = METRICS.value("orf_time_to_first_token_seconds_count", function="chat")
    fake.script(step)
    response = await client.post("/chat", json=STREAM, headers=bearer())
    assert response.status_code == 200  # the 200 went out before the failure
    last = json.loads(events(response.text)[-2][len("data: ") :])
    assert last["choices"][0]["finish_reason"] == "error"

    failed_after, all_after = error_ratio_parts()
    assert (failed_after - failed_before, all_after - all_before) == (1, 1)
    assert requests(outcome="error", status="200") >= 1
    # The caller got output before the failure: its time to first token is a real sample.
    assert METRICS.value("orf_time_to_first_token_seconds_count", function="chat") == ttft_before + 1
    [line] = [r for r in caplog.records if r.name == "openrouter_functions.request"]
    fields = line.json_fields  # type: ignore[attr-defined]
    assert (fields["status"], fields["outcome"], fields["error_type"]) == (200, "upstream_error", error_type)
    assert (fields["failed"], fields["stream"], line.levelname) == (True, True, "ERROR")
    assert fields["ttft_ms"] is not None and fields["ttft_ms"] < fields["latency_ms"]


async def test_a_caller_error_and_a_good_stream_do_not_move_it(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    failed_before, all_before = error_ratio_parts()
    assert (await client.post("/chat", json={"messages": []}, headers=bearer())).status_code == 400
    assert (await client.post("/chat", json=STREAM, headers=bearer())).status_code == 200
    failed_after, all_after = error_ratio_parts()
    assert (failed_after - failed_before, all_after - all_before) == (0, 2)


def timings(stream: str) -> tuple[float, float, float, float]:
    """(duration count, duration sum) for chat requests with ``stream``, and (count, sum) of TTFT."""
    return (
        METRICS.value("orf_request_duration_seconds_count", function="chat", stream=stream),
        METRICS.value("orf_request_duration_seconds_sum", function="chat", stream=stream),
        METRICS.value("orf_time_to_first_token_seconds_count", function="chat"),
        METRICS.value("orf_time_to_first_token_seconds_sum", function="chat"),
    )


async def test_a_long_stream_is_timed_by_its_first_token(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    before = timings("true")
    fake.script({"content": WORDS, "chunk_delay": 0.04})  # ~25 events 40 ms apart: about a second
    response = await client.post("/chat", json=STREAM, headers=bearer())
    assert response.status_code == 200
    after = timings("true")
    count, duration, ttft_count, ttft = (a - b for a, b in zip(after, before, strict=True))
    assert (count, ttft_count) == (1, 1)
    assert duration > 0.7  # the whole stream
    assert ttft < 0.3  # the first words came at once
    assert ttft < duration / 3


async def test_a_slow_first_token_is_what_the_ttft_histogram_sees(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    before = timings("true")
    fake.script({"fault": "keepalive", "count": 5, "delay": 0.1})  # 0.4 s of ": OPENROUTER PROCESSING" first
    assert (await client.post("/chat", json=STREAM, headers=bearer())).status_code == 200
    after = timings("true")
    assert after[2] - before[2] == 1
    assert after[3] - before[3] >= 0.35


async def test_a_plain_call_is_timed_whole_and_has_no_ttft(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    plain_before, stream_before = timings("false"), timings("true")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    plain_after, stream_after = timings("false"), timings("true")
    assert plain_after[0] - plain_before[0] == 1
    assert plain_after[2] == plain_before[2]  # no TTFT sample
    assert stream_after[:2] == stream_before[:2]


# -- GET /metrics from the function itself ---------------------------------------------------------------


@pytest.fixture
async def bare_chat(router: FunctionsRouter, configure: Any) -> Any:
    """The chat function's own app (as functions-framework serves it), at its root."""
    configure()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=router.apps["chat"]), base_url="http://chat.test"
    ) as http:
        yield http


async def test_the_function_answers_metrics_only_when_enabled(
    bare_chat: httpx.AsyncClient, fake: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("METRICS_ENABLED", raising=False)
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    off = await bare_chat.get("/metrics")
    assert (off.status_code, off.json()["error"]["type"]) == (404, "not_found")

    monkeypatch.setenv("METRICS_ENABLED", "true")
    before = requests()
    for path in ("/metrics", "/chat/metrics"):  # at its root, and behind a URL map that keeps /chat
        scrape = await bare_chat.get(path)
        assert scrape.status_code == 200, path
        assert scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# TYPE orf_requests_total counter" in scrape.text
    assert requests() == before  # a scrape is not a request of the function

    # The function's own routes are as they were.
    assert (await bare_chat.post("/v1/chat/completions", json=HI, headers=bearer())).status_code == 200
    assert (await bare_chat.post("/chat", json=HI, headers=bearer())).status_code == 200
    refused = await bare_chat.post("/metrics", json=HI, headers=bearer())
    assert (refused.status_code, refused.json()["error"]["type"]) == (404, "not_found")
    assert (await bare_chat.get("/v1/metrics")).status_code == 404


async def test_a_metrics_token_is_required_when_set(
    bare_chat: httpx.AsyncClient, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_ENABLED", "1")
    monkeypatch.setenv("METRICS_TOKEN", "scrape-me")
    refused = await bare_chat.get("/metrics")
    assert (refused.status_code, refused.json()["error"]["type"]) == (401, "unauthorized")
    assert (await bare_chat.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await bare_chat.get("/metrics", headers={"Authorization": "Bearer scrape-me"})).status_code == 200
    # serve's own /metrics takes the same token.
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})).status_code == 200

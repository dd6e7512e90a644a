"""The real ``openai`` SDK against ``openrouter-functions serve`` (a real process) backed by the fake
OpenRouter (another real process): plain and streamed completions, and errors as the SDK's classes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import openai
import pytest
from e2e_procs import FakeUpstream, Served, functions_env, serving
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from helpers import USER_ID, mint

MESSAGES = [{"role": "user", "content": "tell me about the quiet harbour at dawn"}]
ECHO = "Echo: tell me about the quiet harbour at dawn"


@pytest.fixture(scope="module", params=["/chat", "/chat/v1"], ids=["chat", "chat-v1"])
def client(request: pytest.FixtureRequest, serve_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{serve_url}{request.param}", api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        yield sdk


def test_plain_completion(client: OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES)

    assert completion.choices[0].message.content == ECHO
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "openai/gpt-4o-mini"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(ECHO.split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    sent = fake.chat_requests()
    assert len(sent) == 1
    assert sent[0]["headers"]["authorization"] == "Bearer sk-or-v1-e2e"
    assert sent[0]["json"]["model"] == "openai/gpt-4o-mini"


def test_streaming_deltas_concatenate_to_the_echo(client: OpenAI, fake: FakeUpstream) -> None:
    stream = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
    pieces: list[str] = []
    finish: list[str] = []
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish.append(choice.finish_reason)

    assert "".join(pieces) == ECHO
    assert len(pieces) > 1, "the answer should arrive in several deltas"
    assert finish == ["stop"]


def test_streaming_include_usage_ends_with_a_usage_chunk(client: OpenAI, fake: FakeUpstream) -> None:
    stream = client.chat.completions.create(
        model="openai/gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(ECHO.split())
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ECHO


class City(BaseModel):
    name: str
    population: int
    tags: list[str]


def test_structured_output_parse_with_pydantic_model(client: OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.parse(model="openai/gpt-4o", messages=MESSAGES, response_format=City)

    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City)
    sent = fake.chat_requests()[0]["json"]["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "City"


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, max_tokens=3)

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Echo: tell me"
    assert fake.chat_requests()[0]["json"]["max_tokens"] == 3


def test_bad_token_is_authentication_error(serve_url: str) -> None:
    with OpenAI(base_url=f"{serve_url}/chat", api_key="not-a-jwt", max_retries=0, timeout=10.0) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert caught.value.body.get("code") == 401 or caught.value.body.get("type")


def test_token_signed_with_another_secret_is_authentication_error(serve_url: str) -> None:
    forged = mint("another-secret-that-is-also-at-least-32-characters")
    with OpenAI(base_url=f"{serve_url}/chat", api_key=forged, max_retries=0, timeout=10.0) as sdk:
        with pytest.raises(openai.AuthenticationError):
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)


def test_unknown_model_is_bad_request(client: OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="nobody/no-such-model", messages=MESSAGES)
    assert caught.value.status_code == 400
    assert "no-such-model" in caught.value.message


def test_unknown_parameter_is_bad_request(client: OpenAI, fake: FakeUpstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, extra_body={"frobnicate": 3})
    assert "frobnicate" in caught.value.message
    assert fake.chat_requests() == [], "an invalid request must not reach OpenRouter"


def test_upstream_429_with_long_retry_after_is_503_with_retry_after(client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": "3600"}, "repeat": 3})

    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)

    error = caught.value
    assert isinstance(error, openai.InternalServerError)
    assert error.status_code == 503
    retry_after = error.response.headers.get("retry-after")
    assert retry_after is not None
    assert int(retry_after) >= 3000
    # A wait longer than we will sleep fails at once: one upstream attempt, no retry.
    assert len(fake.chat_requests()) == 1


def test_midstream_error_raises_after_first_deltas(client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "midstream_error", "after": 2, "code": 429})

    stream = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
    pieces: list[str] = []
    with pytest.raises(openai.APIError) as caught, stream:
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)

    assert pieces, "the first deltas should arrive before the error"
    text = "".join(pieces)
    assert ECHO.startswith(text)
    assert text == "Echo: tell "
    assert not isinstance(caught.value, openai.APIStatusError), "the HTTP status was already 200"
    assert caught.value.message


async def test_async_client_plain_and_stream(serve_url: str, fake: FakeUpstream) -> None:
    async with AsyncOpenAI(base_url=f"{serve_url}/chat", api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        completion = await sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content == ECHO

        stream = await sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(pieces) == ECHO

        # Concurrent calls on one connection pool: every caller gets its own answer.
        prompts = [f"parallel question {i}" for i in range(12)]
        answers = await asyncio.gather(
            *(
                sdk.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": p}])
                for p in prompts
            )
        )
        assert [a.choices[0].message.content for a in answers] == [f"Echo: {p}" for p in prompts]


def test_streamed_upstream_429_before_first_chunk_is_http_503(client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": "3600"}, "repeat": 3})

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)

    assert caught.value.status_code == 503
    assert caught.value.response.headers.get("retry-after") is not None
    assert not caught.value.response.headers["content-type"].startswith("text/event-stream")


def test_short_retry_after_is_retried_then_succeeds(client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": "0"}})

    completion = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)

    assert completion.choices[0].message.content == ECHO
    assert len(fake.chat_requests()) == 2


def test_persistent_429_after_retries_is_503_with_retry_after(client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": "0"}, "repeat": 5})

    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)

    assert caught.value.status_code == 503
    assert int(caught.value.response.headers["retry-after"]) >= 1
    assert len(fake.chat_requests()) == 2, "OPENROUTER_MAX_RETRIES=1: one attempt and one retry"


def test_request_id_is_echoed(client: OpenAI, fake: FakeUpstream) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=MESSAGES, extra_headers={"X-Request-Id": "e2e-req-42"}
    )
    assert raw.headers["x-request-id"] == "e2e-req-42"
    assert raw.parse().choices[0].message.content == ECHO


def test_metrics_count_requests(serve_url: str, client: OpenAI, fake: FakeUpstream) -> None:
    client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    response = httpx.get(f"{serve_url}/metrics", timeout=5.0)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = [line for line in response.text.splitlines() if line.startswith("orf_requests_total{")]
    assert any('function="chat"' in line and 'status="200"' in line for line in lines), response.text[:2000]


# -- the embedded ledger (SQLite) records what the SDK's calls did ------------------------------------

LOG_BY_GENERATION = "select * from request_log where generation_id = ?"


def test_plain_completion_is_recorded(served: Served, client: OpenAI, fake: FakeUpstream) -> None:
    completion = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert completion.usage is not None

    rows = served.ledger_rows(LOG_BY_GENERATION, completion.id)
    assert len(rows) == 1, "one request_log row per request"
    row = rows[0]
    assert row["user_id"] == USER_ID
    assert row["function"] == "chat"
    assert row["status"] == 200
    assert row["outcome"] == "ok"
    assert row["model"] == "openai/gpt-4o"
    assert row["prompt_tokens"] == completion.usage.prompt_tokens
    assert row["completion_tokens"] == completion.usage.completion_tokens
    assert row["cost_usd"] == pytest.approx((completion.usage.model_extra or {})["cost"])
    daily = served.ledger_rows("select * from usage_daily where user_id = ?", USER_ID)
    assert daily[0]["requests"] >= 1
    assert daily[0]["in_flight"] == 0


def test_streamed_completion_is_recorded_with_usage(served: Served, client: OpenAI, fake: FakeUpstream) -> None:
    # No include_usage: OpenRouter sends usage anyway, and the ledger must get it either way.
    chunks = list(client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True))
    generation = chunks[0].id

    rows = served.ledger_rows(LOG_BY_GENERATION, generation)
    assert len(rows) == 1
    assert rows[0]["status"] == 200
    assert rows[0]["outcome"] == "ok"
    assert rows[0]["completion_tokens"] == len(ECHO.split())
    assert rows[0]["user_id"] == USER_ID


def test_midstream_error_is_recorded_as_upstream_error(served: Served, client: OpenAI, fake: FakeUpstream) -> None:
    fake.script({"fault": "midstream_error", "after": 1, "code": 502})
    stream = client.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
    generation = None
    with pytest.raises(openai.APIError), stream:
        for chunk in stream:
            generation = chunk.id

    assert generation is not None
    rows = served.ledger_rows(LOG_BY_GENERATION, generation)
    assert len(rows) == 1
    assert rows[0]["outcome"] == "upstream_error"


@pytest.fixture(scope="module")
def limited_url(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second ``serve`` whose users may make 2 requests a minute."""
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("limited-ledger"))
    env["DEFAULT_RPM"] = "2"
    with serving("serve (rpm=2)", env) as process:
        yield process.base_url


def test_rate_limit_is_rate_limit_error_with_retry_after(limited_url: str, fake: FakeUpstream) -> None:
    with OpenAI(base_url=f"{limited_url}/chat", api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)

    assert caught.value.status_code == 429
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert len(fake.chat_requests()) == 2, "a refused request never reaches OpenRouter"


def test_anonymous_user_is_permission_denied(serve_url: str, fake: FakeUpstream) -> None:
    with OpenAI(base_url=f"{serve_url}/chat", api_key=mint(is_anonymous=True), max_retries=0, timeout=10.0) as sdk:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 403
    assert fake.chat_requests() == []

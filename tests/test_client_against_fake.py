"""OpenRouterService against the fake OpenRouter over real loopback HTTP: retries, timeouts, streaming.

Nothing sleeps for real: the client's sleep is recorded, and timeouts are set to a few tenths of a second.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from helpers import Sleeps
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_service import (
    OpenRouterAuthError,
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
    OpenRouterRateLimitError,
    OpenRouterResponseError,
    OpenRouterSchemaError,
    OpenRouterServerError,
    OpenRouterService,
    OpenRouterTimeoutError,
    SSEComment,
)

USER = [{"role": "user", "content": "Say hello to the world"}]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenRouter]:
    async with FakeOpenRouter(api_key="sk-or-v1-fake") as server:
        yield server


@pytest.fixture
async def service(fake: FakeOpenRouter, sleeps: Sleeps) -> AsyncIterator[OpenRouterService]:
    async with OpenRouterService(
        "sk-or-v1-fake", base_url=fake.url, timeout=2.0, sleep=sleeps, app_title="Tests"
    ) as svc:
        yield svc


async def test_plain_completion_round_trip(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    completion = await service.complete(USER, model_params={"max_tokens": 100})
    assert completion.content == "Echo: Say hello to the world"
    assert completion.usage is not None and completion.usage["cost"] > 0
    assert completion.attempts == 1
    sent = fake.received[0]
    assert sent.headers["authorization"] == "Bearer sk-or-v1-fake"
    assert sent.headers["x-openrouter-title"] == "Tests"
    assert sent.json()["max_tokens"] == 100


async def test_connections_are_pooled(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    for _ in range(5):
        await service.chat_completion(USER)
    assert fake.connections == 1


async def test_retry_after_then_success(service: OpenRouterService, fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.script(
        {"fault": "status", "status": 429, "headers": {"Retry-After": "1"}},
        {"fault": "status", "status": 502},
        {"fault": "error_200", "code": 503},
    )
    completion = await service.complete(USER)
    assert completion.attempts == 4 and len(fake.received) == 4
    assert sleeps[0] == 1.0 and len(sleeps) == 3


async def test_rate_limit_asking_for_an_hour_fails_at_once(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "status", "status": 429, "headers": {"Retry-After": "3600"}})
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service.chat_completion(USER)
    assert info.value.retry_after == 3600 and len(fake.received) == 1


async def test_wrong_key_is_a_server_side_error(fake: FakeOpenRouter) -> None:
    async with OpenRouterService("sk-or-v1-wrong", base_url=fake.url) as service:
        with pytest.raises(OpenRouterAuthError) as info:
            await service.chat_completion(USER)
    assert (info.value.upstream_status, info.value.retry_after) == (401, None) and len(fake.received) == 1


async def test_unknown_model_is_a_bad_request(service: OpenRouterService) -> None:
    with pytest.raises(OpenRouterBadRequestError, match="not a valid model ID"):
        await service.chat_completion(USER, model_params={"model": "nobody/nothing"})


async def test_hanging_upstream_times_out_without_a_second_billed_attempt(fake: FakeOpenRouter, sleeps: Sleeps) -> None:
    fake.script({"fault": "hang", "repeat": 2})
    async with OpenRouterService(
        "sk-or-v1-fake", base_url=fake.url, timeout=0.2, max_retries=1, sleep=sleeps
    ) as service:
        with pytest.raises(OpenRouterTimeoutError) as info:
            await service.chat_completion(USER)
    assert (info.value.attempts, info.value.retry_after) == (1, 1.0)
    assert len(fake.received) == 1


async def test_slow_reply_within_timeout_succeeds(fake: FakeOpenRouter, service: OpenRouterService) -> None:
    fake.script({"fault": "slow", "delay": 0.1})
    assert (await service.complete(USER)).attempts == 1


async def test_connection_reset_is_retried(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "reset"})
    completion = await service.complete(USER)
    assert completion.attempts == 2


async def test_cut_response_is_retried_then_reported(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "cut", "after": 1, "repeat": 4})
    with pytest.raises(OpenRouterConnectionError) as info:
        await service.chat_completion(USER)
    assert info.value.attempts == 4


async def test_unreachable_upstream(sleeps: Sleeps) -> None:
    async with OpenRouterService("k", base_url="http://127.0.0.1:9/api/v1", max_retries=1, sleep=sleeps) as service:
        with pytest.raises(OpenRouterConnectionError):
            await service.chat_completion(USER)


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ({"fault": "malformed"}, OpenRouterResponseError),
        ({"fault": "empty_choices"}, OpenRouterResponseError),
        ({"fault": "finish_error", "code": 502, "repeat": 4}, OpenRouterServerError),
    ],
)
async def test_unusable_200_answers(
    service: OpenRouterService, fake: FakeOpenRouter, step: dict[str, object], error: type[Exception]
) -> None:
    fake.script(step)
    with pytest.raises(error):
        await service.chat_completion(USER)


async def test_structured_output_with_reask(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "strict": True,
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    fake.script({"fault": "reply", "content": '{"town": "Paris"}'}, {"fault": "reply", "content": '{"city": "Paris"}'})
    completion = await service.complete(USER, response_format=fmt)
    assert completion.parsed == {"city": "Paris"}
    assert len(fake.received) == 2


async def test_structured_output_failure(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "reply", "content": "Sure! Here is JSON", "repeat": 2})
    with pytest.raises(OpenRouterSchemaError) as info:
        await service.chat_completion(USER, response_format={"type": "json_object"})
    assert info.value.raw_content == "Sure! Here is JSON"


async def test_default_schema_reply_from_fake_validates(service: OpenRouterService) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "n",
            "strict": True,
            "schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}, "required": ["n"]},
        },
    }
    assert (await service.complete(USER, response_format=fmt)).parsed == {"n": 3}


# -- streaming --------------------------------------------------------------------------------------


async def test_stream_round_trip_with_usage(service: OpenRouterService) -> None:
    stream = service.stream_chat_completion(USER)
    events = [e async for e in stream.events()]
    assert isinstance(events[0], SSEComment)
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e["choices"]
    )
    assert text == "Echo: Say hello to the world"
    assert stream.usage is not None and stream.usage["completion_tokens"] == 6
    assert stream.completed and stream.finish_reason == "stop"


async def test_stream_pre_first_chunk_failures_are_retried(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script(
        {"fault": "status", "status": 503}, {"fault": "error_200", "code": 502}, {"fault": "keepalive", "count": 3}
    )
    stream = service.stream_chat_completion(USER)
    chunks = [c async for c in stream]
    assert stream.attempts == 3 and stream.usage is not None and len(chunks) > 3


async def test_stream_mid_error_after_content_is_not_retried(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "midstream_error", "after": 2, "code": 429})
    stream = service.stream_chat_completion(USER)
    got = []
    with pytest.raises(OpenRouterRateLimitError):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 3  # role chunk + two words
    assert len(fake.received) == 1


async def test_cut_stream_is_an_error_after_the_chunks(service: OpenRouterService, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "cut", "after": 2})
    got = []
    with pytest.raises(OpenRouterConnectionError, match="cut|ended"):
        async for chunk in service.stream_chat_completion(USER):
            got.append(chunk)
    assert len(got) == 3 and len(fake.received) == 1


async def test_closing_a_stream_early_closes_the_upstream_connection(fake: FakeOpenRouter) -> None:
    slow = FakeOpenRouter(api_key="sk-or-v1-fake", chunk_delay=0.05)
    async with slow, OpenRouterService("sk-or-v1-fake", base_url=slow.url) as service:
        stream = service.stream_chat_completion(USER)
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(50):
            if slow.active_connections == 0:
                break
            import asyncio

            await asyncio.sleep(0.01)
        assert slow.active_connections == 0


# -- health -----------------------------------------------------------------------------------------


async def test_health_checks(fake: FakeOpenRouter, service: OpenRouterService) -> None:
    assert await service.ahealth_check()
    down = OpenRouterService("k", base_url="http://127.0.0.1:9/api/v1", health_timeout=0.5)
    assert not await down.ahealth_check()
    assert not down.health_check()
    await down.aclose()


def test_sync_health_check_against_threaded_fake() -> None:
    with FakeOpenRouter().running_in_thread() as fake:
        assert OpenRouterService("k", base_url=fake.url).health_check()
        fake.script({"fault": "hang"})  # only chat requests consume steps; /models still answers
        assert OpenRouterService("k", base_url=fake.url, health_timeout=0.5).health_check()


@pytest.fixture(params=["aiohttp", "httpx"])
def transport_choice(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENROUTER_HTTP_TRANSPORT", request.param)
    return str(request.param)


async def test_streams_give_their_connection_back(fake: FakeOpenRouter, transport_choice: str) -> None:
    async with OpenRouterService("sk-or-v1-fake", base_url=fake.url) as service:
        for _ in range(3):
            stream = service.stream_chat_completion(USER)
            assert len([c async for c in stream]) > 1
            assert stream.completed
        await service.chat_completion(USER)
    assert fake.connections == 1


async def test_transport_errors_say_what_happened(fake: FakeOpenRouter, transport_choice: str, sleeps: Sleeps) -> None:
    async with OpenRouterService("k", base_url="http://127.0.0.1:9/api/v1", max_retries=0, sleep=sleeps) as service:
        with pytest.raises(OpenRouterConnectionError, match="ConnectError"):
            await service.chat_completion(USER)
    fake.script({"fault": "reset"}, {"fault": "cut", "after": 1})
    async with OpenRouterService("sk-or-v1-fake", base_url=fake.url, max_retries=0, sleep=sleeps) as service:
        with pytest.raises(OpenRouterConnectionError):
            await service.chat_completion(USER)
        with pytest.raises(OpenRouterConnectionError, match="cut after"):
            [c async for c in service.stream_chat_completion(USER)]
    fake.script({"fault": "hang"})
    async with OpenRouterService("sk-or-v1-fake", base_url=fake.url, max_retries=0, timeout=0.2) as service:
        with pytest.raises(OpenRouterTimeoutError):
            await service.chat_completion(USER)


def test_default_transport_is_aiohttp_unless_switched(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from openrouter_service.transport import default_transport

    monkeypatch.delenv("OPENROUTER_HTTP_TRANSPORT", raising=False)
    assert type(default_transport()).__name__ == "_AiohttpTransport"
    monkeypatch.setenv("OPENROUTER_HTTP_TRANSPORT", "httpx")
    assert isinstance(default_transport(), httpx.AsyncHTTPTransport)

"""OpenRouterService against the fake OpenRouter over real loopback HTTP: retries, timeouts, streaming.

Nothing sleeps for real: the client's sleep is recorded, and timeouts are set to a few tenths of a second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
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
    OpenRouterValidationError,
    RetryPolicy,
    SSEComment,
)

USER = [{"role": "user", "content": "Say hello to the world"}]
NO_JITTER = RetryPolicy(max_retries=3, initial_delay=0.5, jitter=0.0)
# Generous bounds for calls that must end on a sub-second timeout, never seconds of hanging.
SANITY_SECONDS = 5.0


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


def upstream(fake: FakeOpenRouter, sleeps: Sleeps, **kwargs: Any) -> OpenRouterService:
    return OpenRouterService("sk-or-v1-fake", base_url=fake.url, sleep=sleeps, **kwargs)


async def test_a_plain_answer_cut_mid_body_is_not_retried(
    fake: FakeOpenRouter, transport_choice: str, sleeps: Sleeps
) -> None:
    # Status and headers arrived: the generation ran and is billed, so a retry would bill it twice.
    fake.script({"fault": "cut", "repeat": 4})
    async with OpenRouterService("sk-or-v1-fake", base_url=fake.url, sleep=sleeps) as service:
        with pytest.raises(OpenRouterConnectionError) as info:
            await service.chat_completion(USER)
    assert str(info.value) == "The upstream answer was cut off (RemoteProtocolError)."
    assert (info.value.attempts, info.value.retry_after, sleeps, len(fake.received)) == (1, 1.0, [], 1)


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
        fake.script({"fault": "hang"})  # only chat requests consume steps; /key still answers
        assert OpenRouterService("k", base_url=fake.url, health_timeout=0.5).health_check()


async def test_health_proves_the_key_works() -> None:
    """/models answers anyone; /key answers only a key OpenRouter accepts, so a revoked key is unhealthy."""
    with FakeOpenRouter(api_key="sk-or-v1-the-real-one").running_in_thread() as fake:
        good = OpenRouterService("sk-or-v1-the-real-one", base_url=fake.url)
        revoked = OpenRouterService("sk-or-v1-revoked", base_url=fake.url)
        assert good.health_check()
        assert not revoked.health_check()
        assert await good.ahealth_check()
        status = await revoked.acheck_key()
        assert not status.ok
        assert status.detail == "OpenRouter refused the API key (HTTP 401)"
        assert "sk-or-v1" not in (status.detail or "")
        await good.aclose()
        await revoked.aclose()


def test_sync_health_check_uses_the_injected_transport() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={"data": {"limit_remaining": 3.5, "usage": 1.0}})

    service = OpenRouterService(
        "k",
        base_url="https://openrouter.invalid/api/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    assert service.health_check()
    assert seen == ["/api/v1/key"]


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


# -- deadlines -------------------------------------------------------------------------------------------


async def test_a_stream_of_only_keepalives_ends_at_the_first_chunk_timeout(
    fake: FakeOpenRouter, sleeps: Sleeps
) -> None:
    fake.script({"fault": "keepalive", "count": 1000, "delay": 0.02})
    started = time.perf_counter()
    async with upstream(fake, sleeps, first_chunk_timeout=0.3) as service:
        stream = service.stream_chat_completion(USER)
        with pytest.raises(OpenRouterTimeoutError, match=r"^OpenRouter sent no data within 0\.3 s\.$") as info:
            [c async for c in stream]
    assert time.perf_counter() - started < SANITY_SECONDS
    assert (info.value.attempts, stream.chunks, len(fake.received), sleeps) == (1, 0, 1, [])


async def test_a_stream_that_outlasts_the_deadline_ends_with_a_timeout(sleeps: Sleeps) -> None:
    slow = FakeOpenRouter(api_key="sk-or-v1-fake", chunk_delay=0.2)
    async with slow, upstream(slow, sleeps, deadline=0.5) as service:
        stream = service.stream_chat_completion(USER)
        with pytest.raises(OpenRouterTimeoutError, match=r"^OpenRouter did not finish within the 0\.5 s deadline\.$"):
            [c async for c in stream]
    assert stream.chunks >= 1 and not stream.completed and len(slow.received) == 1


async def test_a_plain_call_that_outlasts_the_deadline_ends_with_a_timeout(
    fake: FakeOpenRouter, sleeps: Sleeps
) -> None:
    fake.script({"fault": "slow", "delay": 3.0})
    started = time.perf_counter()
    async with upstream(fake, sleeps, timeout=10.0, deadline=0.3) as service:
        with pytest.raises(OpenRouterTimeoutError, match=r"^OpenRouter did not finish within the 0\.3 s deadline\.$"):
            await service.chat_completion(USER)
    assert time.perf_counter() - started < SANITY_SECONDS
    assert len(fake.received) == 1


# -- invalid HTTP ------------------------------------------------------------------------------------------


UNREACHABLE = "Could not reach OpenRouter (RemoteProtocolError)."
CUT_OFF = "The upstream answer was cut off (RemoteProtocolError)."
BAD_STATUS_LINE = "THIS IS NOT HTTP\r\n\r\n"
BAD_HEADER = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header\r\n\r\n{}"
BAD_CHUNK = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("garbage", "plain", "streamed"),
    [
        (BAD_STATUS_LINE, (UNREACHABLE, 4), (UNREACHABLE, 4)),
        (BAD_HEADER, (UNREACHABLE, 4), (UNREACHABLE, 4)),
        # aiohttp reads the bad framing with the head: no answer began. httpx reads it with the body:
        # a plain answer with status 200 began (billed, not retried); a stream had no chunk yet.
        (BAD_CHUNK, {"aiohttp": (UNREACHABLE, 4), "httpx": (CUT_OFF, 1)}, (UNREACHABLE, 4)),
    ],
)
async def test_invalid_http_is_retried_before_an_answer_began_then_reported_as_unreachable(
    fake: FakeOpenRouter,
    transport_choice: str,
    sleeps: Sleeps,
    garbage: str,
    plain: tuple[str, int] | dict[str, tuple[str, int]],
    streamed: tuple[str, int],
) -> None:
    expected = plain[transport_choice] if isinstance(plain, dict) else plain
    fake.script({"fault": "garbage", "bytes": garbage, "repeat": 8})
    async with upstream(fake, sleeps, retry_policy=NO_JITTER) as service:
        with pytest.raises(OpenRouterConnectionError) as info:
            await service.chat_completion(USER)
        assert (str(info.value), info.value.attempts, info.value.retry_after) == (*expected, 1.0)
        with pytest.raises(OpenRouterConnectionError) as info:
            [c async for c in service.stream_chat_completion(USER)]
        assert (str(info.value), info.value.attempts, info.value.retry_after) == (*streamed, 1.0)


async def test_invalid_http_before_an_answer_is_retried_until_it_succeeds(
    fake: FakeOpenRouter, transport_choice: str, sleeps: Sleeps
) -> None:
    fake.script({"fault": "garbage", "repeat": 3})
    async with upstream(fake, sleeps, retry_policy=NO_JITTER) as service:
        completion = await service.complete(USER)
    assert (completion.attempts, len(fake.received), sleeps) == (4, 4, [0.5, 1.0, 2.0])


async def test_eight_malformed_answers_are_retried_then_unreachable_never_internal(
    fake: FakeOpenRouter, transport_choice: str, sleeps: Sleeps
) -> None:
    fake.script({"fault": "garbage", "repeat": 8})
    async with upstream(fake, sleeps, retry_policy=NO_JITTER) as service:
        for _ in range(2):
            with pytest.raises(
                OpenRouterConnectionError, match=r"^Could not reach OpenRouter \(RemoteProtocolError\)\.$"
            ) as info:
                await service.chat_completion(USER)
            assert (info.value.attempts, info.value.retry_after) == (4, 1.0)
    assert len(fake.received) == 8


async def test_the_fake_answers_garbage_as_asked(fake: FakeOpenRouter) -> None:
    fake.script({"fault": "garbage", "bytes": "NONSENSE"})
    reader, writer = await asyncio.open_connection(fake.host, fake.port)
    body = json.dumps({"messages": USER}).encode()
    writer.write(
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-or-v1-fake\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    assert await reader.read() == b"NONSENSE"
    writer.close()


async def test_a_remote_schema_ref_is_neither_fetched_nor_sent(
    service: OpenRouterService, fake: FakeOpenRouter
) -> None:
    ref = f"{fake.url}/models"  # the fake answers GET /models and records it: any fetch would show
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "strict": True, "schema": {"$ref": ref}}}
    with pytest.raises(OpenRouterValidationError, match=r"^response_format\.json_schema\.schema: \$ref "):
        await service.complete(USER, response_format=fmt)
    assert fake.received == []

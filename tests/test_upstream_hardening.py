"""What a hostile or broken upstream can no longer do to a call: leak our key through its error text,
hand us an infinite Retry-After, make us buffer without bound, or leave an error without its attempts.
Over httpx.MockTransport for exact bodies; deadlines and invalid HTTP, which need real sockets, are in
test_client_against_fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable

import httpx
import pytest

from helpers import Sleeps, completion_body, json_response
from openrouter_service import (
    OpenRouterBadRequestError,
    OpenRouterRateLimitError,
    OpenRouterResponseError,
    OpenRouterServerError,
    OpenRouterService,
    OpenRouterTimeoutError,
    RetryPolicy,
)
from openrouter_service.errors import UPSTREAM_MESSAGE_CHARS
from openrouter_service.settings import ClientSettings
from openrouter_service.sse import iter_lines

Build = Callable[..., tuple[OpenRouterService, list[httpx.Request]]]
USER = [{"role": "user", "content": "Hi"}]
KEY = "sk-or-v1-0123456789abcdef0123456789abcdef"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
NO_JITTER = RetryPolicy(max_retries=3, initial_delay=0.5, jitter=0.0)


# -- upstream error text -----------------------------------------------------------------------------------


async def test_upstream_error_text_is_masked_and_capped(make_service: Build) -> None:
    message = f"Invalid key {KEY}; header was Bearer abc.def-ghi, token {JWT}. " + "x" * 3000
    service, _ = make_service(lambda r: json_response(400, {"error": {"code": 400, "message": message}}))
    with pytest.raises(OpenRouterBadRequestError) as info:
        await service.chat_completion(USER)
    text = str(info.value)
    assert text.startswith("Invalid key ***; header was Bearer ***, token ***. xxx")
    assert (len(text), text[-1], info.value.message) == (UPSTREAM_MESSAGE_CHARS, "…", text)


async def test_our_key_is_masked_whatever_its_shape(make_service: Build) -> None:
    seen: list[httpx.Request] = []
    gateway_key = "helicone-7f3a9c2e5b1d"

    def echo(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return json_response(400, {"error": {"code": 400, "message": f"bad key {gateway_key}"}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(echo))
    service = OpenRouterService(gateway_key, http_client=client)
    with pytest.raises(OpenRouterBadRequestError, match=r"^bad key \*\*\*$"):
        await service.chat_completion(USER)
    assert seen[0].headers["authorization"] == f"Bearer {gateway_key}"


@pytest.mark.parametrize("code", ["9" * 5000, "4290", True])
async def test_an_odd_upstream_error_code_is_no_crash(make_service: Build, code: object) -> None:
    service, _ = make_service(lambda r: json_response(200, {"error": {"code": code, "message": "odd"}}), max_retries=0)
    with pytest.raises(OpenRouterServerError) as info:
        await service.chat_completion(USER)
    assert info.value.upstream_status == 502


# -- Retry-After -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hint", ["inf", "nan", "-inf", "1e400"])
async def test_a_non_finite_retry_after_is_ignored(make_service: Build, sleeps: Sleeps, hint: str) -> None:
    busy = json_response(429, {"error": {"code": 429, "message": "slow down"}}, {"Retry-After": hint})
    service, seen = make_service(lambda r: busy, retry_policy=NO_JITTER)
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service.chat_completion(USER)
    assert (sleeps, info.value.retry_after, len(seen)) == ([0.5, 1.0, 2.0], 4.0, 4)


async def test_an_absurd_retry_after_is_capped_and_not_slept(make_service: Build, sleeps: Sleeps) -> None:
    busy = json_response(429, {"error": {"code": 429, "message": "slow down"}}, {"Retry-After": "1e12"})
    service, seen = make_service(lambda r: busy)
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service.chat_completion(USER)
    assert (sleeps, info.value.retry_after, len(seen)) == ([], 86400.0, 1)


# -- response size -----------------------------------------------------------------------------------------


async def test_a_plain_answer_over_the_cap_is_refused_and_not_retried(make_service: Build) -> None:
    big = json_response(200, completion_body("x" * 5000))
    service, seen = make_service(lambda r: big, max_response_bytes=4096)
    with pytest.raises(OpenRouterResponseError, match=r"^OpenRouter sent an answer larger than 4096 bytes\.$") as info:
        await service.chat_completion(USER)
    assert (info.value.upstream_status, info.value.attempts, info.value.retry_after, len(seen)) == (200, 1, None, 1)


class _Endless(httpx.AsyncByteStream):
    """A body that never ends and never sends a newline; counts what was read of it."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += 1024
            yield b"x" * 1024


async def test_a_plain_answer_without_length_is_cut_at_the_cap(make_service: Build) -> None:
    body = _Endless()
    service, seen = make_service(lambda r: httpx.Response(200, stream=body), max_response_bytes=8192)
    with pytest.raises(OpenRouterResponseError, match="larger than 8192 bytes"):
        await service.chat_completion(USER)
    assert (body.sent, len(seen)) == (9 * 1024, 1)


async def test_an_error_answer_over_the_cap_is_refused_too(make_service: Build) -> None:
    body = _Endless()
    service, seen = make_service(lambda r: httpx.Response(503, stream=body), max_response_bytes=8192)
    with pytest.raises(OpenRouterResponseError, match="larger than 8192 bytes") as info:
        await service.chat_completion(USER)
    assert (info.value.upstream_status, len(seen)) == (None, 1)


async def test_a_stream_line_without_end_is_cut_at_the_cap(make_service: Build) -> None:
    body = _Endless()
    sse = httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})
    service, seen = make_service(lambda r: sse, max_response_bytes=8192)
    with pytest.raises(OpenRouterResponseError, match=r"^OpenRouter sent a stream event larger than 8192 bytes\.$"):
        [c async for c in service.stream_chat_completion(USER)]
    assert (body.sent, len(seen)) == (9 * 1024, 1)


async def test_a_stream_event_of_many_lines_over_the_cap_is_refused(make_service: Build) -> None:
    lines = b"".join(b"data: " + b"y" * 1000 + b"\n" for _ in range(10)) + b"\n"
    sse = httpx.Response(200, content=lines, headers={"content-type": "text/event-stream"})
    service, seen = make_service(lambda r: sse, max_response_bytes=4096)
    with pytest.raises(OpenRouterResponseError, match="larger than 4096 bytes"):
        [c async for c in service.stream_chat_completion(USER)]
    assert len(seen) == 1


async def chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    "parts",
    [
        [b"a\nbb\r\nccc\rdddd\n"],
        [b"a\n", b"bb\r", b"\nccc\r", b"dddd", b"\n"],
        [b"a", b"\nb", b"b\r\n", b"c", b"cc", b"\r", b"dddd\n", b""],
    ],
)
async def test_lines_split_on_every_line_end_across_chunks(parts: list[bytes]) -> None:
    assert [line async for line in iter_lines(chunks(parts), limit=4)] == ["a", "bb", "ccc", "dddd"]


async def test_a_body_nested_too_deeply_to_parse_is_not_json(make_service: Build) -> None:
    deep = httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)
    service, _ = make_service(lambda r: deep)
    with pytest.raises(OpenRouterResponseError, match="not JSON"):
        await service.chat_completion(USER)


# -- deadlines ---------------------------------------------------------------------------------------------


def test_the_limits_come_from_the_environment() -> None:
    settings = ClientSettings.from_env(
        {
            "OPENROUTER_API_KEY": KEY,
            "OPENROUTER_DEADLINE": "90",
            "OPENROUTER_FIRST_CHUNK_TIMEOUT": "20",
            "OPENROUTER_MAX_RESPONSE_BYTES": "65536",
        }
    )
    service = settings.build_service()
    assert (service.deadline, service.first_chunk_timeout, service.max_response_bytes) == (90.0, 20.0, 65536)
    defaults = ClientSettings.from_env({}).build_service(api_key=KEY)
    assert (defaults.deadline, defaults.first_chunk_timeout, defaults.max_response_bytes) == (300.0, 120.0, 8388608)


# -- attempts on every error -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [b"[1, 2]", b'"text"', b"null", b"not json"])
async def test_a_bad_first_stream_event_reports_its_attempt(make_service: Build, event: bytes) -> None:
    body = b"data: " + event + b"\n\n"
    service, seen = make_service(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    stream = service.stream_chat_completion(USER)
    with pytest.raises(OpenRouterResponseError) as info:
        [c async for c in stream]
    assert (info.value.attempts, stream.attempts, len(seen)) == (1, 1, 1)


# -- health reads no more of /key than /key can be ------------------------------------------------------


async def test_key_check_stops_reading_an_endless_answer(make_service: Build) -> None:
    """An upstream (or a man in the middle) answering GET /key with an endless body costs nothing."""
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for i in range(10_000):  # 10 GB if anyone read it
            pulled.append(i)
            yield b"x" * (1 << 20)

    service, requests = make_service(lambda r: httpx.Response(200, content=endless()))
    status = await service.acheck_key()
    assert not status.ok
    assert requests[0].url.path.endswith("/key")
    assert requests[0].headers["authorization"].startswith("Bearer ")
    assert len(pulled) <= 2, "the body was read past the cap"


@pytest.mark.parametrize(
    ("status", "body", "ok", "remaining"),
    [
        (200, {"data": {"limit": 10, "limit_remaining": 0.25, "usage": 9.75}}, True, 0.25),
        (200, {"data": {"limit": None, "limit_remaining": None, "usage": 3}}, True, None),
        (200, {"data": {"limit_remaining": "lots"}}, True, None),
        (401, {"error": {"code": 401, "message": "User not found."}}, False, None),
        (500, {"error": {"code": 500, "message": "oops"}}, False, None),
    ],
)
async def test_key_check_reads_what_openrouter_says(
    make_service: Build, status: int, body: dict[str, object], ok: bool, remaining: float | None
) -> None:
    service, _ = make_service(lambda r: json_response(status, body))
    checked = await service.acheck_key()
    assert (checked.ok, checked.limit_remaining) == (ok, remaining)


# -- a streamed read the transport bounds arms no timer of ours -----------------------------------------


async def test_a_read_bounded_well_before_the_deadline_arms_no_timer() -> None:
    import asyncio

    from openrouter_service.attempts import Attempts, Deadline

    loop = Attempts(RetryPolicy(), asyncio.sleep, timeout=30.0, deadline=Deadline.starting_now(300.0, 120.0))
    attempt = await anext(loop)
    assert not isinstance(attempt.limit(first_chunk=True, read_bound=30.0), asyncio.Timeout)
    assert isinstance(attempt.limit(first_chunk=True, read_bound=119.5), asyncio.Timeout)  # first chunk due sooner
    assert isinstance(attempt.limit(first_chunk=True), asyncio.Timeout)  # no bound known: always a timer
    attempt.delivered()
    assert not isinstance(attempt.limit(first_chunk=True, read_bound=119.5), asyncio.Timeout)
    assert isinstance(attempt.limit(first_chunk=True, read_bound=299.5), asyncio.Timeout)


async def _hanging_stream_server() -> tuple[object, str]:
    """A local OpenRouter that opens a stream, sends one chunk, then goes silent."""
    import asyncio

    first = b'data: {"id":"gen-1","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}\n\n'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await asyncio.sleep(10)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/api/v1"


@pytest.mark.parametrize(
    ("timeout", "deadline", "error", "message"),
    [
        (0.3, 60.0, OpenRouterTimeoutError, "cut after 1 chunks"),  # the transport's read timeout, no timer
        (30.0, 0.4, OpenRouterTimeoutError, "0.4 s deadline"),  # the deadline is near: our timer
    ],
)
async def test_a_silent_stream_still_ends_on_its_read_timeout_or_its_deadline(
    timeout: float, deadline: float, error: type[Exception], message: str
) -> None:
    import time

    server, url = await _hanging_stream_server()
    service = OpenRouterService(KEY, base_url=url, timeout=timeout, deadline=deadline, max_retries=0)
    started = time.monotonic()
    try:
        with pytest.raises(error, match=message):
            [c async for c in service.stream_chat_completion(USER)]
    finally:
        await service.aclose()
        server.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 3.0

"""Streaming over httpx.MockTransport: SSE parsing, usage, mid-stream errors, retries before the first chunk."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from helpers import Sleeps, completion_body, json_response
from openrouter_service import (
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterRateLimitError,
    OpenRouterResponseError,
    OpenRouterService,
    OpenRouterValidationError,
    RetryPolicy,
    SSEComment,
)
from openrouter_service.sse import SSEData, iter_sse

Build = Callable[..., tuple[OpenRouterService, list[httpx.Request]]]
USER = [{"role": "user", "content": "Hi"}]
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost": 0.00001}


def chunk(content: str | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    body: dict[str, Any] = {
        "id": "gen-9",
        "object": "chat.completion.chunk",
        "model": "openai/gpt-4o",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    body.update(extra)
    return body


def sse(*events: dict[str, Any] | str) -> bytes:
    out = []
    for event in events:
        if isinstance(event, str):
            out.append(event + "\n\n")
        else:
            out.append(f"data: {json.dumps(event)}\n\n")
    return "".join(out).encode()


def stream_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


HAPPY = sse(
    ": OPENROUTER PROCESSING",
    chunk("Hel"),
    chunk("lo"),
    chunk(finish="stop"),
    {"id": "gen-9", "object": "chat.completion.chunk", "choices": [], "usage": USAGE},
    "data: [DONE]",
)


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def test_sse_parser_joins_multiline_data_skips_fields_and_reports_comments() -> None:
    events = [
        e
        async for e in iter_sse(
            lines(": ping", "event: message", "id: 7", 'data: {"a":', "data: 1}", "", "retry: 5", "data: [DONE]")
        )
    ]
    assert events == [SSEComment("ping"), SSEData('{"a":\n1}'), SSEData("[DONE]")]


async def test_sse_parser_accepts_crlf_and_no_space_after_colon() -> None:
    events = [e async for e in iter_sse(lines("data:x\r", "\r", "data: y", ""))]
    assert events == [SSEData("x"), SSEData("y")]


async def test_stream_yields_chunks_and_exposes_usage(make_service: Build) -> None:
    service, seen = make_service(lambda r: stream_response(HAPPY))
    stream = service.stream_chat_completion(USER, model_params={"temperature": 0})
    text = "".join([c["choices"][0]["delta"].get("content", "") async for c in stream if c["choices"]])
    assert text == "Hello"
    assert stream.usage == USAGE
    assert (stream.generation_id, stream.finish_reason, stream.completed, stream.attempts) == ("gen-9", "stop", True, 1)
    body = json.loads(seen[0].content)
    assert body["stream"] is True and body["temperature"] == 0


async def test_events_pass_keepalive_comments_on(make_service: Build) -> None:
    service, _ = make_service(lambda r: stream_response(HAPPY))
    events = [e async for e in service.stream_chat_completion(USER).events()]
    assert events[0] == SSEComment("OPENROUTER PROCESSING")
    assert sum(isinstance(e, dict) for e in events) == 4


async def test_validation_happens_before_streaming(make_service: Build) -> None:
    service, seen = make_service(lambda r: stream_response(HAPPY))
    with pytest.raises(OpenRouterValidationError):
        service.stream_chat_completion([{"role": "user"}])
    assert seen == []


async def test_mid_stream_error_raises_after_yielding_what_came_before(make_service: Build) -> None:
    error_chunk = chunk(
        "",
        "error",
        error={"code": 429, "message": "Rate limit exceeded", "metadata": {"error_type": "rate_limit_exceeded"}},
    )
    service, seen = make_service(lambda r: stream_response(sse(chunk("Hel"), error_chunk)))
    received: list[str] = []
    stream = service.stream_chat_completion(USER)
    with pytest.raises(OpenRouterRateLimitError) as info:
        async for c in stream:
            received.append(c["choices"][0]["delta"]["content"])
    assert received == ["Hel"]
    assert len(seen) == 1  # never retried once a chunk went out
    assert info.value.upstream_status == 429
    assert stream.error is info.value and not stream.completed


async def test_error_before_first_chunk_is_retried(make_service: Build, sleeps: Sleeps) -> None:
    error_chunk = chunk("", "error", error={"code": 502, "message": "Provider returned error"})
    service, seen = make_service([stream_response(sse(": OPENROUTER PROCESSING", error_chunk)), stream_response(HAPPY)])
    chunks = [c async for c in service.stream_chat_completion(USER)]
    assert len(chunks) == 4 and len(seen) == 2 and len(sleeps) == 1


async def test_pre_stream_http_errors_are_retried(make_service: Build, sleeps: Sleeps) -> None:
    service, _seen = make_service(
        [json_response(503, {"error": {"code": 503, "message": "down"}}, {"Retry-After": "1"}), stream_response(HAPPY)]
    )
    stream = service.stream_chat_completion(USER)
    assert len([c async for c in stream]) == 4
    assert sleeps == [1.0] and stream.attempts == 2


async def test_error_json_instead_of_stream_is_recognised(make_service: Build) -> None:
    service, _ = make_service(lambda r: json_response(200, {"error": {"code": 400, "message": "bad"}}))
    with pytest.raises(Exception, match="bad"):
        [c async for c in service.stream_chat_completion(USER)]


async def test_stream_ending_without_done_or_finish_is_an_error(make_service: Build) -> None:
    service, _ = make_service(lambda r: stream_response(sse(chunk("Hel"))))
    with pytest.raises(OpenRouterConnectionError, match="without finishing"):
        [c async for c in service.stream_chat_completion(USER)]


async def test_non_json_event_is_a_clear_error(make_service: Build) -> None:
    service, _ = make_service(lambda r: stream_response(b"data: {nope\n\n"))
    with pytest.raises(OpenRouterResponseError, match="not JSON"):
        [c async for c in service.stream_chat_completion(USER)]


async def test_aclose_stops_reading(make_service: Build) -> None:
    service, _ = make_service(lambda r: stream_response(HAPPY))
    stream = service.stream_chat_completion(USER)
    async for _ in stream:
        break
    await stream.aclose()
    assert not stream.completed and stream.chunks == 1


class _ThenFails(httpx.AsyncByteStream):
    """A body that delivers ``data`` and then resets the connection, or goes silent."""

    def __init__(self, data: bytes, *, hang: bool = False) -> None:
        self.data = data
        self.hang = hang

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        if self.hang:
            import asyncio

            await asyncio.sleep(30)
        raise httpx.ReadError("connection reset")


@pytest.mark.parametrize("hang", [False, True])
async def test_a_finished_stream_is_not_failed_by_what_follows_done(
    make_service: Build, monkeypatch: pytest.MonkeyPatch, hang: bool
) -> None:
    from openrouter_service import stream as stream_module

    monkeypatch.setattr(stream_module, "DRAIN_SECONDS", 0.05)
    service, _ = make_service(
        lambda r: httpx.Response(
            200, stream=_ThenFails(HAPPY, hang=hang), headers={"content-type": "text/event-stream"}
        )
    )
    stream = service.stream_chat_completion(USER)
    chunks = [c async for c in stream]
    assert len(chunks) == 4
    assert stream.completed
    assert stream.usage == USAGE


async def test_exhausted_rate_limit_before_the_stream_says_when_to_retry(make_service: Build) -> None:
    busy = json_response(429, {"error": {"code": 429, "message": "Rate limit exceeded"}})
    service, seen = make_service(lambda r: busy, max_retries=1)
    with pytest.raises(OpenRouterRateLimitError) as info:
        [c async for c in service.stream_chat_completion(USER)]
    assert (info.value.upstream_status, info.value.attempts) == (429, 2)
    assert info.value.retry_after == 1.0  # our backoff after attempt 2, without jitter: 0.5 * 2
    assert len(seen) == 2


async def test_transport_error_after_only_keepalives_is_retried(make_service: Build, sleeps: Sleeps) -> None:
    reset = httpx.Response(
        200, stream=_ThenFails(b": OPENROUTER PROCESSING\n\n"), headers={"content-type": "text/event-stream"}
    )
    service, seen = make_service([reset, stream_response(HAPPY)])
    stream = service.stream_chat_completion(USER)
    events = [e async for e in stream.events()]
    assert sum(isinstance(e, dict) for e in events) == 4
    assert (len(seen), stream.attempts, len(sleeps), stream.completed) == (2, 2, 1, True)


async def test_transport_error_after_a_chunk_is_a_cut_stream_not_retried(make_service: Build, sleeps: Sleeps) -> None:
    cut = httpx.Response(200, stream=_ThenFails(sse(chunk("Hel"))), headers={"content-type": "text/event-stream"})
    service, seen = make_service(lambda r: cut)
    stream = service.stream_chat_completion(USER)
    with pytest.raises(OpenRouterConnectionError, match=r"cut after 1 chunks \(ReadError\)") as info:
        [c async for c in stream]
    assert (info.value.attempts, info.value.retry_after) == (1, None)
    assert (len(seen), sleeps, stream.chunks, stream.error) == (1, [], 1, info.value)


async def test_a_retried_attempt_leaves_nothing_of_itself_on_the_stream(make_service: Build) -> None:
    failed = chunk("", "error", error={"code": 502, "message": "Provider returned error"}, id="gen-failed")
    service, _ = make_service([stream_response(sse(failed)), stream_response(HAPPY)])
    stream = service.stream_chat_completion(USER)
    [c async for c in stream]
    assert (stream.generation_id, stream.finish_reason, stream.attempts) == ("gen-9", "stop", 2)


async def test_a_stream_logs_one_line_when_it_ends(make_service: Build, caplog: pytest.LogCaptureFixture) -> None:
    service, _ = make_service(lambda r: stream_response(HAPPY))
    caplog.set_level(logging.INFO, logger="openrouter_service")
    [c async for c in service.stream_chat_completion(USER)]
    assert [r.getMessage() for r in caplog.records] == ["openrouter.call"]
    line = caplog.records[0].json_fields
    assert (line["attempts"], line["generation_id"], line["prompt_tokens"]) == (1, "gen-9", 3)
    assert line["response_preview"] == "<streamed 4 chunks>"


# -- one attempt loop for plain and streamed calls ------------------------------------------------------


def step_reply(step: str, streamed: bool) -> httpx.Response:
    """What upstream answers at one step of a script, in the shape a plain or a streamed call gets."""
    if step == "refused":
        raise httpx.ConnectError("connection refused")
    if step == "ok":
        return stream_response(HAPPY) if streamed else json_response(200, completion_body())
    if step == "error 502 in 200":
        error = {"code": 502, "message": "Provider returned error"}
        return (
            stream_response(sse(chunk("", "error", error=error))) if streamed else json_response(200, {"error": error})
        )
    status, _, hint = step.partition(" retry-after ")
    headers = {"Retry-After": hint} if hint else None
    return json_response(int(status), {"error": {"code": int(status), "message": "no"}}, headers)


@pytest.mark.parametrize(
    ("script", "outcome", "expected_sleeps"),
    [
        (["503 retry-after 1", "429", "ok"], ("ok", 3, None), [1.0, 1.0]),
        (["refused", "error 502 in 200", "ok"], ("ok", 3, None), [0.5, 1.0]),
        (["429", "429", "429"], ("OpenRouterRateLimitError", 3, 2.0), [0.5, 1.0]),
        (["error 502 in 200"] * 3, ("OpenRouterServerError", 3, 2.0), [0.5, 1.0]),
        (["429 retry-after 3600"], ("OpenRouterRateLimitError", 1, 3600.0), []),
        (["402"], ("OpenRouterCreditsError", 1, 0.5), []),
        (["400 retry-after 30"], ("OpenRouterBadRequestError", 1, None), []),
        (["refused"] * 3, ("OpenRouterConnectionError", 3, 1.0), [0.5, 1.0]),
    ],
)
async def test_plain_and_streamed_calls_share_one_attempt_loop(
    make_service: Build, script: list[str], outcome: tuple[str, int, float | None], expected_sleeps: list[float]
) -> None:
    policy = RetryPolicy(max_retries=2, initial_delay=0.5, jitter=0.0)
    for streamed in (False, True):
        steps = list(script)
        sleeps = Sleeps()
        service, seen = make_service(
            lambda r, streamed=streamed, steps=steps: step_reply(steps.pop(0), streamed),
            retry_policy=policy,
            sleep=sleeps,
        )
        try:
            if streamed:
                stream = service.stream_chat_completion(USER)
                assert len([c async for c in stream]) == 4
                got: tuple[str, int, float | None] = ("ok", stream.attempts, None)
            else:
                got = ("ok", (await service.complete(USER)).attempts, None)
        except OpenRouterError as exc:
            got = (type(exc).__name__, exc.attempts, exc.retry_after)
        assert (got, sleeps, len(seen)) == (outcome, expected_sleeps, len(script)), "streamed" if streamed else "plain"


# -- the bytes-level reader and batches (what the functions relay) ---------------------------------------


@pytest.mark.parametrize(
    "parts",
    [
        [b': ping\n\ndata: {"a":\n', b"data: 1}\nevent: x\nid: 2\n\n", b"data: [DONE]"],
        [b"data:x\r", b"\r", b"data: y", b""],
        [b"data: a\r", b"\ndata: b\r\n\r", b"\n:c\r\n\r\ndata"],
        [b"data: \xff\xfe\n\n", b"retry: 10\n\n"],
    ],
)
async def test_the_bytes_reader_reads_what_the_line_reader_reads(parts: list[bytes]) -> None:
    from openrouter_service.sse import SSEReader, iter_lines

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    expected = [
        e.data.encode("utf-8", "replace") if isinstance(e, SSEData) else e
        async for e in iter_sse(iter_lines(chunks(), limit=100), limit=100)
    ]
    reader = SSEReader(100)
    got = [event for part in parts for event in reader.feed(part)] + reader.finish()
    assert [g.decode("utf-8", "replace") if isinstance(g, bytes) else g for g in got] == [
        e.decode("utf-8", "replace") if isinstance(e, bytes) else e for e in expected
    ]


async def test_an_oversized_line_after_good_events_in_one_read_fails_after_them() -> None:
    from openrouter_service.sse import SSEReader

    reader = SSEReader(8)
    assert reader.feed(b"data: 1\n\n" + b"x" * 20 + b"\n") == [b"1"]
    with pytest.raises(OpenRouterResponseError, match="larger than 8 bytes"):
        reader.feed(b"data: 2\n\n")


async def test_batches_pass_a_read_on_at_once_as_it_came(make_service: Build) -> None:
    spaced = sse(chunk("Hel"), chunk("lo"))  # json.dumps with spaces: passed on byte for byte
    service, _ = make_service(
        lambda r: stream_response(HAPPY[: -len(b"data: [DONE]\n\n")] + spaced + b"data: [DONE]\n\n")
    )
    stream = service.stream_chat_completion(USER)
    batches = [b async for b in stream.batches()]
    assert len(batches) == 1  # one read, one batch; [DONE] seen before it went out
    (batch,) = batches
    assert batch[0] == SSEComment("OPENROUTER PROCESSING")
    assert batch[-1] == json.dumps(chunk("lo")).encode()
    assert [json.loads(b)["choices"][:1] for b in batch[1:]] == [
        chunk("Hel")["choices"],
        chunk("lo")["choices"],
        chunk(finish="stop")["choices"],
        [],
        chunk("Hel")["choices"],
        chunk("lo")["choices"],
    ]
    assert (stream.usage, stream.finish_reason, stream.completed, stream.chunks) == (USAGE, "stop", True, 6)


async def test_batches_still_read_chunks_that_carry_errors(make_service: Build) -> None:
    failed = {**chunk("x"), "error": {"code": 502, "message": "provider died"}}
    service, _ = make_service(lambda r: stream_response(sse(chunk("Hel"), failed, chunk("never"))))
    stream = service.stream_chat_completion(USER)
    got: list[list[Any]] = []
    with pytest.raises(OpenRouterError):
        async for batch in stream.batches():
            got.append(batch)
    assert [len(b) for b in got] == [1] and stream.chunks == 1  # what came before the error went out first


async def test_batches_put_a_multiline_event_on_one_line(make_service: Build) -> None:
    body = b'data: {"id": "gen-9",\ndata: "choices": [{"delta": {"content": "a"}, "finish_reason": "stop"}]}\n\n'
    service, _ = make_service(lambda r: stream_response(body + b"data: [DONE]\n\n"))
    (batch,) = [b async for b in service.stream_chat_completion(USER).batches()]
    assert batch == [b'{"id":"gen-9","choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}']


async def test_batches_read_chunks_whose_keys_are_escaped(make_service: Build) -> None:
    """`"\\u0065rror"` is valid JSON for `"error"`: an upstream cannot slip an error or usage past the filter."""
    escaped_error = b'{"id":"gen-1","\\u0065rror":{"code":502,"message":"provider died"}}'
    escaped_usage = b'{"id":"gen-1","choices":[],"\\u0075sage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"cost":0.5}}'
    service, _ = make_service(
        lambda r: stream_response(sse(chunk("Hel")) + b"data: " + escaped_usage + b"\n\ndata: [DONE]\n\n")
    )
    stream = service.stream_chat_completion(USER)
    _ = [b async for b in stream.batches()]
    assert stream.usage is not None and stream.usage["cost"] == 0.5

    service, _ = make_service(lambda r: stream_response(sse(chunk("Hel")) + b"data: " + escaped_error + b"\n\n"))
    with pytest.raises(OpenRouterError):
        async for _batch in service.stream_chat_completion(USER).batches():
            pass

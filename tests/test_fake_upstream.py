"""Tests for the fake OpenRouter server (openrouter_devtools.fake_upstream), all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jsonschema
import pytest

from openrouter_devtools.fake_upstream import (
    MODELS,
    FakeOpenRouter,
    ReceivedRequest,
    main,
    minimal_instance,
)

AUTH = {"Authorization": "Bearer sk-or-v1-test"}
USER_MSG = [{"role": "user", "content": "hello there world"}]
GEN_ID_RE = re.compile(r"^gen-\d+-[A-Za-z0-9]{20}$")
# One TLS context for every client: httpx builds (slowly) a fresh one per client otherwise.
TLS = ssl.create_default_context()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenRouter]:
    async with FakeOpenRouter() as server:
        yield server


@pytest.fixture
async def client(fake: FakeOpenRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, timeout=5, trust_env=False, verify=TLS) as c:
        yield c


def root(fake: FakeOpenRouter) -> str:
    return f"http://127.0.0.1:{fake.port}"


def parse_sse(text: str) -> tuple[list[str], list[Any]]:
    """Split an SSE body into (ordered list of event kinds, parsed payloads).

    kinds: "comment", "data" (JSON chunk) or "done"; payloads hold the parsed JSON for "data".
    """
    kinds: list[str] = []
    payloads: list[Any] = []
    for block in text.split("\n\n"):
        if not block:
            continue
        if block.startswith(":"):
            assert block == ": OPENROUTER PROCESSING"
            kinds.append("comment")
        elif block == "data: [DONE]":
            kinds.append("done")
        else:
            assert block.startswith("data: ")
            kinds.append("data")
            payloads.append(json.loads(block[len("data: ") :]))
    return kinds, payloads


async def stream_text(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, str]:
    async with client.stream("POST", "/chat/completions", json={**body, "stream": True}) as response:
        raw = await response.aread()
    return response, raw.decode()


async def raw_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------------
# Default replies
# --------------------------------------------------------------------------------------------------


async def test_default_reply_shape_and_usage(client: httpx.AsyncClient) -> None:
    messages = [{"role": "system", "content": "You are helpful."}, *USER_MSG]  # 16 + 17 chars
    r = await client.post("/chat/completions", json={"model": "openai/gpt-4o-mini", "messages": messages})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    data = r.json()
    assert GEN_ID_RE.match(data["id"])
    assert r.headers["x-generation-id"] == data["id"]
    assert data["provider"] == "FakeProvider"
    assert data["model"] == "openai/gpt-4o-mini"
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert abs(data["created"] - time.time()) < 60
    assert data["system_fingerprint"] is None
    assert data["choices"] == [
        {
            "index": 0,
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "stop",
            "message": {"role": "assistant", "content": "Echo: hello there world", "refusal": None, "reasoning": None},
        }
    ]
    assert data["usage"] == {
        "prompt_tokens": 33 // 4,
        "completion_tokens": 4,
        "total_tokens": 12,
        "cost": round(8 * 1e-6 + 4 * 2e-6, 10),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
    }


async def test_default_model_content_parts_and_min_tokens(client: httpx.AsyncClient) -> None:
    parts = [
        {"type": "text", "text": "hi"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "you"},
    ]
    r = await client.post("/chat/completions", json={"messages": [{"role": "user", "content": parts}]})
    data = r.json()
    assert data["model"] == "openai/gpt-4o"
    assert data["choices"][0]["message"]["content"] == "Echo: hi you"
    assert data["usage"]["prompt_tokens"] == 1  # max(1, 6 // 4)
    assert data["usage"]["completion_tokens"] == 3


async def test_max_tokens_truncates_with_length(client: httpx.AsyncClient) -> None:
    body = {"messages": USER_MSG, "max_tokens": 2}
    data = (await client.post("/chat/completions", json=body)).json()
    choice = data["choices"][0]
    assert choice["message"]["content"] == "Echo: hello"
    assert choice["finish_reason"] == choice["native_finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2

    _, text = await stream_text(client, body)
    _, payloads = parse_sse(text)
    deltas = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert deltas == "Echo: hello"
    assert [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]][-1] == "length"


async def test_json_object_response_format(client: httpx.AsyncClient) -> None:
    body = {"messages": USER_MSG, "response_format": {"type": "json_object"}}
    data = (await client.post("/chat/completions", json=body)).json()
    assert json.loads(data["choices"][0]["message"]["content"]) == {"echo": "hello there world"}


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "score": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 2},
            "kind": {"const": "person"},
            "nick": {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}]},
            "nothing": {"type": "null"},
            "optional": {"type": "string"},
        },
        "required": ["name", "age", "score", "ok", "tags", "kind", "nick", "nothing"],
        "additionalProperties": False,
    },
    {
        "$defs": {"Item": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "when": {"type": "string", "format": "date-time"},
            "choice": {"oneOf": [{"type": "integer", "exclusiveMinimum": 5}, {"type": "string"}]},
            "both": {
                "allOf": [{"$ref": "#/$defs/Item"}, {"properties": {"x": {"type": "boolean"}}, "required": ["x"]}]
            },
        },
        "required": ["items", "when", "choice", "both"],
    },
    {"type": "array", "items": {"type": ["integer", "null"], "maximum": -3}, "minItems": 3},
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_json_schema_minimal_instance_validates(client: httpx.AsyncClient, schema: dict[str, Any]) -> None:
    body = {
        "messages": USER_MSG,
        "response_format": {"type": "json_schema", "json_schema": {"name": "t", "strict": True, "schema": schema}},
    }
    data = (await client.post("/chat/completions", json=body)).json()
    instance = json.loads(data["choices"][0]["message"]["content"])
    jsonschema.validate(instance, schema)


def test_minimal_instance_values() -> None:
    assert minimal_instance(SCHEMAS[0]) == {
        "name": "x",
        "age": 18,
        "score": 0,
        "ok": True,
        "tags": ["a", "a"],
        "kind": "person",
        "nick": "xxx",
        "nothing": None,
    }
    assert minimal_instance({"type": "array", "items": {"type": "integer"}}) == []
    assert minimal_instance({"type": "null"}) is None


# --------------------------------------------------------------------------------------------------
# Validation / auth / other endpoints
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer wrong"}],
)
async def test_auth_401(headers: dict[str, str]) -> None:
    async with (
        FakeOpenRouter(api_key="right") as fake,
        httpx.AsyncClient(base_url=fake.url, trust_env=False, verify=TLS, timeout=5) as c,
    ):
        r = await c.post("/chat/completions", json={"messages": USER_MSG}, headers=headers)
        assert r.status_code == 401
        assert r.json() == {"error": {"code": 401, "message": "No auth credentials found"}}
        ok = await c.post("/chat/completions", json={"messages": USER_MSG}, headers={"Authorization": "Bearer right"})
        assert ok.status_code == 200
        assert (await c.get("/key", headers=headers)).status_code == 401


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"messages": USER_MSG, "model": "nope/model"}), "nope/model is not a valid model ID"),
        (json.dumps({"messages": []}), None),
        (json.dumps({"model": "openai/gpt-4o"}), None),
        (json.dumps(["not", "an", "object"]), None),
        ("{not json", None),
    ],
)
async def test_bad_chat_requests_400(client: httpx.AsyncClient, content: str, message: str | None) -> None:
    r = await client.post("/chat/completions", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == 400
    if message is not None:
        assert error["message"] == message


async def test_models_without_auth_and_prefix(fake: FakeOpenRouter) -> None:
    async with httpx.AsyncClient(trust_env=False, verify=TLS, timeout=5) as c:
        prefixed = (await c.get(fake.url + "/models")).json()
        bare = (await c.get(root(fake) + "/models")).json()
    assert prefixed == bare
    ids = {m["id"] for m in prefixed["data"]}
    assert {
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "anthropic/claude-3-opus",
        "meta-llama/llama-3.3-70b-instruct",
        "mistralai/mistral-7b-instruct:free",
    } <= ids
    for model in prefixed["data"]:
        assert isinstance(model["context_length"], int)
        assert model["architecture"]["output_modalities"] == ["text"]
        assert all(isinstance(v, str) for v in model["pricing"].values())
        float(model["pricing"]["prompt"])
        assert isinstance(model["supported_parameters"], list)
        assert set(model["top_provider"]) == {"context_length", "max_completion_tokens", "is_moderated"}
    assert len(MODELS) == len(prefixed["data"])


async def test_key_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    await client.post("/chat/completions", json={"messages": USER_MSG})
    key = (await client.get("/key")).json()["data"]
    assert key["limit"] is None
    assert key["limit_remaining"] is None
    assert key["limit_reset"] is None
    assert key["is_free_tier"] is False
    assert key["usage"] > 0
    for field in ("label", "usage_daily", "usage_weekly", "usage_monthly"):
        assert field in key
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404
    assert (await client.get("/chat/completions")).status_code == 405


async def test_chunked_request_body(client: httpx.AsyncClient) -> None:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"messages": [{"role": "user", '
        yield b'"content": "chunked body"}]}'

    r = await client.post("/chat/completions", content=gen(), headers={"Content-Type": "application/json"})
    assert r.json()["choices"][0]["message"]["content"] == "Echo: chunked body"


async def test_garbage_gets_400_and_close(fake: FakeOpenRouter) -> None:
    reply = await raw_exchange(fake.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in reply
    reply = await raw_exchange(fake.port, b"POST /chat/completions HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_url_brackets_ipv6() -> None:
    assert FakeOpenRouter("::1", 1234).url == "http://[::1]:1234/api/v1"
    assert FakeOpenRouter(port=99).url == "http://127.0.0.1:99/api/v1"


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------


async def test_stream_framing(client: httpx.AsyncClient) -> None:
    response, text = await stream_text(client, {"messages": USER_MSG, "model": "openai/gpt-4o"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["transfer-encoding"] == "chunked"
    assert text.startswith(": OPENROUTER PROCESSING\n\n")
    kinds, payloads = parse_sse(text)
    assert kinds == ["comment"] + ["data"] * (1 + 4 + 2) + ["done"]
    gen_id = payloads[0]["id"]
    assert GEN_ID_RE.match(gen_id)
    assert response.headers["x-generation-id"] == gen_id
    for p in payloads:
        assert p["id"] == gen_id
        assert p["provider"] == "FakeProvider"
        assert p["model"] == "openai/gpt-4o"
        assert p["object"] == "chat.completion.chunk"
        assert isinstance(p["created"], int)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [p["choices"][0]["delta"]["content"] for p in payloads[1:5]]
    assert words == ["Echo: ", "hello ", "there ", "world"]
    assert "".join(words) == "Echo: hello there world"
    finish = payloads[5]["choices"][0]
    assert finish["delta"] == {}
    assert finish["finish_reason"] == finish["native_finish_reason"] == "stop"
    assert payloads[6]["choices"] == []
    assert payloads[6]["usage"]["completion_tokens"] == 4
    assert payloads[6]["usage"]["cost"] == round(4 * 1e-6 + 4 * 2e-6, 10)


async def test_stream_chunk_delay(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "reply", "content": "a b", "chunk_delay": 0.02})
    start = time.perf_counter()
    _, text = await stream_text(client, {"messages": USER_MSG})
    assert time.perf_counter() - start >= 0.02 * 5  # role, 2 words, finish, usage, [DONE] after the comment
    assert parse_sse(text)[0][-1] == "done"


async def test_constructor_chunk_delay() -> None:
    async with (
        FakeOpenRouter(chunk_delay=0.01) as fake,
        httpx.AsyncClient(base_url=fake.url, headers=AUTH, trust_env=False, verify=TLS) as c,
    ):
        start = time.perf_counter()
        await stream_text(c, {"messages": [{"role": "user", "content": "x"}]})
        assert time.perf_counter() - start >= 0.05


# --------------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------------


async def test_fault_status(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    meta = {"provider_name": "DeepInfra", "raw": "temporarily rate-limited"}
    fake.script(
        {
            "fault": "status",
            "status": 429,
            "headers": {"Retry-After": "1"},
            "message": "Provider returned error",
            "metadata": meta,
        },
        {"fault": "status", "status": 503},
    )
    r = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": {"code": 429, "message": "Provider returned error", "metadata": meta},
        "user_id": "user_fake",
    }
    response, text = await stream_text(client, {"messages": USER_MSG})  # pre-stream errors are plain JSON
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert json.loads(text)["error"]["code"] == 503
    assert (await client.post("/chat/completions", json={"messages": USER_MSG})).status_code == 200


async def test_fault_error_200(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "error_200", "code": 502, "message": "Upstream died", "metadata": {"raw": "x"}, "repeat": 2})
    r = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert r.status_code == 200
    assert r.json() == {"error": {"code": 502, "message": "Upstream died", "metadata": {"raw": "x"}}}
    response, text = await stream_text(client, {"messages": USER_MSG})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "choices" not in json.loads(text)


async def test_fault_finish_error(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "finish_error", "code": 502, "message": "Provider disconnected"})
    data = (await client.post("/chat/completions", json={"messages": USER_MSG})).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "error"
    assert choice["error"]["code"] == 502
    assert choice["error"]["message"] == "Provider disconnected"
    assert isinstance(choice["error"]["metadata"], dict)
    content = choice["message"]["content"]
    assert content
    assert "Echo: hello there world".startswith(content)
    assert content != "Echo: hello there world"
    assert "usage" in data


async def test_fault_empty_choices(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "empty_choices", "repeat": 2})
    data = (await client.post("/chat/completions", json={"messages": USER_MSG})).json()
    assert data["choices"] == []
    assert data["object"] == "chat.completion"
    _, text = await stream_text(client, {"messages": USER_MSG})
    kinds, payloads = parse_sse(text)
    assert kinds == ["comment", "data", "done"]
    assert payloads[0]["choices"] == []
    assert "usage" in payloads[0]


async def test_fault_malformed(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "malformed"})
    r = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.text == '{"id": "gen-broken", "choices": ['
    with pytest.raises(json.JSONDecodeError):
        r.json()


async def test_fault_midstream_error(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script(
        {"fault": "midstream_error", "after": 2, "code": 429, "message": "Rate limit exceeded"},
        {"fault": "midstream_error", "after": 1, "code": 502, "done": True},
    )
    _, text = await stream_text(client, {"messages": USER_MSG})
    kinds, payloads = parse_sse(text)
    assert kinds == ["comment", "data", "data", "data", "data"]
    assert [p["choices"][0]["delta"].get("content") for p in payloads[1:3]] == ["Echo: ", "hello "]
    last = payloads[-1]
    assert last["error"] == {
        "code": 429,
        "message": "Rate limit exceeded",
        "metadata": {"error_type": "rate_limit_exceeded"},
    }
    assert last["choices"] == [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]
    assert last["object"] == "chat.completion.chunk"

    _, text = await stream_text(client, {"messages": USER_MSG})
    kinds, payloads = parse_sse(text)
    assert kinds == ["comment", "data", "data", "data", "done"]
    assert payloads[-1]["error"]["metadata"]["error_type"] == "provider_unavailable"
    assert fake.connections == 1  # the stream ended properly, connection reused


async def test_fault_cut_stream(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "cut", "after": 2})
    received = bytearray()

    async def consume() -> None:
        async with client.stream("POST", "/chat/completions", json={"messages": USER_MSG, "stream": True}) as r:
            async for chunk in r.aiter_bytes():
                received.extend(chunk)

    with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
        await consume()
    kinds, payloads = parse_sse(received.decode())
    assert kinds == ["comment", "data", "data", "data"]
    assert "".join(p["choices"][0]["delta"]["content"] for p in payloads) == "Echo: hello "
    # the client recovers on a fresh connection
    assert (await client.post("/chat/completions", json={"messages": USER_MSG})).status_code == 200
    assert fake.connections == 2


async def test_fault_cut_non_stream(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "cut"})
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/chat/completions", json={"messages": USER_MSG})


async def test_fault_slow(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "slow", "delay": 0.1, "repeat": 2})
    start = time.perf_counter()
    r = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert time.perf_counter() - start >= 0.1
    assert r.json()["choices"][0]["message"]["content"] == "Echo: hello there world"
    start = time.perf_counter()
    _, text = await stream_text(client, {"messages": USER_MSG})
    assert time.perf_counter() - start >= 0.1
    assert parse_sse(text)[0][-1] == "done"


async def test_fault_hang_until_client_disconnects(fake: FakeOpenRouter) -> None:
    fake.script({"fault": "hang"})
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, trust_env=False, verify=TLS, timeout=0.2) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/chat/completions", json={"messages": USER_MSG})
    deadline = time.monotonic() + 2
    while fake.active_connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert fake.active_connections == 0


async def test_fault_hang_stop_is_quick() -> None:
    fake = FakeOpenRouter()
    await fake.start()
    fake.script({"fault": "hang"}, {"fault": "slow", "delay": 30})
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, trust_env=False, verify=TLS, timeout=10) as c:
        tasks = [
            asyncio.create_task(c.post("/chat/completions", json={"messages": USER_MSG})),
            asyncio.create_task(c.post("/chat/completions", json={"messages": USER_MSG, "stream": True})),
        ]
        deadline = time.monotonic() + 2
        while len(fake.received) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.02)
        start = time.perf_counter()
        await asyncio.wait_for(fake.stop(), 1)
        assert time.perf_counter() - start < 0.5
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    assert all(isinstance(res, httpx.TransportError) for res in results)
    assert fake.active_connections == 0
    await fake.stop()  # idempotent


async def test_fault_reset_sends_rst(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "reset", "repeat": 2})
    body = json.dumps({"messages": USER_MSG}).encode()
    request = (
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with pytest.raises(ConnectionResetError):
        await raw_exchange(fake.port, request)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post("/chat/completions", json={"messages": USER_MSG})


async def test_fault_keepalive(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script({"fault": "keepalive", "count": 3, "delay": 0.01}, {"fault": "keepalive", "count": 2})
    _, text = await stream_text(client, {"messages": USER_MSG})
    kinds, payloads = parse_sse(text)
    assert kinds[:4] == ["comment", "comment", "comment", "data"]
    assert kinds[-1] == "done"
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"]) == (
        "Echo: hello there world"
    )
    r = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert r.json()["choices"][0]["finish_reason"] == "stop"


async def test_fault_reply_and_repeat(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    fake.script(
        {
            "fault": "reply",
            "content": "Bonjour tout le monde",
            "usage": {"cost": 0.5},
            "model": "anthropic/claude-3-opus",
            "finish_reason": "content_filter",
            "repeat": 2,
        }
    )
    data = (await client.post("/chat/completions", json={"messages": USER_MSG})).json()
    assert data["model"] == "anthropic/claude-3-opus"
    assert data["choices"][0]["message"]["content"] == "Bonjour tout le monde"
    assert data["choices"][0]["finish_reason"] == "content_filter"
    assert data["usage"]["cost"] == 0.5
    assert data["usage"]["completion_tokens"] == 4
    _, text = await stream_text(client, {"messages": USER_MSG})
    _, payloads = parse_sse(text)
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"]) == (
        "Bonjour tout le monde"
    )
    assert payloads[-1]["usage"]["cost"] == 0.5
    # queue exhausted -> default echo
    data = (await client.post("/chat/completions", json={"messages": USER_MSG})).json()
    assert data["choices"][0]["message"]["content"] == "Echo: hello there world"


def test_script_validation() -> None:
    fake = FakeOpenRouter()
    with pytest.raises(ValueError, match="unknown fault"):
        fake.script({"fault": "explode"})
    with pytest.raises(ValueError, match="repeat"):
        fake.script({"fault": "reply", "repeat": 0})
    with pytest.raises(ValueError, match="status"):
        fake.script({"fault": "status", "status": 42})


# --------------------------------------------------------------------------------------------------
# Connections, recording, control endpoints, thread mode, CLI
# --------------------------------------------------------------------------------------------------


async def test_keepalive_connection_reuse(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    r1 = await client.post("/chat/completions", json={"messages": USER_MSG})
    await stream_text(client, {"messages": USER_MSG})
    r2 = await client.post("/chat/completions", json={"messages": USER_MSG})
    assert r1.status_code == r2.status_code == 200
    assert fake.connections == 1
    r3 = await client.get("/models", headers={"Connection": "close"})
    assert r3.headers["connection"] == "close"
    await client.get("/models")
    assert fake.connections == 2


async def test_stop_closes_idle_connections(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    await client.get("/models")
    assert fake.active_connections == 1
    start = time.perf_counter()
    await asyncio.wait_for(fake.stop(), 1)
    assert time.perf_counter() - start < 0.5
    assert fake.active_connections == 0
    with pytest.raises(httpx.TransportError):
        await client.get("/models")


async def test_received_recording(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    await client.post("/chat/completions?trace=1", json={"messages": USER_MSG}, headers={"X-OpenRouter-Title": "Tests"})
    async with httpx.AsyncClient(trust_env=False, verify=TLS) as bare:
        await bare.get(root(fake) + "/models")
        await bare.get(root(fake) + "/_fake/requests")
    assert len(fake.received) == 2
    first = fake.received[0]
    assert isinstance(first, ReceivedRequest)
    assert first.method == "POST"
    assert first.path == "/api/v1/chat/completions?trace=1"
    assert first.headers["authorization"] == AUTH["Authorization"]
    assert first.headers["x-openrouter-title"] == "Tests"
    assert first.json() == {"messages": USER_MSG}
    assert fake.received[1].path == "/models"
    assert fake.received[1].body == b""
    fake.reset()
    assert fake.received == []


async def test_control_endpoints(fake: FakeOpenRouter, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=root(fake), trust_env=False, verify=TLS, timeout=5) as ctl:
        r = await ctl.post(
            "/_fake/script", json=[{"fault": "status", "status": 402}, {"fault": "reply", "content": "ok"}]
        )
        assert r.status_code == 200
        assert r.json() == {"queued": 2}
        assert (await ctl.post("/_fake/script", json=[{"fault": "bogus"}])).status_code == 400
        assert (await client.post("/chat/completions", json={"messages": USER_MSG})).status_code == 402
        ok = await client.post("/chat/completions", json={"messages": USER_MSG})
        assert ok.json()["choices"][0]["message"]["content"] == "ok"
        await client.post("/chat/completions", content=b"not json", headers={"Content-Type": "application/json"})

        records = (await ctl.get("/_fake/requests")).json()
        assert [rec["method"] for rec in records] == ["POST", "POST", "POST"]
        assert records[0]["path"] == "/api/v1/chat/completions"
        assert records[0]["json"] == {"messages": USER_MSG}
        assert records[0]["headers"]["authorization"] == AUTH["Authorization"]
        assert records[2]["json"] is None

        await ctl.post("/_fake/script", json=[{"fault": "status", "status": 500}])
        assert (await ctl.post("/_fake/reset")).status_code == 200
        assert (await ctl.get("/_fake/requests")).json() == []
        assert (await client.post("/chat/completions", json={"messages": USER_MSG})).status_code == 200
        assert (await ctl.get("/_fake/nothing")).status_code == 404


def test_running_in_thread_with_sync_client() -> None:
    fake = FakeOpenRouter(api_key="secret")
    with fake.running_in_thread() as server:
        assert server is fake
        assert fake.port != 0
        fake.script({"fault": "reply", "content": "from thread"})
        with httpx.Client(
            base_url=fake.url, headers={"Authorization": "Bearer secret"}, trust_env=False, verify=TLS
        ) as c:
            r = c.post("/chat/completions", json={"messages": USER_MSG})
            assert r.json()["choices"][0]["message"]["content"] == "from thread"
            with c.stream("POST", "/chat/completions", json={"messages": USER_MSG, "stream": True}) as s:
                kinds, _ = parse_sse(s.read().decode())
            assert kinds[-1] == "done"
        assert len(fake.received) == 2
    with pytest.raises(httpx.ConnectError), httpx.Client(trust_env=False, verify=TLS) as c:
        c.get(fake.url + "/models", timeout=1)


async def test_cli_main_subprocess() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from openrouter_devtools.fake_upstream import main; sys.exit(main(sys.argv[1:]))",
        "--port",
        "0",
        "--api-key",
        "cli-key",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 5)).decode().strip()
        match = re.fullmatch(r"fake OpenRouter listening on (http://127\.0\.0\.1:\d+/api/v1)", line)
        assert match, line
        async with httpx.AsyncClient(base_url=match.group(1), trust_env=False, verify=TLS, timeout=5) as c:
            assert (await c.get("/models")).status_code == 200
            r = await c.post("/chat/completions", json={"messages": USER_MSG}, headers={"Authorization": "Bearer x"})
            assert r.status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_main_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--host", "127.0.0.1", "--port", str(port)]) == 1
    assert "cannot listen" in capsys.readouterr().err

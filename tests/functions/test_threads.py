"""Conversations through the real chat function (docs/threads.md): threads kept in the embedded SQLite
store, history assembled by the server, answers stored plain and streamed, stop, hang-up and resume.

Plain turns go through httpx.ASGITransport; anything that must hang up or run two requests at once goes
through uvicorn on loopback (ASGITransport cannot disconnect mid-body).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from helpers import UPSTREAM_KEY, USER_ID, bearer, mint
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import FunctionsRouter
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.runtime import Runtime, get_runtime
from openrouter_functions.threads import TurnRequest
from openrouter_functions.threads.sqlite import SQLiteThreadStore

OTHER_USER = "00000000-0000-4000-8000-00000000000b"


def turn(text: str, thread: str = "new", **extra: Any) -> dict[str, Any]:
    return {"thread_id": thread, "messages": [{"role": "user", "content": text}], **extra}


def sent_messages(fake: FakeOpenRouter) -> list[dict[str, Any]]:
    """The messages of the last chat request upstream got."""
    chats = [r for r in fake.received if r.path.endswith("/chat/completions")]
    return list(chats[-1].json()["messages"])


def store() -> SQLiteThreadStore:
    threads = get_runtime().threads
    assert isinstance(threads, SQLiteThreadStore)
    return threads


async def messages_of(thread_id: str) -> list[dict[str, Any]]:
    rows = [m for m in await store().rows("messages") if m["thread_id"] == thread_id]
    return sorted(rows, key=lambda m: m["seq"])


async def test_a_new_thread_then_a_turn_that_carries_its_history(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    first = await client.post(
        "/chat",
        json={
            "thread_id": "new",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        },
        headers=bearer(),
    )
    assert first.status_code == 200, first.text
    thread_id, message_id = first.headers["X-Thread-Id"], first.headers["X-Message-Id"]
    assert first.json()["choices"][0]["message"]["content"] == "Echo: Hello there"  # the usual shape
    assert "X-Thread-Id" in first.headers["Access-Control-Expose-Headers"]

    second = await client.post("/chat", json=turn("And again", thread_id), headers=bearer())
    assert second.status_code == 200, second.text
    assert second.headers["X-Thread-Id"] == thread_id
    assert sent_messages(fake) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Echo: Hello there"},
        {"role": "user", "content": "And again"},
    ]
    rows = await messages_of(thread_id)
    assert [(m["seq"], m["role"], m["status"], m["content"]) for m in rows] == [
        (1, "user", "complete", "Hello there"),
        (2, "assistant", "complete", "Echo: Hello there"),
        (3, "user", "complete", "And again"),
        (4, "assistant", "complete", "Echo: And again"),
    ]
    answer = rows[1]
    assert answer["id"] == message_id
    assert answer["cost_usd"] and answer["cost_usd"] > 0  # the provider's cost, as the ledger settled it
    assert (answer["finish_reason"], answer["model"]) == ("stop", "openai/gpt-4o")
    assert answer["generation_id"].startswith("gen-")
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    logged = {r["request_id"]: r for r in await ledger.rows("request_log")}
    assert logged[answer["request_id"]]["cost_usd"] == answer["cost_usd"]  # one request, one cost
    [thread] = await store().rows("threads")
    assert (thread["title"], thread["system_prompt"]) == ("Hello there", "Be brief.")


async def test_a_streamed_turn_is_stored_with_its_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat", json=turn("stream me please", stream=True), headers=bearer())
    assert response.status_code == 200
    assert response.text.rstrip().endswith("data: [DONE]")
    rows = await messages_of(response.headers["X-Thread-Id"])
    answer = rows[-1]
    assert (answer["status"], answer["content"]) == ("complete", "Echo: stream me please")
    assert answer["completion_tokens"] and answer["cost_usd"]


async def test_without_thread_id_nothing_is_stored(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]}, headers=bearer())
    assert response.status_code == 200
    assert "X-Thread-Id" not in response.headers
    assert await store().rows("threads") == []


async def test_another_users_thread_is_not_found_for_turns_and_stops(client: httpx.AsyncClient) -> None:
    mine = await client.post("/chat", json=turn("my secret plans"), headers=bearer())
    thread_id = mine.headers["X-Thread-Id"]
    stranger = bearer(mint(sub=OTHER_USER))
    taken = await client.post("/chat", json=turn("continue", thread_id), headers=stranger)
    assert taken.status_code == 404
    assert taken.json()["error"]["type"] == "thread_not_found"
    stop = await client.post("/chat/stop", json={"thread_id": thread_id}, headers=stranger)
    assert stop.status_code == 404
    unknown = await client.post("/chat", json=turn("x", "7d6f3c1e-2b8a-4c1d-9e0f-123456789abc"), headers=bearer())
    assert unknown.status_code == 404  # unknown and foreign look the same
    assert len(await messages_of(thread_id)) == 2  # nothing was added to the owner's thread


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"thread_id": "not-a-uuid", "messages": [{"role": "user", "content": "x"}]}, "thread_id"),
        ({"thread_id": "new", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "one"),
        (
            {
                "thread_id": "7d6f3c1e-2b8a-4c1d-9e0f-123456789abc",
                "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            },
            "only the new user message",
        ),
        (
            {
                "thread_id": "new",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            "text",
        ),
        ({"thread_id": "new", "messages": [{"role": "user", "content": "  "}]}, "empty"),
        ({"messages": [{"role": "user", "content": "x"}], "background": True}, "thread_id"),
        ({"thread_id": "new", "messages": [{"role": "user", "content": "x"}], "background": "yes"}, "background"),
        (
            {
                "thread_id": "new",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_object"},
            },
            "response_format",
        ),
    ],
)
async def test_malformed_turns_are_refused_before_anything_is_spent(
    client: httpx.AsyncClient, fake: FakeOpenRouter, body: dict[str, Any], says: str
) -> None:
    response = await client.post("/chat", json=body, headers=bearer())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request"
    assert says in response.json()["error"]["message"]
    assert fake.received == []
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    assert await ledger.rows("usage_daily") == []


async def test_threads_need_a_store(client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter) -> None:
    configure(LEDGER_BACKEND="off")
    response = await client.post("/chat", json=turn("hello"), headers=bearer())
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "threads_unavailable"
    assert fake.received == []


async def test_a_long_thread_stays_within_the_history_budget(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(THREAD_HISTORY_MESSAGES="9", DEFAULT_RPM="unlimited", DEFAULT_DAILY_COST_USD="unlimited")
    first = await client.post(
        "/chat",
        json={
            "thread_id": "new",
            "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "turn 0"}],
        },
        headers=bearer(),
    )
    thread_id = first.headers["X-Thread-Id"]
    for n in range(1, 30):
        response = await client.post("/chat", json=turn(f"turn {n}", thread_id), headers=bearer())
        assert response.status_code == 200, response.text
        sent = sent_messages(fake)
        assert sent[0] == {"role": "system", "content": "Sys"}  # the system prompt is always kept
        assert sent[-1] == {"role": "user", "content": f"turn {n}"}
        assert len(sent) - 1 <= 9
        assert sent[1]["role"] == "user"  # never starts mid-exchange
    assert [m["content"] for m in sent[1:]] == [
        "turn 25", "Echo: turn 25", "turn 26", "Echo: turn 26", "turn 27", "Echo: turn 27",
        "turn 28", "Echo: turn 28", "turn 29",
    ]  # fmt: skip
    assert len(await messages_of(thread_id)) == 60  # everything is kept; only what is sent is bounded


async def test_the_token_budget_drops_the_oldest_first(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(THREAD_HISTORY_TOKENS="150")
    first = await client.post("/chat", json=turn("a" * 400), headers=bearer())  # ~100 tokens, echoed: ~200 more
    thread_id = first.headers["X-Thread-Id"]
    await client.post("/chat", json=turn("short", thread_id), headers=bearer())
    assert sent_messages(fake) == [{"role": "user", "content": "short"}]
    huge = await client.post("/chat", json=turn("b" * 2000, thread_id), headers=bearer())
    assert huge.status_code == 200  # the new message alone is over budget: it is still sent
    assert sent_messages(fake) == [{"role": "user", "content": "b" * 2000}]


async def test_upstream_failure_marks_the_answer_failed(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    fake.script({"fault": "status", "status": 400, "message": "Bad model"})
    response = await client.post("/chat", json=turn("hello"), headers=bearer())
    assert response.status_code == 400
    rows = await messages_of(response.headers["X-Thread-Id"])
    assert (rows[-1]["status"], rows[-1]["error_type"]) == ("failed", response.json()["error"]["type"])
    assert rows[-1]["error_message"]
    # A failed answer is not sent as history; the question is.
    again = await client.post("/chat", json=turn("retry", response.headers["X-Thread-Id"]), headers=bearer())
    assert again.status_code == 200
    assert sent_messages(fake) == [{"role": "user", "content": "hello"}, {"role": "user", "content": "retry"}]


async def test_a_stream_that_fails_midway_keeps_its_partial_text(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    fake.script({"fault": "midstream_error", "after": 2})
    response = await client.post("/chat", json=turn("one two three four", stream=True), headers=bearer())
    assert response.status_code == 200
    rows = await messages_of(response.headers["X-Thread-Id"])
    assert rows[-1]["status"] == "failed"
    assert rows[-1]["content"] and rows[-1]["content"] in "Echo: one two three four"
    assert rows[-1]["error_type"]


async def test_a_stale_streaming_answer_does_not_lock_the_thread_forever(
    client: httpx.AsyncClient, configure: Any
) -> None:
    runtime: Runtime = configure()
    now = [1_800_000_000.0]
    runtime.use_threads(SQLiteThreadStore(runtime.settings.ledger_sqlite_path, clock=lambda: now[0]))
    first = await client.post("/chat", json=turn("hello"), headers=bearer())
    thread_id = first.headers["X-Thread-Id"]
    # An instance died mid-answer: its message is still `streaming`.
    dead = await store().begin_turn(TurnRequest(USER_ID, thread_id, "lost", "m", "r", 50, 16_000, 60))
    busy = await client.post("/chat", json=turn("next", thread_id), headers=bearer())
    assert busy.status_code == 409
    assert busy.json()["error"]["type"] == "thread_busy"
    now[0] += runtime.stale_seconds + 1
    later = await client.post("/chat", json=turn("next", thread_id), headers=bearer())
    assert later.status_code == 200, later.text
    by_id = {m["id"]: m for m in await messages_of(thread_id)}
    assert (by_id[dead.message_id]["status"], by_id[dead.message_id]["error_type"]) == ("failed", "interrupted")


# -- live server: concurrency, stop, hang-up, background --------------------------------------------------


@pytest.fixture
async def slow_fake() -> AsyncIterator[FakeOpenRouter]:
    async with FakeOpenRouter(api_key=UPSTREAM_KEY, chunk_delay=0.05) as server:
        yield server


@pytest.fixture
async def live(router: FunctionsRouter, configure: Any, slow_fake: FakeOpenRouter) -> AsyncIterator[str]:
    configure(OPENROUTER_BASE_URL=slow_fake.url, THREAD_FLUSH_SECONDS="0.1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(router, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 5)


LONG = " ".join(f"w{i}" for i in range(200))  # streamed word by word: 10 s at 0.05 s a chunk


async def _until(check: Any, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):  # bounded
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def _started_stream(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, str, str, Any]:
    request = http.build_request("POST", "/chat", json=body, headers=bearer())
    response = await http.send(request, stream=True)
    assert response.status_code == 200
    lines = response.aiter_lines()
    async for line in lines:
        if line.startswith("data: ") and "w1" in line:
            break
    return response, response.headers["X-Thread-Id"], response.headers["X-Message-Id"], lines


async def test_stop_from_another_request_ends_the_stream_and_settles(live: str, slow_fake: FakeOpenRouter) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, message_id, lines = await _started_stream(http, turn(LONG, stream=True))
        # The message grows in the store while it streams.
        await _until(lambda: _content_has(thread_id, "w1"))
        stop = await http.post("/chat/stop", json={"thread_id": thread_id}, headers=bearer())
        assert stop.status_code == 200, stop.text
        assert stop.json() == {"thread_id": thread_id, "message_id": message_id, "status": "stopped"}
        rest = [line async for line in lines]
        await response.aclose()
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    assert any('"stopped":true' in line for line in rest)
    await _until(lambda: _no_connections(slow_fake))  # upstream cancelled
    answer = (await messages_of(thread_id))[-1]
    assert answer["status"] == "stopped"
    assert answer["content"].startswith("Echo: w0 w1") and "w199" not in answer["content"]
    # No usage came from the provider: the request is charged its reservation, on the message as in the ledger.
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [row] = await ledger.rows("request_log")
    assert (row["outcome"], row["cost_usd"]) == ("stopped", 0.01)
    assert answer["cost_usd"] == 0.01
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"], day["cost_usd"]) == (0, 0, 0.01)
    # A second stop finds it already stopped.
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        again = await http.post("/chat/stop", json={"thread_id": thread_id}, headers=bearer())
    assert again.json()["status"] == "stopped"


async def test_stop_asked_through_the_store_reaches_the_running_turn(live: str, slow_fake: FakeOpenRouter) -> None:
    """As when the stop lands on another instance: only the store's flag tells the running turn."""
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, message_id, lines = await _started_stream(http, turn(LONG, stream=True))
        answer = await store().stop(USER_ID, thread_id, None, 300)
        assert (answer.message_id, answer.status, answer.stop_requested) == (message_id, "streaming", True)
        rest = [line async for line in lines]  # ends at the next flush (0.1 s), not after 10 s
        await response.aclose()
    assert "data: [DONE]" in rest
    await _until(lambda: _status_is(thread_id, "stopped"))


async def test_concurrent_turns_on_one_thread_are_refused_not_interleaved(live: str) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, _, _ = await _started_stream(http, turn(LONG, stream=True))
        others = await asyncio.gather(
            *(http.post("/chat", json=turn(f"again {i}", thread_id), headers=bearer()) for i in range(5))
        )
        assert [o.status_code for o in others] == [409] * 5
        assert all(o.json()["error"]["type"] == "thread_busy" for o in others)
        assert all(o.headers.get("Retry-After") for o in others)
        await http.post("/chat/stop", json={"thread_id": thread_id}, headers=bearer())
        await response.aclose()
    rows = await messages_of(thread_id)
    assert [m["role"] for m in rows] == ["user", "assistant"]  # nothing from the refused turns


async def test_hanging_up_stops_the_answer_with_its_partial_text(live: str, slow_fake: FakeOpenRouter) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, _, _ = await _started_stream(http, turn(LONG, stream=True))
        await response.aclose()  # the page went away
    await _until(lambda: _status_is(thread_id, "stopped"))
    await _until(lambda: _no_connections(slow_fake))
    answer = (await messages_of(thread_id))[-1]
    assert answer["content"].startswith("Echo: w0") and "w199" not in answer["content"]
    assert answer["cost_usd"] == 0.01  # the reservation, as the ledger settled it


async def test_in_background_the_answer_goes_on_after_a_hang_up(live: str, configure: Any) -> None:
    short = " ".join(f"w{i}" for i in range(30))  # 1.5 s of streaming
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, _, _ = await _started_stream(http, turn(short, stream=True, background=True))
        await response.aclose()  # a reload
        await _until(lambda: _content_has(thread_id, "w5"))
        streaming = (await messages_of(thread_id))[-1]
        assert streaming["status"] == "streaming"  # what a reloaded page finds, and follows
        await _until(lambda: _status_is(thread_id, "complete"), seconds=8)
    answer = (await messages_of(thread_id))[-1]
    assert answer["content"] == "Echo: " + short
    assert answer["completion_tokens"] and answer["cost_usd"] and answer["cost_usd"] != 0.01  # the provider's usage


async def _content_has(thread_id: str, text: str) -> bool:
    rows = await messages_of(thread_id)
    return bool(rows) and text in rows[-1]["content"]


async def _status_is(thread_id: str, status: str) -> bool:
    rows = await messages_of(thread_id)
    return bool(rows) and rows[-1]["status"] == status


async def _no_connections(fake: FakeOpenRouter) -> bool:
    return fake.active_connections == 0


async def test_a_stop_on_a_dead_instances_answer_ends_it_at_once(client: httpx.AsyncClient, configure: Any) -> None:
    runtime: Runtime = configure()
    now = [1_800_000_000.0]
    runtime.use_threads(SQLiteThreadStore(runtime.settings.ledger_sqlite_path, clock=lambda: now[0]))
    first = await client.post("/chat", json=turn("hello"), headers=bearer())
    thread_id = first.headers["X-Thread-Id"]
    dead = await store().begin_turn(TurnRequest(USER_ID, thread_id, "lost", "m", "r", 50, 16_000, 60))
    now[0] += runtime.stale_seconds + 1
    stop = await client.post(
        "/chat/stop", json={"thread_id": thread_id, "message_id": dead.message_id}, headers=bearer()
    )
    assert stop.json() == {"thread_id": thread_id, "message_id": dead.message_id, "status": "stopped"}
    assert (await client.post("/chat", json=turn("next", thread_id), headers=bearer())).status_code == 200


async def test_a_message_too_long_for_a_thread_is_refused(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    response = await client.post("/chat", json=turn("a" * 1_000_001), headers=bearer())
    assert response.status_code == 400
    assert "at most 1000000 characters" in response.json()["error"]["message"]
    assert fake.received == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"thread_id": "nope"},
        {"thread_id": "7d6f3c1e-2b8a-4c1d-9e0f-123456789abc", "message_id": 5},
        {"thread_id": "7d6f3c1e-2b8a-4c1d-9e0f-123456789abc", "extra": 1},
        [],
    ],
)
async def test_a_malformed_stop_is_refused(client: httpx.AsyncClient, body: Any) -> None:
    response = await client.post("/chat/stop", json=body, headers=bearer())
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"


async def test_a_stop_needs_a_token_and_a_post(client: httpx.AsyncClient) -> None:
    body = {"thread_id": "7d6f3c1e-2b8a-4c1d-9e0f-123456789abc"}
    assert (await client.post("/chat/stop", json=body)).status_code == 401
    assert (await client.get("/chat/stop", headers=bearer())).status_code == 405


async def test_a_stop_spends_no_quota(client: httpx.AsyncClient) -> None:
    mine = await client.post("/chat", json=turn("hello"), headers=bearer())
    for _ in range(3):
        stop = await client.post("/chat/stop", json={"thread_id": mine.headers["X-Thread-Id"]}, headers=bearer())
        assert stop.json()["status"] == "complete"
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [day] = await ledger.rows("usage_daily")
    assert day["requests"] == 1
    assert len(await ledger.rows("request_log")) == 1


async def test_a_plain_answer_can_be_stopped_too(live: str, slow_fake: FakeOpenRouter) -> None:
    slow_fake.script({"fault": "slow", "delay": 8})
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        call = asyncio.create_task(http.post("/chat", json=turn("take your time"), headers=bearer()))
        await _until(lambda: _status_is_any("streaming"))
        [thread] = await store().rows("threads")
        stop = await http.post("/chat/stop", json={"thread_id": thread["id"]}, headers=bearer())
        answer = await call
    assert stop.json()["status"] == "stopped"
    assert answer.status_code == 409
    assert answer.json()["error"]["type"] == "generation_stopped"
    assert answer.headers["X-Thread-Id"] == thread["id"]
    [message] = [m for m in await messages_of(thread["id"]) if m["role"] == "assistant"]
    assert (message["status"], message["content"], message["cost_usd"]) == ("stopped", "", 0.01)
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [row] = await ledger.rows("request_log")
    assert (row["status"], row["outcome"], row["cost_usd"]) == (409, "stopped", 0.01)


async def _status_is_any(status: str) -> bool:
    return any(m["status"] == status for m in await store().rows("messages"))


# -- review fixes: shutdown, an early stop, heartbeats, busy details, tools, stop by message --------------


async def test_a_shutdown_ends_a_background_answer_and_settles_it(live: str, slow_fake: FakeOpenRouter) -> None:
    """A detached (background) answer must not outlive the drain: it is ended, failed as shutting_down, and
    charged its reservation, not left `streaming` with an unsettled reservation."""
    from openrouter_functions.capacity import IN_FLIGHT

    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, _, _ = await _started_stream(http, turn(LONG, stream=True, background=True))
        await response.aclose()
    await _until(lambda: _content_has(thread_id, "w5"))
    try:
        IN_FLIGHT.end_all()  # the drain's deadline
        await _until(lambda: _status_is(thread_id, "failed"))
    finally:
        IN_FLIGHT.reset()
    answer = (await messages_of(thread_id))[-1]
    assert answer["error_type"] == "shutting_down"
    assert "w199" not in answer["content"]
    await _until(lambda: _no_connections(slow_fake))
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [row] = await ledger.rows("request_log")
    assert (row["outcome"], row["cost_usd"]) == ("cancelled", 0.01)
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"]) == (0, 0)


async def test_a_stop_before_the_first_chunk_ends_the_wait_at_once(live: str, slow_fake: FakeOpenRouter) -> None:
    slow_fake.script({"fault": "slow", "delay": 8})  # a model that thinks for 8 s before its first word
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        call = asyncio.create_task(http.post("/chat", json=turn("think hard", stream=True), headers=bearer()))
        await _until(lambda: _status_is_any("streaming"))
        [thread] = await store().rows("threads")
        started = asyncio.get_running_loop().time()
        stop = await http.post("/chat/stop", json={"thread_id": thread["id"]}, headers=bearer())
        answer = await call
        waited = asyncio.get_running_loop().time() - started
    assert stop.json()["status"] == "stopped"
    assert waited < 4  # not the 8 s the model would have taken
    assert answer.status_code == 200
    assert '"stopped":true' in answer.text
    assert answer.text.rstrip().endswith("data: [DONE]")


async def test_unchanged_text_is_not_written_again(tmp_path: Any) -> None:
    threads = SQLiteThreadStore(tmp_path / "t.sqlite3", clock=lambda: clock[0])
    clock = [1_800_000_000.0]
    turn_ = await threads.begin_turn(TurnRequest(USER_ID, None, "hi", "m", "r", 50, 16_000, 60))
    assert await threads.progress(turn_.message_id, "partial") is True
    clock[0] += 5
    assert await threads.progress(turn_.message_id, None) is True  # a heartbeat
    [answer] = [m for m in await threads.rows("messages") if m["id"] == turn_.message_id]
    assert answer["content"] == "partial"
    assert answer["updated_at"].startswith("2027-01-15T08:00:05")
    await threads.aclose()


async def test_a_busy_thread_names_the_running_answer(live: str) -> None:
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        response, thread_id, message_id, _ = await _started_stream(http, turn(LONG, stream=True))
        busy = await http.post("/chat", json=turn("again", thread_id), headers=bearer())
        await http.post("/chat/stop", json={"message_id": message_id}, headers=bearer())  # by its message alone
        await response.aclose()
    assert busy.status_code == 409
    assert busy.json()["error"]["message_id"] == message_id
    await _until(lambda: _status_is(thread_id, "stopped"))


@pytest.mark.parametrize("key", ["tools", "tool_choice"])
async def test_tools_are_refused_on_threads(client: httpx.AsyncClient, fake: FakeOpenRouter, key: str) -> None:
    value: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}] if key == "tools" else "auto"
    response = await client.post("/chat", json=turn("hi", **{key: value}), headers=bearer())
    assert response.status_code == 400
    assert key in response.json()["error"]["message"]
    assert fake.received == []


async def test_a_stop_by_message_of_another_user_is_not_found(client: httpx.AsyncClient) -> None:
    mine = await client.post("/chat", json=turn("hello"), headers=bearer())
    stranger = bearer(mint(sub=OTHER_USER))
    stop = await client.post("/chat/stop", json={"message_id": mine.headers["X-Message-Id"]}, headers=stranger)
    assert stop.status_code == 404
    own = await client.post("/chat/stop", json={"message_id": mine.headers["X-Message-Id"]}, headers=bearer())
    assert own.json()["status"] == "complete"


@pytest.mark.parametrize("background", [False, True])
async def test_a_shutdown_during_the_wait_for_the_first_chunk_is_a_503_and_settled(
    live: str, slow_fake: FakeOpenRouter, background: bool
) -> None:
    """The model has said nothing yet when the drain ends the call: 503 shutting_down, the message failed,
    the request charged its reservation, whether or not the turn would go on in the background."""
    from openrouter_functions.capacity import IN_FLIGHT

    slow_fake.script({"fault": "slow", "delay": 6})
    async with httpx.AsyncClient(base_url=live, timeout=10) as http:
        body = turn("think", stream=True, background=True) if background else turn("think", stream=True)
        call = asyncio.create_task(http.post("/chat", json=body, headers=bearer()))
        await _until(lambda: _status_is_any("streaming"))
        try:
            IN_FLIGHT.end_all()
            answer = await call
        finally:
            IN_FLIGHT.reset()
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] == "shutting_down"
    [message] = [m for m in await store().rows("messages") if m["role"] == "assistant"]
    assert (message["status"], message["error_type"]) == ("failed", "shutting_down")
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [row] = await ledger.rows("request_log")
    assert (row["outcome"], row["cost_usd"]) == ("cancelled", 0.01)

"""The Supabase REST thread store: PostgREST's exact wire format (an httpx mock; PostgREST isn't here).

What the SQL functions answer is tested on a real PostgreSQL (supabase/tests/database/03_threads.test.sql,
tests/db/test_threads_postgres.py); here, what the store sends for each operation and how it reads the
answers PostgREST gives back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from openrouter_functions.threads import (
    MessageEnd,
    StopAnswer,
    ThreadBusy,
    ThreadNotFound,
    ThreadStoreUnavailable,
    Turn,
    TurnRequest,
)
from openrouter_functions.threads.rest import SupabaseRestThreadStore

URL = "https://abcdefghijklmnop.supabase.co"
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
THREAD = "0b3f4c52-9a1e-4d7b-8c55-7e2a1f0d9b31"
MESSAGE = "5d2e8f41-3c7a-4b19-9e60-2a4f8c1d7e03"
USER_MESSAGE = "9c4a7e12-6b3d-4f58-a1e0-3d5b9f2c8a47"


def build(reply: Any, status: int = 200) -> tuple[SupabaseRestThreadStore, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if isinstance(reply, Exception):
            raise reply
        return httpx.Response(status, json=reply)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SupabaseRestThreadStore(URL, KEY, http_client=client), seen


def turn_request(thread_id: str | None = None, **more: Any) -> TurnRequest:
    return TurnRequest(
        user_id=USER,
        thread_id=thread_id,
        user_text="What is RLS?\nExplain briefly.",
        model="openai/gpt-4o",
        request_id="req-1",
        max_messages=50,
        max_tokens=16_000,
        stale_seconds=30,
        **more,
    )


OK: dict[str, Any] = {
    "status": "ok",
    "thread_id": THREAD,
    "user_message_id": USER_MESSAGE,
    "message_id": MESSAGE,
    "created": True,
    "dropped": 0,
    "history": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is RLS?"}],
}


def assert_rpc(request: httpx.Request, function: str) -> dict[str, Any]:
    """One POST to PostgREST's RPC endpoint with the service-role key; its JSON body."""
    assert (request.method, str(request.url)) == ("POST", f"{URL}/rest/v1/rpc/{function}")
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-profile"] == "public"
    assert request.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(request.content)
    return body


async def test_a_new_thread_is_one_rpc_with_named_arguments() -> None:
    store, seen = build(OK)

    turn = await store.begin_turn(turn_request(system="Be brief."))

    assert turn == Turn(THREAD, USER_MESSAGE, MESSAGE, OK["history"], dropped=0, created=True)
    [request] = seen
    assert assert_rpc(request, "thread_turn_begin") == {
        "p_user_id": USER,
        "p_thread_id": None,
        "p_system": "Be brief.",
        "p_title": "What is RLS?",  # title_for the first message when none is given
        "p_user_text": "What is RLS?\nExplain briefly.",
        "p_model": "openai/gpt-4o",
        "p_request_id": "req-1",
        "p_max_messages": 50,
        "p_max_tokens": 16_000,
        "p_stale_seconds": 30,
    }


async def test_a_continued_thread_sends_its_id_and_neither_title_nor_system_prompt() -> None:
    store, seen = build({**OK, "created": False, "dropped": 3})

    turn = await store.begin_turn(turn_request(THREAD, system="ignored", title="ignored"))

    assert (turn.created, turn.dropped) == (False, 3)
    body = json.loads(seen[0].content)
    assert (body["p_thread_id"], body["p_system"], body["p_title"]) == (THREAD, None, None)


async def test_a_given_title_is_sent_as_is() -> None:
    store, seen = build(OK)

    await store.begin_turn(turn_request(title="My chat"))

    assert json.loads(seen[0].content)["p_title"] == "My chat"


@pytest.mark.parametrize(
    ("reply", "raised"),
    [
        ({"status": "not_found"}, ThreadNotFound),
        ({"status": "busy", "message_id": MESSAGE}, ThreadBusy),
        ({"status": "ok"}, ThreadStoreUnavailable),
        (None, ThreadStoreUnavailable),
    ],
)
async def test_begin_answers_that_are_not_a_turn_raise(reply: Any, raised: type[Exception]) -> None:
    store, _ = build(reply)

    with pytest.raises(raised) as caught:
        await store.begin_turn(turn_request(THREAD))
    if isinstance(caught.value, ThreadBusy):
        assert caught.value.message_id == MESSAGE


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"streaming": True, "stop_requested": False}, True),
        ({"streaming": True, "stop_requested": True}, False),
        ({"streaming": False, "stop_requested": False}, False),
    ],
)
async def test_progress_sends_the_text_and_says_whether_to_go_on(reply: dict[str, bool], expected: bool) -> None:
    store, seen = build(reply)

    assert await store.progress(MESSAGE, "Row level") is expected

    [request] = seen
    assert assert_rpc(request, "thread_message_progress") == {"p_message_id": MESSAGE, "p_content": "Row level"}


async def test_finish_sends_the_row_and_reads_a_bare_boolean() -> None:
    store, seen = build(True)
    end = MessageEnd("complete", "Row level security.", model="served/model", total_tokens=16, cost_usd=0.0012)

    assert await store.finish(MESSAGE, end) is True

    [request] = seen
    assert assert_rpc(request, "thread_message_finish") == {"p_message_id": MESSAGE, "p_row": end.row()}
    assert json.loads(request.content)["p_row"]["cost_usd"] == 0.0012


async def test_a_second_finish_is_false() -> None:
    store, _ = build(False)

    assert await store.finish(MESSAGE, MessageEnd("stopped", "Row")) is False


@pytest.mark.parametrize("reply", [{"recorded": True}, 1, None])
async def test_a_finish_answer_that_is_not_a_boolean_is_unavailable(reply: Any) -> None:
    store, _ = build(reply)

    with pytest.raises(ThreadStoreUnavailable, match="thread_message_finish"):
        await store.finish(MESSAGE, MessageEnd("complete", "x"))


async def test_stop_is_one_rpc_and_reads_the_answer() -> None:
    reply = {"thread_id": THREAD, "message_id": MESSAGE, "status": "streaming", "stop_requested": True}
    store, seen = build(reply)

    answer = await store.stop(USER, THREAD, None, 30)

    assert answer == StopAnswer(THREAD, MESSAGE, "streaming", stop_requested=True)
    [request] = seen
    assert assert_rpc(request, "thread_stop") == {
        "p_user_id": USER,
        "p_thread_id": THREAD,
        "p_message_id": None,
        "p_stale_seconds": 30,
    }


async def test_stop_of_an_idle_or_unknown_thread() -> None:
    idle, _ = build({"thread_id": THREAD, "message_id": None, "status": "idle", "stop_requested": False})
    assert await idle.stop(USER, THREAD, MESSAGE, 30) == StopAnswer(THREAD, None, "idle")

    missing, _ = build({"status": "not_found"})
    with pytest.raises(ThreadNotFound):
        await missing.stop(USER, THREAD, MESSAGE, 30)


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (
            {"code": "42501", "message": "permission denied for function thread_stop", "details": None, "hint": None},
            401,
        ),
        ({"code": "PGRST202", "message": "Could not find the function", "details": None, "hint": None}, 404),
        ({"code": "55P03", "message": "canceling statement due to lock timeout", "details": None, "hint": None}, 500),
        ({"code": "22P02", "message": "invalid input syntax for type uuid", "details": None, "hint": None}, 400),
        (httpx.ConnectError("refused"), 200),
        ("not an object", 200),
    ],
)
async def test_failures_are_unavailable_and_never_retried(reply: Any, status: int) -> None:
    store, seen = build(reply, status)

    with pytest.raises(ThreadStoreUnavailable, match="thread_stop"):
        await store.stop(USER, THREAD, None, 30)
    assert len(seen) == 1


async def test_a_deleted_user_is_unavailable_with_a_clear_message() -> None:
    refusal = {"code": "23514", "message": f"threads: user {USER} was deleted", "details": None, "hint": None}
    store, seen = build(refusal, 400)

    with pytest.raises(ThreadStoreUnavailable, match="user was deleted"):
        await store.begin_turn(turn_request())
    assert len(seen) == 1


async def test_an_unsendable_text_is_unavailable() -> None:
    store, seen = build(True)

    with pytest.raises(ThreadStoreUnavailable, match="thread_message_progress"):
        await store.progress(MESSAGE, "half a surrogate \ud800")
    assert seen == []


def test_the_stores_import_their_drivers_only_when_used() -> None:
    code = (
        "import sys; import openrouter_functions.threads.postgres, openrouter_functions.threads.rest; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool', 'supabase', 'postgrest')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"

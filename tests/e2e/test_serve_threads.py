"""Conversations through a real ``openrouter-functions serve`` process (docs/threads.md), called the way a
web app's code would: the ``openai`` SDK with ``extra_body={"thread_id": ...}`` and the raw response's
headers, and a stop from a second client while a streamed answer runs."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import httpx
from e2e_procs import FakeUpstream, Served
from openai import OpenAI

from helpers import USER_ID, mint


def sdk(url: str, sub: str = USER_ID) -> OpenAI:
    return OpenAI(base_url=f"{url}/chat", api_key=mint(sub=sub), max_retries=0, timeout=10.0)


def test_the_openai_sdk_continues_a_thread_it_started(served: Served, fake: FakeUpstream) -> None:
    client = sdk(served.url)
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "first question"}],
        extra_body={"thread_id": "new"},
    )
    thread_id = raw.headers["x-thread-id"]
    assert raw.parse().choices[0].message.content == "Echo: first question"

    with client.chat.completions.with_streaming_response.create(
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "second question"}],
        stream=True,
        extra_body={"thread_id": thread_id},
    ) as streamed:
        assert streamed.headers["x-thread-id"] == thread_id
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    assert text == "Echo: second question"
    assert [m["role"] for m in fake.chat_requests()[-1]["json"]["messages"]] == ["user", "assistant", "user"]

    rows = served.ledger_rows(
        "select role, status, content from messages where thread_id = ? order by seq", thread_id, expect=4
    )
    assert [(r["role"], r["status"]) for r in rows] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert rows[3]["content"] == "Echo: second question"


def test_a_stop_from_another_tab_ends_a_running_answer(served: Served, fake: FakeUpstream) -> None:
    fake.script({"fault": "reply", "content": " ".join(f"w{i}" for i in range(200)), "chunk_delay": 0.05})
    user = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {mint(sub=user)}"}
    body = {"thread_id": "new", "stream": True, "messages": [{"role": "user", "content": "write a lot"}]}
    seen: dict[str, Any] = {}

    def read_stream() -> None:
        with httpx.stream("POST", f"{served.url}/chat", json=body, headers=headers, timeout=20) as response:
            seen["thread_id"] = response.headers["x-thread-id"]
            seen["lines"] = list(response.iter_lines())

    reader = threading.Thread(target=read_stream)
    started = time.monotonic()
    reader.start()
    for _ in range(200):  # bounded: until the first tab's answer has begun
        if "thread_id" in seen:
            break
        time.sleep(0.02)
    time.sleep(0.5)
    stop = httpx.post(f"{served.url}/chat/stop", json={"thread_id": seen["thread_id"]}, headers=headers, timeout=10)
    reader.join(15)
    assert stop.status_code == 200, stop.text
    assert stop.json()["status"] == "stopped"
    assert not reader.is_alive()
    assert time.monotonic() - started < 9  # the whole answer would take 10 s
    assert seen["lines"][-1] == "data: [DONE]" or "data: [DONE]" in seen["lines"]
    [row] = served.ledger_rows(
        "select status, content, cost_usd from messages where thread_id = ? and role = 'assistant'", seen["thread_id"]
    )
    assert row["status"] == "stopped"
    assert row["content"].startswith("w0 w1") and "w199" not in row["content"]
    assert row["cost_usd"] is not None


def test_another_user_cannot_continue_or_stop_a_thread(served: Served, fake: FakeUpstream) -> None:
    owner = sdk(served.url)
    raw = owner.chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "private"}], extra_body={"thread_id": "new"}
    )
    thread_id = raw.headers["x-thread-id"]
    stranger = {"Authorization": f"Bearer {mint(sub=str(uuid.uuid4()))}"}
    body = {"thread_id": thread_id, "messages": [{"role": "user", "content": "let me in"}]}
    taken = httpx.post(f"{served.url}/chat", json=body, headers=stranger, timeout=10)
    stop = httpx.post(f"{served.url}/chat/stop", json={"thread_id": thread_id}, headers=stranger, timeout=10)
    assert (taken.status_code, stop.status_code) == (404, 404)
    assert taken.json()["error"]["type"] == stop.json()["error"]["type"] == "thread_not_found"

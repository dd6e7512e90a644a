"""Conversations through a real ``openrouter-functions serve`` process (docs/threads.md), called the way a
web app's code would: the ``openai`` SDK with ``extra_body={"thread_id": ...}`` and the raw response's
headers, and a stop from a second client while a streamed answer runs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_procs import FakeUpstream, Served, functions_env, serving
from openai import OpenAI

from helpers import USER_ID, mint
from pgcluster import PgCluster, running_cluster


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


# -- the same against PostgreSQL (DATABASE_URL), rows read back as the signed-in user under RLS ----------


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with running_cluster("serve_threads") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def serve_pg(pg: PgCluster, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("unused-sqlite"))
    env.update(DATABASE_URL=pg.dsn, THREAD_FLUSH_SECONDS="0.1")
    with serving("serve-threads-postgres", env) as process:
        yield process.base_url


def as_user(pg: PgCluster, user: str, sql: str) -> str:
    """``sql`` run the way PostgREST runs a signed-in user's query: role authenticated, their claims."""
    claims = json.dumps({"sub": user, "role": "authenticated"})
    return pg.psql(f"begin; set local role authenticated; set local request.jwt.claims = '{claims}';\n{sql}\nrollback;")


def test_threads_in_postgres_under_rls(serve_pg: str, pg: PgCluster, fake: FakeUpstream) -> None:
    alice, bob = str(uuid.uuid4()), str(uuid.uuid4())
    client = sdk(serve_pg, alice)
    first = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o", messages=[{"role": "user", "content": "alpha"}], extra_body={"thread_id": "new"}
    )
    thread_id = first.headers["x-thread-id"]
    with client.chat.completions.with_streaming_response.create(
        model="openai/gpt-4o",
        messages=[{"role": "user", "content": "beta"}],
        stream=True,
        extra_body={"thread_id": thread_id},
    ) as streamed:
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices) == "Echo: beta"
    assert [m["content"] for m in fake.chat_requests()[-1]["json"]["messages"]] == ["alpha", "Echo: alpha", "beta"]

    # Alice reads her thread through RLS; the answers carry the settled usage.
    mine = as_user(
        pg,
        alice,
        f"select role, status, content, cost_usd > 0 from public.messages where thread_id = '{thread_id}' order by seq;",
    )
    assert mine.split() == [
        "user|complete|alpha|",
        "assistant|complete|Echo:",
        "alpha|t",
        "user|complete|beta|",
        "assistant|complete|Echo:",
        "beta|t",
    ]
    # Bob sees nothing, can neither continue nor stop it, and no client can write a message.
    assert as_user(pg, bob, f"select count(*) from public.messages where thread_id = '{thread_id}';").strip() == "0"
    stranger = {"Authorization": f"Bearer {mint(sub=bob)}"}
    body = {"thread_id": thread_id, "messages": [{"role": "user", "content": "let me in"}]}
    assert httpx.post(f"{serve_pg}/chat", json=body, headers=stranger, timeout=10).status_code == 404
    stop = httpx.post(f"{serve_pg}/chat/stop", json={"thread_id": thread_id}, headers=stranger, timeout=10)
    assert stop.status_code == 404
    with pytest.raises(subprocess.CalledProcessError) as forged:
        as_user(
            pg,
            alice,
            "insert into public.messages (thread_id, user_id, seq, role, content, cost_usd)"
            f" values ('{thread_id}', '{alice}', 99, 'assistant', 'forged', 0);",
        )
    assert "permission denied for table messages" in forged.value.stderr


def test_a_stop_in_postgres_settles_the_answer(serve_pg: str, pg: PgCluster, fake: FakeUpstream) -> None:
    fake.script({"fault": "reply", "content": " ".join(f"w{i}" for i in range(200)), "chunk_delay": 0.05})
    user = str(uuid.uuid4())
    headers = {"Authorization": f"Bearer {mint(sub=user)}"}
    body = {"thread_id": "new", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx.stream("POST", f"{serve_pg}/chat", json=body, headers=headers, timeout=20) as response:
        thread_id = response.headers["x-thread-id"]
        lines = response.iter_lines()
        for line in lines:
            if "w3" in line:
                break
        stop = httpx.post(f"{serve_pg}/chat/stop", json={"thread_id": thread_id}, headers=headers, timeout=10)
        rest = list(lines)
    assert stop.json()["status"] == "stopped"
    assert "data: [DONE]" in rest
    row = pg.psql(
        "select m.status, m.content like 'w0 w1 w2 w3%', m.cost_usd = r.cost_usd, r.outcome"
        " from public.messages m join public.request_log r on r.request_id = m.request_id"
        f" where m.thread_id = '{thread_id}' and m.role = 'assistant';"
    )
    assert row.strip() == "stopped|t|t|stopped"

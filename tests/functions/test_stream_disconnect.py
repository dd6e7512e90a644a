"""A browser that goes away mid-stream: the upstream stream is closed promptly and the request recorded.

Runs the real router under uvicorn on loopback (ASGITransport cannot disconnect mid-body).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from helpers import bearer
from log_lines import request_lines
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import FunctionsRouter
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.runtime import get_runtime


@pytest.fixture
async def slow_fake() -> AsyncIterator[FakeOpenRouter]:
    async with FakeOpenRouter(api_key="sk-or-v1-test-upstream-key", chunk_delay=0.05) as server:
        yield server


@pytest.fixture
async def live_url(router: FunctionsRouter) -> AsyncIterator[str]:
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


async def test_client_disconnect_closes_upstream(
    slow_fake: FakeOpenRouter, configure: Any, live_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    configure(OPENROUTER_BASE_URL=slow_fake.url)
    caplog.set_level("INFO", logger="openrouter_functions.request")
    long_prompt = {"messages": [{"role": "user", "content": " ".join(["word"] * 200)}], "stream": True}
    async with httpx.AsyncClient(base_url=live_url, timeout=5) as client:
        async with client.stream("POST", "/chat", json=long_prompt, headers=bearer()) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: ") and "word" in line:
                    break  # got real content; now hang up
    for _ in range(100):  # bounded: 2 s at most, where the full stream would take 10 s
        if slow_fake.active_connections == 0 and any(r.name == "openrouter_functions.request" for r in caplog.records):
            break
        await asyncio.sleep(0.02)
    assert slow_fake.active_connections == 0
    line = request_lines(caplog.records)[-1]
    assert line["outcome"] == "cancelled"
    assert line["status"] == 200
    # The provider's usage never arrived, so the request is charged its reservation: hanging up early
    # must not be a way around the daily budget.
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    [row] = await ledger.rows("request_log")
    assert (row["outcome"], row["cost_usd"]) == ("cancelled", 0.01)
    [day] = await ledger.rows("usage_daily")
    assert (day["requests"], day["cost_usd"], day["in_flight"], day["reserved_usd"]) == (1, 0.01, 0, 0)


async def test_a_client_that_stops_at_done_finds_its_request_recorded(
    fake: FakeOpenRouter, configure: Any, live_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDKs stop reading at ``data: [DONE]``; a web app then reads its usage. The record is written
    before [DONE] goes out, however slow the store (here 0.3 s to settle)."""
    configure(OPENROUTER_BASE_URL=fake.url)
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    record = ledger.finish

    async def slow_finish(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await record(*args, **kwargs)

    monkeypatch.setattr(ledger, "finish", slow_finish)
    body = {"messages": [{"role": "user", "content": "hello there"}], "stream": True}
    async with httpx.AsyncClient(base_url=live_url, timeout=5) as client:
        async with client.stream("POST", "/chat", json=body, headers=bearer()) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line == "data: [DONE]":
                    break
            # no waiting: what the caller reads next is already there
            [row] = await ledger.rows("request_log")
            assert (row["outcome"], row["status"]) == ("ok", 200)
            [day] = await ledger.rows("usage_daily")
            assert (day["requests"], day["in_flight"]) == (1, 0)

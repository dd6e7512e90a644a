"""SIGTERM with streams and a plain call in flight, under ``serve`` and a bare ``functions-framework``
(gunicorn, the image's and Cloud Run's entry point): the process exits within the drain bound, every
stream is ended with an error event and ``[DONE]``, the plain call is answered 503 ``shutting_down``, and
every request has its settled ledger row (charged like a hang-up) with no reservation left held.

Before: gunicorn cut every stream after its 30 s graceful timeout with no row written and every
reservation held; ``serve`` waited for the streams however long they ran."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from e2e_procs import FakeUpstream, functions_env
from fault_kit import SERVERS, StreamReader, ledger_query, new_user, server_process, wait_for

from helpers import mint

STREAMS = 5
DRAIN_SECONDS = 1.5
RESERVE_USD = 0.01
# Generous: the drain, the settlements, the interpreter's exit.
EXIT_BOUND = DRAIN_SECONDS + 6.0
# Long enough that no stream can finish by itself before the drain ends it (300 words, 0.1 s apart).
SLOW_REPLY = {"fault": "reply", "content": " ".join(["word"] * 300), "chunk_delay": 0.1}


def _post(url: str, user: str) -> httpx.Response:
    return httpx.post(
        url,
        headers={"Authorization": f"Bearer {mint(sub=user)}"},
        json={"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "slow"}]},
        timeout=30.0,
    )


def _error_events(text: str) -> list[dict[str, object]]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: {") and '"error"' in line:
            events.append(json.loads(line[len("data: ") :]))
    return events


@pytest.mark.parametrize("server", SERVERS)
def test_sigterm_ends_streams_in_time_and_settles_each(server: str, fake: FakeUpstream, tmp_path: Path) -> None:
    env = functions_env(fake.port, tmp_path)
    env.update(SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS), QUOTA_RESERVE_USD=str(RESERVE_USD))
    ledger = tmp_path / "ledger.sqlite3"
    # The streams take the slow replies; then one plain call waits on an upstream that answers too late.
    fake.script({**SLOW_REPLY, "repeat": STREAMS}, {"fault": "slow", "delay": 60})
    body = {"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    plain_user = new_user()
    plain: list[httpx.Response] = []

    with server_process(server, env) as (process, url):
        readers = [StreamReader(url, new_user(), body).start() for _ in range(STREAMS)]
        for reader in readers:
            assert reader.started.wait(10.0), "a stream never started"
        assert all(r.status == 200 for r in readers), [(r.status, r.error) for r in readers]
        waiting = threading.Thread(target=lambda: plain.append(_post(url, plain_user)), daemon=True)
        waiting.start()
        assert wait_for(lambda: len(fake.chat_requests()) == STREAMS + 1, 10.0), "the plain call never went upstream"

        started = time.monotonic()
        process.terminate()
        try:
            process.popen.wait(timeout=EXIT_BOUND)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{server} still running {EXIT_BOUND}s after SIGTERM:\n{process.describe()}")
        took = time.monotonic() - started
        assert all(r.join(5.0) for r in readers)
        waiting.join(5.0)

    print(f"\n{server}: SIGTERM with {STREAMS} streams and a plain call in flight, exited after {took:.2f}s")
    assert DRAIN_SECONDS <= took < EXIT_BOUND, took
    for reader in readers:
        assert reader.error is None, reader.error
        assert reader.text.endswith("data: [DONE]\n\n"), reader.text[-300:]
        events = _error_events(reader.text)
        assert [e["error"] for e in events] == [  # type: ignore[index]
            {"code": 503, "message": "This server is restarting; try again.", "metadata": {"type": "shutting_down"}}
        ]
    [answer] = plain
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "1")
    assert answer.json() == {
        "error": {"code": 503, "type": "shutting_down", "message": "This server is restarting; try again."}
    }
    rows = ledger_query(ledger, "select user_id, status, outcome, error_type, cost_usd from request_log")
    expected = [(r.user, 200, "cancelled", "shutting_down", RESERVE_USD) for r in readers]
    expected.append((plain_user, 503, "cancelled", "shutting_down", RESERVE_USD))
    assert sorted(rows) == sorted(expected)
    assert ledger_query(ledger, "select count(*) from ledger_reservations") == [(0,)]
    assert ledger_query(ledger, "select sum(in_flight), sum(reserved_usd) from usage_daily") == [(0, 0.0)]


@pytest.mark.parametrize("server", SERVERS)
def test_a_caller_that_stopped_reading_does_not_hold_the_shutdown(
    server: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    # A reply far larger than the socket buffers, sent as fast as it goes: once the caller stops
    # reading, the stream waits in a write that only the drain can end.
    env = functions_env(fake.port, tmp_path)
    env.update(SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS), QUOTA_RESERVE_USD=str(RESERVE_USD))
    fake.script({"fault": "reply", "content": " ".join(["x" * 4000] * 2000), "chunk_delay": 0})  # 8 MB
    user = new_user()
    body = json.dumps({"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    with server_process(server, env) as (process, url):
        path = url.split(str(process.port), 1)[1] or "/"
        request = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint(sub=user)}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        ).encode()
        with socket.create_connection(("127.0.0.1", process.port), timeout=10.0) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
            time.sleep(1.0)  # the server fills the buffers and blocks
            started = time.monotonic()
            process.terminate()
            try:
                process.popen.wait(timeout=EXIT_BOUND)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{server} still running {EXIT_BOUND}s after SIGTERM:\n{process.describe()}")
            took = time.monotonic() - started
    assert took < EXIT_BOUND, took
    rows = ledger_query(
        tmp_path / "ledger.sqlite3",
        "select status, outcome, error_type, cost_usd from request_log where user_id = ?",
        user,
    )
    assert rows == [(200, "cancelled", "shutting_down", RESERVE_USD)]
    assert ledger_query(tmp_path / "ledger.sqlite3", "select count(*) from ledger_reservations") == [(0,)]

"""A function's port is open to anyone: raw-socket checks that an unauthenticated client cannot make it
hold memory or connections (request heads capped at 64 KiB, heads that never complete and idle
keep-alive connections closed, a connection limit answered in the envelope).

The head and connection checks run against ``serve`` and against a bare ``functions-framework`` (gunicorn
with uvicorn's worker: Cloud Run's and the Docker image's entry point), which get the same listener."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_procs import BIN, FakeUpstream, cli, functions_env

from helpers import HOST, free_port
from procs import Process

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 10.0
KEEP_ALIVE = 5.0
LIMIT = 4


@pytest.fixture(scope="module")
def guarded(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    port = free_port()
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("limits-ledger"))
    process = Process("serve (limits)", cli("serve", "--port", str(port), "--limit-concurrency", str(LIMIT)), env, port)
    try:
        process.wait_ready("/health")
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def deployed(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """The health function alone under functions-framework's production server, as deployed."""
    port = free_port()
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("ff-limits-ledger"))
    argv = [str(BIN / "functions-framework"), "--target", "health", "--source", "functions/health/main.py"]
    process = Process("functions-framework (limits)", [*argv, "--host", HOST, "--port", str(port)], env, port)
    try:
        process.wait_ready("/")
        yield process
    finally:
        process.stop()


@pytest.fixture(params=["serve", "functions-framework"])
def listener(request: pytest.FixtureRequest) -> Process:
    """Each way a function listens: ``serve``, and functions-framework as deployed."""
    process: Process = request.getfixturevalue("guarded" if request.param == "serve" else "deployed")
    return process


def _health_path(process: Process) -> bytes:
    """Where health answers: under serve at /health, a bare function at its root."""
    return b"/" if process.name.startswith("functions-framework") else b"/health"


def _connect(process: Process) -> socket.socket:
    assert process.port is not None
    return socket.create_connection((HOST, process.port), timeout=HEAD_TIMEOUT + 5.0)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (bounded by the socket's timeout)."""
    data = b""
    for _ in range(1000):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _answer(raw: bytes) -> tuple[int, dict[str, str], object]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_head_over_64_kib_is_refused_with_431(listener: Process) -> None:
    with _connect(listener) as sock:
        sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEAD - 1024))
        time.sleep(0.2)  # the server has read the first part and waits for more
        sock.sendall(b"a" * 2048)
        status, headers, body = _answer(_read_all(sock))
    assert status == 431
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert headers["access-control-allow-origin"] == "*"
    assert body == {
        "error": {"code": 431, "type": "headers_too_large", "message": "Request headers are limited to 65536 bytes."}
    }


def test_a_head_just_under_the_cap_is_served(listener: Process) -> None:
    with _connect(listener) as sock:
        filler = b"a" * (MAX_HEAD - 200)
        path = _health_path(listener)
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " + filler + b"\r\n\r\n")
        status, _, body = _answer(_read_all(sock))
    assert status == 200
    assert isinstance(body, dict) and body["status"] == "ok"


def test_eight_huge_heads_do_not_grow_memory(guarded: Process) -> None:
    # The audit's attack: 64 MB headers on 8 connections took the server from ~50 to 620 MB.
    before = _rss_mb(guarded.popen.pid)
    sent: list[int] = []

    def attack() -> None:
        total = 0
        with _connect(guarded) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
                for _ in range(64):  # up to 64 MB
                    sock.sendall(b"a" * (1 << 20))
                    total += 1 << 20
            except OSError:
                pass
        sent.append(total)

    threads = [threading.Thread(target=attack) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    after = _rss_mb(guarded.popen.pid)
    assert len(sent) == 8
    assert max(sent) < 16 << 20, sent  # each cut off long before its 64 MB (kernel buffers take a few)
    assert after - before < 30, (before, after)


def test_silent_slow_and_idle_connections_are_closed(listener: Process) -> None:
    guarded, path = listener, _health_path(listener)
    outcomes: dict[str, tuple[float, bytes]] = {}

    def silent() -> None:
        started = time.monotonic()
        with _connect(guarded) as sock:
            data = _read_all(sock)
            outcomes["silent"] = (time.monotonic() - started, data)

    def slowloris() -> None:
        started = time.monotonic()
        with _connect(guarded) as sock:
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n")
            sock.settimeout(1.0)
            data = b""
            for i in range(int(HEAD_TIMEOUT) + 5):  # a header line a second, never the blank line
                try:
                    sock.sendall(f"X-{i}: y\r\n".encode())
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                data += chunk
                if not chunk:
                    break
            outcomes["slowloris"] = (time.monotonic() - started, data)

    def idle_after_answer() -> None:
        with _connect(guarded) as sock:
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            answered = time.monotonic()
            rest = _read_all(sock)
            outcomes["keep-alive"] = (time.monotonic() - answered, first + rest)

    threads = [threading.Thread(target=f) for f in (silent, slowloris, idle_after_answer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HEAD_TIMEOUT + 10.0)

    took, data = outcomes["silent"]
    assert data == b""
    assert HEAD_TIMEOUT - 0.5 <= took < HEAD_TIMEOUT + 3.0, took
    took, data = outcomes["slowloris"]
    status, headers, body = _answer(data)
    assert (status, headers["connection"]) == (408, "close")
    assert body == {
        "error": {"code": 408, "type": "request_timeout", "message": "The request head must arrive within 10 s."}
    }
    assert HEAD_TIMEOUT - 0.5 <= took < HEAD_TIMEOUT + 3.0, took
    took, data = outcomes["keep-alive"]
    assert data.startswith(b"HTTP/1.1 200 ")
    assert KEEP_ALIVE - 0.5 <= took < KEEP_ALIVE + 3.0, took


def test_beyond_the_connection_limit_requests_get_503_in_the_envelope(guarded: Process) -> None:
    idle = [_connect(guarded) for _ in range(LIMIT)]
    try:
        time.sleep(0.2)  # accepted
        with _connect(guarded) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n")
            status, headers, body = _answer(_read_all(sock))
    finally:
        for sock in idle:
            sock.close()
    assert (status, headers["retry-after"], headers["connection"]) == (503, "1", "close")
    assert headers["access-control-allow-origin"] == "*"
    assert body == {
        "error": {"code": 503, "type": "overloaded", "message": "This server is at capacity; try again in a moment."}
    }

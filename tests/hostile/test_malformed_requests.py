"""Bodies and requests no client should send: deeply nested JSON, NaN and Infinity, huge headers, odd
methods and unknown paths. Each gets the JSON error envelope (never a framework page, never a 5xx), and
the server goes on serving."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from hostile_support import Hostile

from helpers import HOST

DEPTH = 1500


def nested(depth: int) -> str:
    return '{"messages": [{"role": "user", "content": "hi"}], "metadata": ' + "[" * depth + "]" * depth + "}"


BODIES = {
    "1,500-deep arrays": nested(DEPTH),
    "1,500-deep objects": '{"messages": [], "x": ' + '{"a": ' * DEPTH + "1" + "}" * DEPTH + "}",
    "NaN temperature": '{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    "Infinity max_tokens": '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
    "-Infinity top_p": '{"messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}',
    "1e999 temperature": '{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
    "not JSON": "{'messages': []}",
    "truncated": '{"messages": [{"role": "user", "content": "hi"',
    "invalid UTF-8": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'.decode("latin-1"),
}


@pytest.mark.parametrize("name", list(BODIES))
@pytest.mark.parametrize("path", ["/chat", "/completion"])
def test_a_body_that_is_not_plain_json_is_a_400_envelope(attack: Hostile, name: str, path: str) -> None:
    body = BODIES[name]
    response = attack.call(path, raw=body.encode("latin-1" if name == "invalid UTF-8" else "utf-8"))
    assert response.status_code == 400, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_json"
    assert attack.chat_requests() == []
    assert attack.bystander_served()


ODD = [
    ("TRACE", "/chat", 405),
    ("PROPFIND", "/chat", 405),
    ("PROPFIND", "/completion", 405),
    ("TRACE", "/health", 405),
    ("CONNECT", "/chat", 405),
    ("DELETE", "/metrics", 405),
    ("GET", "/chat/unknown/sub/path", 404),
    ("POST", "/completion/admin", 404),
    ("GET", "/health/../../etc/passwd", 404),
    ("GET", "/functions/v1/nothing", 404),
    ("PROPFIND", "/", 404),
]


@pytest.mark.parametrize(("method", "path", "status"), ODD)
def test_odd_methods_and_unknown_paths_get_the_envelope(attack: Hostile, method: str, path: str, status: int) -> None:
    response = attack.http.request(method, attack.url + path, headers={"Authorization": f"Bearer {attack.token()}"})
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == status
    assert "root:" not in response.text


def _raw_exchange(attack: Hostile, request: bytes, timeout: float = 15.0) -> bytes:
    """Send ``request`` over a fresh connection and read until the server closes (bounded)."""
    assert attack.process.port is not None
    with socket.create_connection((HOST, attack.process.port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may close as soon as it has seen enough
        data = b""
        for _ in range(1000):
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize(("count", "size"), [(1, 1 << 20), (2000, 64)])
def test_huge_headers_are_refused_with_the_envelope(attack: Hostile, count: int, size: int) -> None:
    headers = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * size) for i in range(count))
    started = time.monotonic()
    raw = _raw_exchange(attack, b"POST /chat HTTP/1.1\r\nHost: x\r\n" + headers + b"Content-Length: 2\r\n\r\n{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), head[:200]
    assert json.loads(body)["error"]["code"] == 431
    assert time.monotonic() - started < 10.0
    assert attack.bystander_served()


def test_a_request_line_with_a_nul_gets_the_envelope_too(attack: Hostile) -> None:
    # Like a head over the limit (431 above), a request line the HTTP parser refuses is answered in the
    # envelope, not with the server's plain-text page.
    raw = _raw_exchange(attack, b"GET /chat\x00%ED%A0%80 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head[:200]
    assert b"content-type: application/json" in head.lower(), raw[:300]
    assert json.loads(body)["error"]["code"] == 400
    assert httpx.get(attack.url + "/health", timeout=10.0).status_code == 200

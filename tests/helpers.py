"""Helpers shared by test modules: tokens, constants, canned upstream bodies, free loopback ports and one
request straight into an ASGI app."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import jwt

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_KEY = "sk-or-v1-test-upstream-key"
JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
USER_ID = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
HOST = "127.0.0.1"
# The tests' HEALTH_TOKEN: health gives its detail (checks, versions, configuration) only to it.
HEALTH_TOKEN = "health-token-for-the-tests"
HEALTH_DETAIL = {"Authorization": f"Bearer {HEALTH_TOKEN}"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def mint(
    secret: str = JWT_SECRET, *, algorithm: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any
) -> str:
    """A Supabase-shaped access token; keyword arguments override or (with None) drop claims."""
    now = int(time.time())
    body: dict[str, Any] = {
        "sub": USER_ID,
        "aud": "authenticated",
        "role": "authenticated",
        "iat": now,
        "exp": now + 3600,
        "email": "ada@example.com",
        "is_anonymous": False,
    }
    for key, value in claims.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return jwt.encode(body, secret, algorithm=algorithm, headers=headers)


def bearer(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or mint()}"}


class Sleeps(list[float]):
    """Records every delay the client asked for instead of sleeping."""

    async def __call__(self, delay: float) -> None:
        self.append(delay)


def completion_body(content: str = "Hello!", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "gen-1-abc",
        "provider": "DeepInfra",
        "model": "openai/gpt-4o",
        "object": "chat.completion",
        "created": 1744845790,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "native_finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "refusal": None},
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, "cost": 0.00014},
    }
    body.update(extra)
    return body


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})}
    )


Answer = tuple[int, dict[str, str], bytes]


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    client: str = "127.0.0.1",
    body: bytes = b"",
) -> Answer:
    """One request straight into an ASGI app (no client normalizes ``path``: ``..`` arrives as sent)."""
    sent_headers = [(name.lower().encode(), value.encode()) for name, value in headers]
    if not any(name == b"host" for name, _ in sent_headers):
        sent_headers.insert(0, (b"host", b"127.0.0.1:8080"))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},  # as uvicorn speaks it
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": sent_headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the client stays connected
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    answer = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], answer_headers, answer

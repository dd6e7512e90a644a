"""Shared fixtures: services over httpx.MockTransport that never sleep for real."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from openrouter_service import OpenRouterService

Handler = Callable[[httpx.Request], httpx.Response]


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


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def make_service(sleeps: Sleeps) -> Callable[..., tuple[OpenRouterService, list[httpx.Request]]]:
    def build(handler: Handler | list[httpx.Response], **kwargs: Any) -> tuple[OpenRouterService, list[httpx.Request]]:
        seen: list[httpx.Request] = []
        replies = list(handler) if isinstance(handler, list) else None

        def dispatch(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            if replies is not None:
                return replies.pop(0)
            assert callable(handler)
            return handler(request)

        client = httpx.AsyncClient(transport=httpx.MockTransport(dispatch))
        kwargs.setdefault("sleep", sleeps)
        service = OpenRouterService("sk-or-v1-testkey0123456789", http_client=client, **kwargs)
        return service, seen

    return build

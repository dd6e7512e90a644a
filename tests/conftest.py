"""Shared fixtures: services over httpx.MockTransport that never sleep for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from helpers import Sleeps
from openrouter_service import OpenRouterService

Handler = Callable[[httpx.Request], httpx.Response]


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

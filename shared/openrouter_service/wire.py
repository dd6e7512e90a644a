"""The chat-completions wire format: request bodies out, answers in, and the errors OpenRouter hides
in answers that look fine (an HTTP 200 with an ``error`` body, a choice that finished with ``error``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import OpenRouterError, OpenRouterResponseError, error_from_upstream

__all__ = [
    "Completion",
    "add_usage",
    "check_completion",
    "encode",
    "error_in_body",
    "failure_in",
    "json_object_text",
    "json_or_none",
    "read_capped",
]


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The whole body of an answer (then closed); ``OpenRouterResponseError`` past ``limit`` bytes."""
    try:
        declared = response.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() and len(declared) < 19 else 0
        parts: list[bytes] = []
        if size <= limit:
            size = 0
            async for part in response.aiter_bytes():
                size += len(part)
                if size > limit:
                    break
                parts.append(part)
    finally:
        await response.aclose()
    if size > limit:
        raise OpenRouterResponseError(
            f"OpenRouter sent an answer larger than {limit} bytes.",
            upstream_status=200 if response.status_code == 200 else None,
        )
    return b"".join(parts)


def encode(payload: Mapping[str, Any]) -> bytes:
    """``payload`` as the compact JSON body we send."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_object_text(raw: bytes) -> bytes | None:
    """``raw`` when it is a JSON object in UTF-8 as it stands (what a JSON response may carry as it is), for
    a body that parsed: ``json.loads`` also takes UTF-16 and UTF-32, and a BOM."""
    start = raw.lstrip()[:1]
    return raw if start == b"{" else None


def json_or_none(raw: bytes) -> Any:
    """The parsed JSON body, or ``None`` when it is not JSON (or nested too deeply to parse)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


@dataclass(slots=True)
class Completion:
    """A finished chat completion and how it was obtained."""

    data: dict[str, Any]
    attempts: int
    latency_ms: float
    parsed: Any = None
    # The JSON text ``data`` was parsed from, as OpenRouter sent it (an object, UTF-8), while ``data`` is
    # exactly that (no structured re-ask replaced it): an answer passing it on sends these bytes instead
    # of encoding ``data`` again. None otherwise.
    body: bytes | None = None

    @property
    def content(self) -> str | None:
        """The first choice's message content."""
        message = self.data["choices"][0].get("message") or {}
        content = message.get("content")
        return content if isinstance(content, str) else None

    @property
    def usage(self) -> dict[str, Any] | None:
        """Token counts and cost as the provider reported them."""
        usage = self.data.get("usage")
        return usage if isinstance(usage, dict) else None


def add_usage(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    """Token counts and cost of two calls summed (a structured re-ask is paid for too)."""
    if not more:
        return total
    if not total:
        return dict(more)
    summed = dict(total)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
        a, b = total.get(key), more.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float):
            summed[key] = a + b
    return summed


def failure_in(status: int, data: Any) -> OpenRouterError | None:
    """The error an answer with ``status`` and parsed body ``data`` (``None``: not JSON) reports, if any.

    A 200 that is not JSON is left to the caller: what it means depends on what was asked for.
    """
    if status != 200:
        return error_from_upstream(status, data)
    return error_in_body(data) if data is not None else None


def error_in_body(data: Any) -> OpenRouterError | None:
    """An error OpenRouter hid inside an HTTP 200 body, or ``None``."""
    if not isinstance(data, dict):
        return OpenRouterResponseError("OpenRouter returned a JSON value that is not an object.")
    if data.get("error"):
        return error_from_upstream(200, data)
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        if first.get("finish_reason") == "error":
            return error_from_upstream(200, first.get("error") or {"code": 502, "message": "The provider failed."})
    return None


def check_completion(data: dict[str, Any], attempts: int = 0) -> dict[str, Any]:
    """Check that a 200 body is a usable completion; clear errors instead of ``KeyError``."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise OpenRouterResponseError(
            "OpenRouter returned no choices (the model produced nothing; it may be warming up).",
            upstream_status=200,
            attempts=attempts,
        )
    first = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
        raise OpenRouterResponseError(
            "OpenRouter returned a choice without a message.", upstream_status=200, attempts=attempts
        )
    return data

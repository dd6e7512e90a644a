"""CORS for browser callers (supabase-js runs in the browser): headers on every answer, preflights."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ALLOWED_HEADERS", "cors_headers", "origin_allowed", "preflight_headers"]

ALLOWED_HEADERS = "authorization, x-client-info, apikey, content-type, x-request-id"
ALLOWED_METHODS = "GET, POST, OPTIONS"
EXPOSED_HEADERS = "X-Request-Id, Retry-After"


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """Whether a browser at ``origin`` may read our answers."""
    return origin is not None and ("*" in allowed or origin in allowed)


def cors_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str]:
    """Headers that let an allowed origin read the answer (none for others)."""
    if "*" in allowed:
        return {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": EXPOSED_HEADERS}
    if origin_allowed(origin, allowed):
        assert origin is not None
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            "Vary": "Origin",
        }
    return {"Vary": "Origin"}


def preflight_headers(origin: str | None, allowed: Sequence[str]) -> dict[str, str]:
    """The answer to an ``OPTIONS`` preflight from an allowed origin."""
    return {
        **cors_headers(origin, allowed),
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": "86400",
    }

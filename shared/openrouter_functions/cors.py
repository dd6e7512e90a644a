"""CORS for browser callers (supabase-js runs in the browser): headers on every answer, preflights.

CORS is not what keeps strangers out (the bearer token is; see docs/security.md): it only decides
which web pages may *read* our answers. Origins are compared exactly, so an entry a browser can never
send (``https://app.example/``, ``app.example``) would silently match nothing: :func:`origin_problem`
names such entries and the server refuses to start with them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ALLOWED_HEADERS", "cors_headers", "origin_allowed", "origin_problem", "preflight_headers"]

ALLOWED_HEADERS = "authorization, x-client-info, apikey, content-type, x-request-id, x-region"
ALLOWED_METHODS = "GET, POST, OPTIONS"
EXPOSED_HEADERS = "X-Request-Id, Retry-After, WWW-Authenticate, X-Thread-Id, X-Message-Id"

# What a browser sends in `Origin`: scheme "://" host [":" port], lower case, nothing after.
_ORIGIN = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<host>\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?$"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def origin_problem(entry: str) -> str | None:
    """Why ``entry`` of ``ALLOWED_ORIGINS`` can never equal a browser's ``Origin`` header, or ``None``."""
    if entry == "*":
        return None
    shown = entry if len(entry) <= 80 else entry[:77] + "..."
    if "*" in entry:
        return f"ALLOWED_ORIGINS entry {shown!r}: wildcards are not supported; list each origin, or use * alone"
    if entry == "null":
        return "ALLOWED_ORIGINS entry 'null': sandboxed pages and local files send it; anyone can, so it is refused"
    if "://" not in entry:
        return f"ALLOWED_ORIGINS entry {shown!r} has no scheme; write it as https://{entry.split('/')[0]}"
    if entry != entry.lower():
        return f"ALLOWED_ORIGINS entry {shown!r}: browsers send origins in lower case; write {entry.lower()!r}"
    match = _ORIGIN.match(entry)
    if match is None:
        scheme, rest = entry.split("://", 1)
        host = re.split(r"[/?#]", rest, maxsplit=1)[0]
        return f"ALLOWED_ORIGINS entry {shown!r} has a path, query or trailing slash; an origin is {scheme}://{host}"
    if match["port"] is not None and _DEFAULT_PORTS.get(match["scheme"]) == match["port"]:
        return f"ALLOWED_ORIGINS entry {shown!r}: browsers omit the default port; write {entry.rsplit(':', 1)[0]!r}"
    return None


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

"""The one error envelope every function answers with, and the one table from exceptions to replies.

``{"error": {"code": <HTTP status>, "type": "<stable word>", "message": "<friendly>"}}`` — the openai SDK
reads ``error.message``/``error.type``; Supabase's function clients read ``error`` (an object here,
which they pass on as is).

The client's exceptions describe what OpenRouter did; what a caller is told is decided here, in
:data:`REPLIES`. Where the obvious mapping would mislead a caller we deviate on purpose:

* upstream 401/402 mean *our* OpenRouter key or credits are wrong, not the caller's credentials, so the
  caller gets 502 (``upstream_auth``) / 503 (``upstream_credits``), never their own 401/402 (a browser
  would sign its user out over them);
* a 429 that is still 429 after every retry (or asks for a wait longer than we sleep) becomes 503
  ``upstream_rate_limited`` with ``Retry-After``: the caller did nothing wrong and waiting helps;
* a response the model produced but that breaks the requested ``response_format`` is 502: the caller's
  request was fine, the model failed it.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from starlette.responses import Response

from openrouter_service import errors

from .ledger import LedgerUnavailable

__all__ = [
    "REPLIES",
    "ApiError",
    "Reply",
    "error_body",
    "error_response",
    "json_response",
    "let_go",
    "reply_for",
]


class ApiError(Exception):
    """A request the function refuses: status, stable type word, friendly message, optional headers."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.retry_after = retry_after
        self.headers = headers or {}
        self.details = details


class Reply(NamedTuple):
    """A row of :data:`REPLIES`: what a caller is told about one kind of exception."""

    status: int
    type: str
    # Shown instead of the exception's own text (which may name our configuration or store).
    message: str | None = None
    retry_after: float | None = None


# Exception class -> reply. Looked up along the class's MRO, most specific first. An upstream 503 keeps
# its 503 whatever the row says (the provider is briefly unavailable: waiting helps, say so).
REPLIES: dict[type[BaseException], Reply] = {
    errors.OpenRouterConfigError: Reply(
        500, "configuration_error", "The server is not configured to reach the AI service."
    ),
    errors.OpenRouterValidationError: Reply(400, "invalid_request"),
    errors.OpenRouterContextLengthError: Reply(400, "context_length_exceeded"),
    errors.OpenRouterBadRequestError: Reply(400, "bad_request"),
    errors.OpenRouterNotFoundError: Reply(404, "not_found"),
    errors.OpenRouterPayloadTooLargeError: Reply(413, "payload_too_large"),
    errors.OpenRouterModerationError: Reply(403, "content_flagged"),
    errors.OpenRouterAuthError: Reply(502, "upstream_auth"),
    errors.OpenRouterCreditsError: Reply(503, "upstream_credits"),
    errors.OpenRouterRateLimitError: Reply(503, "upstream_rate_limited"),
    errors.OpenRouterServerError: Reply(502, "upstream_error"),
    errors.OpenRouterTimeoutError: Reply(504, "upstream_timeout"),
    errors.OpenRouterConnectionError: Reply(502, "upstream_unreachable"),
    errors.OpenRouterResponseError: Reply(502, "bad_upstream_response"),
    errors.OpenRouterSchemaError: Reply(502, "schema_violation"),
    errors.OpenRouterError: Reply(502, "upstream_error"),
    LedgerUnavailable: Reply(503, "ledger_unavailable", "Usage accounting is unavailable; try again shortly.", 5.0),
}
INTERNAL_MESSAGE = "Something went wrong on our side. Try again later."
INTERNAL = Reply(500, "internal", INTERNAL_MESSAGE)


def _row(exc: BaseException) -> Reply:
    for cls in type(exc).__mro__:
        found = REPLIES.get(cls)
        if found is not None:
            return found
    return INTERNAL


def reply_for(exc: BaseException) -> ApiError:
    """What a caller is told about ``exc``; anything unknown is a bland 500 (the details go to the log)."""
    if isinstance(exc, ApiError):
        return exc
    row = _row(exc)
    if not isinstance(exc, errors.OpenRouterError):
        return ApiError(row.status, row.type, row.message or INTERNAL_MESSAGE, retry_after=row.retry_after)
    status = 503 if exc.upstream_status == 503 else row.status
    details: dict[str, Any] | None = None
    reasons = exc.metadata.get("reasons") if exc.metadata else None
    if reasons:
        details = {"reasons": reasons}
    if isinstance(exc, errors.OpenRouterSchemaError) and exc.violations:
        details = {"violations": [v.as_dict() for v in exc.violations[:20]]}
    retry_after = exc.retry_after if exc.retry_after is not None else row.retry_after
    return ApiError(status, row.type, row.message or exc.message, retry_after=retry_after, details=details)


def let_go(exc: BaseException | None) -> None:
    """Forget what a handled exception keeps alive: every exception of its chain (causes and contexts)
    drops its traceback, whose frames held the failed call's locals (the body, the upstream request and
    answer) and, often, the exception itself.

    Such a cycle is freed only by the cyclic collector, which runs seldom once the functions are loaded
    (hosting.settle_heap): without this, a stream of bad requests kept hundreds of their bodies alive. Call
    it once the exception is answered and logged (a log line with its traceback needs it until then).
    """
    pending = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        pending += (current.__cause__, current.__context__)
        if isinstance(current, BaseExceptionGroup):
            pending += current.exceptions


def error_body(error: ApiError) -> dict[str, Any]:
    """The envelope as a dict."""
    inner: dict[str, Any] = {"code": error.status, "type": error.type, "message": error.message}
    if error.details:
        inner.update(error.details)
    return {"error": inner}


# json.dumps with options builds an encoder per call; this one is built once (same output).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    # A lone surrogate from upstream cannot be UTF-8; written as its JSON escape it stays valid JSON.
    payload = _ENCODER.encode(body).encode("utf-8", "backslashreplace")
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError) -> Response:
    """The envelope as an HTTP response, with ``Retry-After`` when waiting helps (whole seconds, >= 1)."""
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error_body(error), error.status, headers)

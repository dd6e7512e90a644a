"""The one error envelope every function answers with, and the mapping from errors to it.

``{"error": {"code": <HTTP status>, "type": "<stable word>", "message": "<friendly>"}}`` — the openai SDK
reads ``error.message``/``error.type``; Supabase's function clients read ``error`` (an object here,
which they pass on as is).
"""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import Response

from openrouter_service.errors import OpenRouterError

__all__ = ["ApiError", "error_body", "error_from_exception", "error_response", "json_response"]


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


def error_from_exception(exc: BaseException) -> ApiError:
    """Any exception as the ApiError a caller should see; unknown ones become a bland 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OpenRouterError):
        details: dict[str, Any] | None = None
        reasons = exc.metadata.get("reasons") if exc.metadata else None
        if reasons:
            details = {"reasons": reasons}
        violations = getattr(exc, "violations", None)
        if violations:
            details = {"violations": [v.as_dict() for v in violations[:20]]}
        return ApiError(exc.status_code, exc.type, exc.message, retry_after=exc.retry_after, details=details)
    return ApiError(500, "internal", "Something went wrong on our side. Try again later.")


def error_body(error: ApiError) -> dict[str, Any]:
    """The envelope as a dict."""
    inner: dict[str, Any] = {"code": error.status, "type": error.type, "message": error.message}
    if error.details:
        inner.update(error.details)
    return {"error": inner}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(payload, status_code=status, headers=headers, media_type="application/json")


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    """The envelope as an HTTP response, with ``Retry-After`` when waiting helps."""
    merged = {**error.headers, **(headers or {})}
    if error.retry_after is not None and error.status in (429, 503, 504, 502):
        merged["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return json_response(error_body(error), error.status, merged)

"""Every error the core package raises, one tree under :class:`OpenRouterError`.

Each error knows the HTTP status a function should answer with (``status_code``), a stable machine word
(``type``), a message fit to show a caller, and what the upstream said (``upstream_status``,
``upstream_code``, ``metadata``), how long a caller should wait (``retry_after``) and how many upstream
attempts were made (``attempts``).

Where the seed's mapping would mislead a caller we deviate on purpose:

* upstream 401/402 mean *our* OpenRouter key or credits are wrong, not the caller's credentials, so the
  caller gets 502 (``upstream_auth``) / 503 (``upstream_credits``), never their own 401/402;
* a 429 that is still 429 after every retry (or asks for a wait longer than we will sleep) becomes 503
  ``upstream_rate_limited`` with ``Retry-After``: the caller did nothing wrong and waiting helps;
* a response the model produced but that breaks the requested ``response_format`` is 502: the caller's
  request was fine, the model failed it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "OpenRouterAuthError",
    "OpenRouterBadRequestError",
    "OpenRouterConfigError",
    "OpenRouterConnectionError",
    "OpenRouterContextLengthError",
    "OpenRouterCreditsError",
    "OpenRouterError",
    "OpenRouterModerationError",
    "OpenRouterNotFoundError",
    "OpenRouterPayloadTooLargeError",
    "OpenRouterRateLimitError",
    "OpenRouterResponseError",
    "OpenRouterSchemaError",
    "OpenRouterServerError",
    "OpenRouterTimeoutError",
    "OpenRouterValidationError",
    "SchemaViolation",
    "error_from_upstream",
]


class OpenRouterError(Exception):
    """Base of every error the core raises; carries what a function needs to answer its caller."""

    status_code: int = 502
    type: str = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        type: str | None = None,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        upstream_code: int | str | None = None,
        metadata: dict[str, Any] | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if type is not None:
            self.type = type
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        self.metadata = metadata or {}
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.message!r}, status_code={self.status_code}, "
            f"type={self.type!r}, upstream_status={self.upstream_status}, attempts={self.attempts})"
        )


class OpenRouterConfigError(OpenRouterError):
    """Raised at construction when the service is misconfigured (e.g. no ``OPENROUTER_API_KEY``)."""

    status_code = 500
    type = "configuration_error"


class OpenRouterValidationError(OpenRouterError, ValueError):
    """Raised before any network call when messages or parameters are invalid; names the field."""

    status_code = 400
    type = "invalid_request"


class OpenRouterBadRequestError(OpenRouterError):
    """Raised when OpenRouter rejects the request as malformed (upstream 400/422)."""

    status_code = 400
    type = "bad_request"


class OpenRouterContextLengthError(OpenRouterBadRequestError):
    """Raised when the prompt does not fit the model's context window."""

    type = "context_length_exceeded"


class OpenRouterNotFoundError(OpenRouterError):
    """Raised when OpenRouter answers 404 (unknown model or endpoint)."""

    status_code = 404
    type = "not_found"


class OpenRouterPayloadTooLargeError(OpenRouterError):
    """Raised when OpenRouter answers 413: the request is too large."""

    status_code = 413
    type = "payload_too_large"


class OpenRouterModerationError(OpenRouterError):
    """Raised when OpenRouter's moderation flags the input (upstream 403); ``metadata`` has the reasons."""

    status_code = 403
    type = "content_flagged"


class OpenRouterAuthError(OpenRouterError):
    """Raised when OpenRouter refuses *our* API key (upstream 401): a server misconfiguration."""

    status_code = 502
    type = "upstream_auth"


class OpenRouterCreditsError(OpenRouterError):
    """Raised when *our* OpenRouter account is out of credits (upstream 402)."""

    status_code = 503
    type = "upstream_credits"


class OpenRouterRateLimitError(OpenRouterError):
    """Raised when upstream rate limiting outlasted our retries or asked for too long a wait."""

    status_code = 503
    type = "upstream_rate_limited"


class OpenRouterServerError(OpenRouterError):
    """Raised when OpenRouter or its provider failed (5xx, 408, errors inside HTTP 200) after retries."""

    status_code = 502
    type = "upstream_error"


class OpenRouterTimeoutError(OpenRouterError):
    """Raised when OpenRouter did not answer within the timeout, on every attempt."""

    status_code = 504
    type = "upstream_timeout"


class OpenRouterConnectionError(OpenRouterError):
    """Raised when OpenRouter could not be reached or dropped the connection, on every attempt."""

    status_code = 502
    type = "upstream_unreachable"


class OpenRouterResponseError(OpenRouterError):
    """Raised when OpenRouter's answer is unusable: not JSON, no ``choices``, a cut stream."""

    status_code = 502
    type = "bad_upstream_response"


class SchemaViolation:
    """One way a structured response broke its schema: where (JSON path) and what."""

    __slots__ = ("message", "path")

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"SchemaViolation({self.path!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SchemaViolation) and (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


class OpenRouterSchemaError(OpenRouterError):
    """Raised when the model's content breaks the requested ``response_format``, after any re-ask."""

    status_code = 502
    type = "schema_violation"

    def __init__(
        self,
        message: str,
        *,
        violations: list[SchemaViolation],
        raw_content: str,
        usage: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.violations = violations
        self.raw_content = raw_content
        self.usage = usage


# Upstream HTTP status -> (error class, whether our retry policy may try again).
_BY_STATUS: dict[int, type[OpenRouterError]] = {
    400: OpenRouterBadRequestError,
    401: OpenRouterAuthError,
    402: OpenRouterCreditsError,
    403: OpenRouterModerationError,
    404: OpenRouterNotFoundError,
    408: OpenRouterTimeoutError,
    413: OpenRouterPayloadTooLargeError,
    422: OpenRouterBadRequestError,
    429: OpenRouterRateLimitError,
}

_FRIENDLY: dict[type[OpenRouterError], str] = {
    OpenRouterAuthError: "The AI service rejected this server's credentials. The operator has to fix the key.",
    OpenRouterCreditsError: "The AI service account is out of credits. Try again later.",
    OpenRouterRateLimitError: "The AI service is busy right now. Try again shortly.",
    OpenRouterTimeoutError: "The AI service took too long to answer. Try again.",
    OpenRouterServerError: "The AI service failed to answer. Try again.",
}


def _status_of(code: int | str | None, fallback: int) -> int:
    if isinstance(code, int) and 100 <= code <= 599:
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return fallback


def error_from_upstream(
    status: int,
    body: Any,
    *,
    attempts: int = 0,
    retry_after: float | None = None,
) -> OpenRouterError:
    """Build the matching error from an upstream HTTP status and its (parsed) error body.

    ``body`` is the whole JSON body or just its ``error`` object; a 200 carrying an error uses the code
    inside it.
    """
    err = body.get("error", body) if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code")
    raw_metadata = err.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    upstream_message = err.get("message") if isinstance(err.get("message"), str) else None
    effective = status if status != 200 else _status_of(code, 502)
    if effective == 200:
        effective = 502
    error_type = metadata.get("error_type")

    cls: type[OpenRouterError]
    if error_type == "context_length_exceeded":
        cls = OpenRouterContextLengthError
    elif effective in _BY_STATUS:
        cls = _BY_STATUS[effective]
    elif error_type == "rate_limit_exceeded":
        cls = OpenRouterRateLimitError
    elif effective == 524:
        cls = OpenRouterTimeoutError
    else:
        cls = OpenRouterServerError

    # Messages from the caller-facing classes are ours; upstream text about our key or account stays in
    # logs (via upstream_code/metadata), never in a reply to a browser.
    if cls in _FRIENDLY:
        message = _FRIENDLY[cls]
        if upstream_message:
            metadata = {**metadata, "upstream_message": upstream_message}
    else:
        message = upstream_message or f"OpenRouter answered HTTP {effective}."

    status_code = None
    if cls is OpenRouterServerError and effective == 503:
        status_code = 503
    return cls(
        message,
        status_code=status_code,
        retry_after=retry_after,
        upstream_status=effective,
        upstream_code=code if isinstance(code, int | str) else None,
        metadata=metadata,
        attempts=attempts,
    )

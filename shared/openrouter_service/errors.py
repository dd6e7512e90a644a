"""Every error the client raises, one tree under :class:`OpenRouterError`.

Each class says what happened upstream (or before the call left); each error carries a message fit to
show a caller, what the upstream said (``upstream_status``, ``upstream_code``, ``metadata``), how long a
caller should wait before trying again (``retry_after``, ``None`` when waiting will not help) and how
many upstream attempts were made (``attempts``). Which reply a function sends for an error is the
functions layer's business, not this module's.
"""

from __future__ import annotations

from typing import Any

from .redact import mask_secrets, mask_value, preview

__all__ = [
    "UPSTREAM_MESSAGE_CHARS",
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

# The longest upstream error text passed on to a caller; OpenRouter's own messages are far shorter, a
# provider's may quote whole request bodies.
UPSTREAM_MESSAGE_CHARS = 500


class OpenRouterError(Exception):
    """Base of every error the client raises: what went wrong, and what upstream said about it."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        upstream_code: int | str | None = None,
        metadata: dict[str, Any] | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        self.metadata = metadata or {}
        self.attempts = attempts

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.message!r}, upstream_status={self.upstream_status}, "
            f"attempts={self.attempts})"
        )

    def redact(self, secret: str) -> None:
        """Remove ``secret`` (our key, whatever its shape) from the message and metadata."""
        # Upstream text was pattern-masked already, which may have left the tail of a key of an odd shape.
        forms = (secret, mask_secrets(secret))
        self.message = mask_secrets(self.message, *forms)
        self.args = (self.message,)
        self.metadata = mask_value(self.metadata, *forms)


class OpenRouterConfigError(OpenRouterError):
    """Raised at construction when the service is misconfigured (e.g. no ``OPENROUTER_API_KEY``)."""


class OpenRouterValidationError(OpenRouterError, ValueError):
    """Raised before any network call when messages or parameters are invalid; names the field."""


class OpenRouterBadRequestError(OpenRouterError):
    """Raised when OpenRouter rejects the request as malformed (upstream 400/422)."""


class OpenRouterContextLengthError(OpenRouterBadRequestError):
    """Raised when the prompt does not fit the model's context window."""


class OpenRouterNotFoundError(OpenRouterError):
    """Raised when OpenRouter answers 404 (unknown model or endpoint)."""


class OpenRouterPayloadTooLargeError(OpenRouterError):
    """Raised when OpenRouter answers 413: the request is too large."""


class OpenRouterModerationError(OpenRouterError):
    """Raised when OpenRouter's moderation flags the input (upstream 403); ``metadata`` has the reasons."""


class OpenRouterAuthError(OpenRouterError):
    """Raised when OpenRouter refuses *our* API key (upstream 401): a server misconfiguration."""


class OpenRouterCreditsError(OpenRouterError):
    """Raised when *our* OpenRouter account is out of credits (upstream 402)."""


class OpenRouterRateLimitError(OpenRouterError):
    """Raised when upstream rate limiting outlasted our retries or asked for too long a wait."""


class OpenRouterServerError(OpenRouterError):
    """Raised when OpenRouter or its provider failed (5xx, 408, errors inside HTTP 200) after retries."""


class OpenRouterTimeoutError(OpenRouterError):
    """Raised when OpenRouter did not answer within the timeout, on every attempt."""


class OpenRouterConnectionError(OpenRouterError):
    """Raised when OpenRouter could not be reached or dropped the connection, on every attempt."""


class OpenRouterResponseError(OpenRouterError):
    """Raised when OpenRouter's answer is unusable: not JSON, no ``choices``, a cut stream."""


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


# Upstream HTTP status -> the error class that says what it means.
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
    if isinstance(code, str) and len(code) == 3 and code.isdigit():
        code = int(code)
    if isinstance(code, int) and 100 <= code <= 599:
        return code
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
    inside it. Upstream text is masked (keys, bearer tokens, JWTs: a provider may echo our request) and
    the message cut to :data:`UPSTREAM_MESSAGE_CHARS`.
    """
    err = body.get("error", body) if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    code = err.get("code")
    if isinstance(code, str):
        code = mask_secrets(code)[:64]
    raw_metadata = err.get("metadata")
    metadata: dict[str, Any] = mask_value(raw_metadata) if isinstance(raw_metadata, dict) else {}
    raw_message = err.get("message")
    upstream_message = preview(raw_message, UPSTREAM_MESSAGE_CHARS) if isinstance(raw_message, str) else None
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

    return cls(
        message,
        retry_after=retry_after,
        upstream_status=effective,
        upstream_code=code if isinstance(code, int | str) else None,
        metadata=metadata,
        attempts=attempts,
    )

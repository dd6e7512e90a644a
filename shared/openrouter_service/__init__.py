"""The OpenRouter client the seed asks for: OpenRouterService, its retries, errors and streams.

It knows nothing of serving HTTP; the functions layer (``openrouter_functions``) builds on it.
"""

from .attempts import Attempt, Attempts
from .calllog import CallLog
from .client import DEFAULT_BASE_URL, DEFAULT_MODEL, ChatStream, Completion, OpenRouterService
from .errors import (
    OpenRouterAuthError,
    OpenRouterBadRequestError,
    OpenRouterConfigError,
    OpenRouterConnectionError,
    OpenRouterContextLengthError,
    OpenRouterCreditsError,
    OpenRouterError,
    OpenRouterModerationError,
    OpenRouterNotFoundError,
    OpenRouterPayloadTooLargeError,
    OpenRouterRateLimitError,
    OpenRouterResponseError,
    OpenRouterSchemaError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
    OpenRouterValidationError,
    SchemaViolation,
)
from .retry import RetryDecision, RetryPolicy
from .sse import SSEComment

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "Attempt",
    "Attempts",
    "CallLog",
    "ChatStream",
    "Completion",
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
    "OpenRouterService",
    "OpenRouterTimeoutError",
    "OpenRouterValidationError",
    "RetryDecision",
    "RetryPolicy",
    "SSEComment",
    "SchemaViolation",
    "__version__",
]

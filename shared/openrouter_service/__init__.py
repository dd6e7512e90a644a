"""OpenRouter Functions' core: the OpenRouter client and what every function needs."""

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
from .retry import RetryPolicy
from .sse import SSEComment

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
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
    "RetryPolicy",
    "SSEComment",
    "SchemaViolation",
    "__version__",
]

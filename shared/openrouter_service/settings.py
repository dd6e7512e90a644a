"""The client's configuration from the environment, and the one way to build a client from it.

The functions' own settings extend :class:`ClientSettings`, so a deployed function and a script calling
``OpenRouterService.from_env()`` read the same variables the same way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from .client import OpenRouterService

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DEADLINE",
    "DEFAULT_FIRST_CHUNK_TIMEOUT",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MODEL",
    "ClientSettings",
    "blank_is_unset",
    "url_or_unset",
]

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
# The seed's default `openrouter/azure/gpt-4o` is not a real OpenRouter id.
DEFAULT_MODEL = "openai/gpt-4o"
# A whole call, retries and stream included: Cloud Run's default request timeout, so a call ends with our
# error rather than the platform's cut.
DEFAULT_DEADLINE = 300.0
# A stream's wait for its first data chunk: OpenRouter's keep-alive comments reset every read timeout,
# so without this bound a stream of only comments would run to the deadline.
DEFAULT_FIRST_CHUNK_TIMEOUT = 120.0
# One non-streamed answer, or one stream event: answers with generated images run to a few MB.
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024


def blank_is_unset(value: object) -> object:
    """An empty or blank environment variable means "not set"."""
    return None if isinstance(value, str) and not value.strip() else value


def url_or_unset(value: object) -> object:
    """A URL without its trailing slash; blank means "not set"."""
    value = blank_is_unset(value)
    return value.rstrip("/") if isinstance(value, str) else value


class ClientSettings(BaseModel):
    """``OPENROUTER_*`` and ``DEFAULT_SYSTEM_PROMPT``; the key is a ``SecretStr`` so it never prints.

    Built with no arguments (or some), it reads the process environment as pydantic-settings' environment
    source did: each field from the variable of its name in any case, the value as given (never decoded
    as JSON), keyword arguments winning. Not pydantic-settings itself: its import pulls in sources we never
    use (dotenv, TOML, YAML, cloud secret stores) and took ~40 ms of a cold start; ``.env`` is the local
    server's own, loaded into the environment before anything reads it.
    """

    # defer_build: a subclass (the functions' Settings) does not pay for building this class's validator.
    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, frozen=True, validate_default=True, defer_build=True
    )

    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = DEFAULT_BASE_URL
    openrouter_model: str = DEFAULT_MODEL
    openrouter_timeout: float = Field(default=30.0, gt=0)
    openrouter_max_retries: int = Field(default=3, ge=0, le=10)
    openrouter_deadline: float = Field(default=DEFAULT_DEADLINE, gt=0)
    openrouter_first_chunk_timeout: float = Field(default=DEFAULT_FIRST_CHUNK_TIMEOUT, gt=0)
    openrouter_max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, ge=1024)
    openrouter_app_url: str | None = None
    openrouter_app_title: str | None = "OpenRouter Functions"
    default_system_prompt: str | None = None

    _blank_key_is_unset = field_validator("openrouter_api_key", mode="before")(blank_is_unset)
    _url_without_slash = field_validator("openrouter_app_url", mode="before")(url_or_unset)

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**self._values_in(os.environ), **values})

    @classmethod
    def _values_in(cls, env: Mapping[str, str]) -> dict[str, str]:
        """The fields' variables in ``env``, by field name (any case; of two spellings the later wins)."""
        fields = cls.model_fields
        return {key: value for key, value in ((k.lower(), v) for k, v in env.items()) if key in fields}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Settings from ``env`` when given (tests), else from the process environment."""
        if env is None:
            return cls()
        return cls.model_validate(cls._values_in(env))

    def openrouter_api_key_value(self) -> str | None:
        """The OpenRouter key in clear, for the one place that sends it."""
        return self.openrouter_api_key.get_secret_value() if self.openrouter_api_key else None

    def build_service(self, **overrides: Any) -> OpenRouterService:
        """An :class:`OpenRouterService` configured from these settings (``overrides`` win)."""
        from .client import OpenRouterService

        kwargs: dict[str, Any] = {
            "model_name": self.openrouter_model,
            "base_url": self.openrouter_base_url,
            "timeout": self.openrouter_timeout,
            "max_retries": self.openrouter_max_retries,
            "deadline": self.openrouter_deadline,
            "first_chunk_timeout": self.openrouter_first_chunk_timeout,
            "max_response_bytes": self.openrouter_max_response_bytes,
            "default_system_prompt": self.default_system_prompt,
            "app_url": self.openrouter_app_url,
            "app_title": self.openrouter_app_title,
        }
        kwargs.update(overrides)
        api_key = kwargs.pop("api_key", self.openrouter_api_key_value())
        return OpenRouterService(api_key, **kwargs)

"""Configuration from the environment: one settings object for the whole product."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every environment variable the product reads; secrets are ``SecretStr`` so they never print."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str = "https://openrouter.ai/api/v1"
    openrouter_model: str = "openai/gpt-4o"
    openrouter_timeout: float = Field(default=30.0, gt=0)
    openrouter_max_retries: int = Field(default=3, ge=0, le=10)
    openrouter_app_url: str | None = None
    openrouter_app_title: str | None = "OpenRouter Functions"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` when given (tests), else from the process environment."""
        if env is None:
            return cls()
        fields = set(cls.model_fields)
        values = {k.lower(): v for k, v in env.items() if k.lower() in fields}
        return cls.model_validate(values)

    def openrouter_api_key_value(self) -> str | None:
        """The OpenRouter key in clear, for the one place that sends it."""
        return self.openrouter_api_key.get_secret_value() if self.openrouter_api_key else None

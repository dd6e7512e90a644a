"""Configuration from the environment: one settings object for the whole product."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from openrouter_service.settings import ClientSettings, blank_is_unset, url_or_unset

__all__ = ["Settings", "on_cloud_runtime"]

CsvList = Annotated[tuple[str, ...], NoDecode]


class Settings(ClientSettings):
    """Every environment variable the product reads (the client's own, plus the functions');
    secrets are ``SecretStr`` so they never print."""

    # Supabase auth
    supabase_url: str | None = None
    supabase_jwt_secret: SecretStr | None = None
    supabase_jwks_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    allow_anonymous_users: bool = False

    # Request policy
    allowed_origins: CsvList = ("*",)
    allowed_models: CsvList = ()
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    prompt_guard: Literal["off", "flag", "block"] = "flag"
    log_prompts: bool = True
    health_cache_seconds: float = Field(default=10.0, ge=0)

    # Ledger: request log, usage and per-user limits
    database_url: SecretStr | None = None
    ledger_backend: Literal["auto", "sqlite", "postgres", "supabase_rest", "off"] = "auto"
    ledger_sqlite_path: str = ".openrouter-functions/ledger.sqlite3"
    ledger_failure_mode: Literal["closed", "open"] = "closed"
    default_rpm: int | None = Field(default=None, ge=0)
    default_daily_requests: int | None = Field(default=None, ge=0)
    default_daily_cost_usd: float | None = Field(default=None, ge=0)
    quota_reserve_usd: float = Field(default=0.01, ge=0)

    # Set by `openrouter-functions serve` when it runs without real credentials.
    offline_mode: bool = False

    @field_validator("allowed_origins", "allowed_models", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    _blank_limits_and_secrets_are_unset = field_validator(
        "default_rpm",
        "default_daily_requests",
        "default_daily_cost_usd",
        "max_output_tokens",
        "database_url",
        "supabase_jwt_secret",
        "supabase_service_role_key",
        mode="before",
    )(blank_is_unset)
    _supabase_urls_without_slash = field_validator("supabase_url", "supabase_jwks_url", mode="before")(url_or_unset)

    @property
    def jwks_url(self) -> str | None:
        """Where the project's public signing keys are: explicit, or derived from ``SUPABASE_URL``."""
        if self.supabase_jwks_url:
            return self.supabase_jwks_url
        if self.supabase_url:
            return f"{self.supabase_url}/auth/v1/.well-known/jwks.json"
        return None

    @property
    def token_issuer(self) -> str | None:
        """The ``iss`` claim user tokens must carry, when ``SUPABASE_URL`` is set."""
        return f"{self.supabase_url}/auth/v1" if self.supabase_url else None

    @property
    def resolved_ledger_backend(self) -> str:
        """The ledger backend in use: explicit, else Postgres, Supabase REST, or embedded SQLite."""
        if self.ledger_backend != "auto":
            return self.ledger_backend
        if self.database_url:
            return "postgres"
        if self.supabase_url and self.supabase_service_role_key:
            return "supabase_rest"
        return "sqlite"

    @property
    def ledger_problem(self) -> str | None:
        """Why the chosen ledger backend cannot be built, or ``None``."""
        backend = self.resolved_ledger_backend
        if backend == "postgres" and not self.database_url:
            return "LEDGER_BACKEND=postgres needs DATABASE_URL."
        if backend == "supabase_rest" and not (self.supabase_url and self.supabase_service_role_key):
            return "LEDGER_BACKEND=supabase_rest needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY."
        return None

    @property
    def auth_configured(self) -> bool:
        """Whether any way of verifying access tokens is configured."""
        return bool(self.supabase_jwt_secret) or self.jwks_url is not None


def on_cloud_runtime(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs on Cloud Run / Cloud Functions gen2 (both set ``K_SERVICE``).

    ``FUNCTION_TARGET`` is no such signal: functions-framework sets it itself when it loads a function,
    locally too.
    """
    return bool((os.environ if env is None else env).get("K_SERVICE"))

"""Configuration from the environment: one settings object for the whole product."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticUseDefault

from openrouter_service.settings import ClientSettings, blank_is_unset, url_or_unset
from openrouter_service.transport import max_connections

from .cors import origin_problem

__all__ = [
    "DEFAULT_DAILY_COST_USD",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "DEFAULT_RPM",
    "UNLIMITED",
    "Settings",
    "limit_or_default",
    "on_cloud_runtime",
    "plain_http_allowed",
]

# A comma-separated list: the variable's text reaches _split_csv as it is (ClientSettings never decodes JSON).
CsvList = tuple[str, ...]

# Conservative limits out of the box (README "Configuration" says why); each can be raised, or switched
# off by setting it to UNLIMITED. A blank variable keeps the default: an empty CI variable must not
# silently remove a limit.
DEFAULT_RPM = 60  # a person chatting sends a few a minute; a runaway script is stopped within the minute
DEFAULT_DAILY_COST_USD = 1.00  # bounds what one stolen or leaked user token can spend per day
# A long answer, room for reasoning models' thinking; without a cap the model's own (up to 128k) applies.
DEFAULT_MAX_OUTPUT_TOKENS = 16384
UNLIMITED = "unlimited"


def blank_keeps_default(value: object) -> object:
    """A blank environment variable keeps the setting's default (an empty CI variable changes nothing)."""
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault()
    return value


def limit_or_default(value: object) -> object:
    """A limit from the environment: blank keeps the default, ``unlimited`` switches the limit off."""
    value = blank_keeps_default(value)
    if isinstance(value, str) and value.strip().lower() == UNLIMITED:
        return None
    return value


def plain_http_allowed(url: str) -> bool:
    """Whether ``url`` may be used without TLS: only towards this machine (loopback)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    allow_any_origin: bool = False  # confirms ALLOWED_ORIGINS=* on a cloud runtime
    allow_plain_http: bool = False  # confirms plain-http upstream/Supabase URLs on a private network
    allowed_models: CsvList = ()
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    max_output_tokens: int | None = Field(default=DEFAULT_MAX_OUTPUT_TOKENS, gt=0)
    # Block by default, but only what the guard is sure of: its high-confidence hits (chat-template turn
    # tokens, "ignore all previous instructions", "print your system prompt", DAN / "an uncensored AI",
    # "disable your safety filters") are refused, everything else it catches ("### System:" headings,
    # "act as a travel agent with no limits on budget", "never reveal your system prompt") is only flagged.
    # On 630 texts written by someone who never saw the rules: 0 of 420 benign texts refused, 103 of 210
    # attacks refused and 149 flagged (refusing every hit, as block did before, refused 10 benign texts).
    prompt_guard: Literal["off", "flag", "block"] = "block"
    log_prompts: bool = True
    health_cache_seconds: float = Field(default=10.0, ge=0)
    # health answers strangers with its status only; this bearer token (or a service-role token) gets the
    # detail: which check failed, versions, configuration problems. For monitors and scheduled pings.
    health_token: SecretStr | None = None
    # Credits left under the OpenRouter key's limit below which health says "degraded".
    health_low_credits_usd: float = Field(default=1.0, ge=0)

    # Ledger: request log, usage and per-user limits
    database_url: SecretStr | None = None
    ledger_backend: Literal["auto", "sqlite", "postgres", "supabase_rest", "off"] = "auto"
    ledger_sqlite_path: str = ".openrouter-functions/ledger.sqlite3"
    ledger_failure_mode: Literal["closed", "open"] = "closed"
    # The embedded SQLite ledger deletes request_log rows older than this (PostgreSQL: ledger_settings and
    # its pg_cron job, docs/ledger.md). `unlimited` keeps them.
    request_log_retention_days: int | None = Field(default=30, ge=1)
    default_rpm: int | None = Field(default=DEFAULT_RPM, ge=0)
    default_daily_requests: int | None = Field(default=None, ge=0)
    default_daily_cost_usd: float | None = Field(default=DEFAULT_DAILY_COST_USD, ge=0)
    quota_reserve_usd: float = Field(default=0.01, ge=0)
    # How long a finished request may wait for its usage row to be written (retries included) before the
    # row goes to the usage_unrecorded log line instead. Raise it for a store that is slow under load.
    ledger_settle_seconds: float = Field(default=1.0, gt=0, le=30)

    # Conversations (docs/threads.md): the history a threaded turn sends upstream, and how often a running
    # answer is written to its message row (and the stop flag read).
    thread_history_messages: int = Field(default=50, ge=1, le=1000)
    thread_history_tokens: int = Field(default=16_000, ge=100)
    thread_flush_seconds: float = Field(default=0.5, ge=0.05, le=30)

    # Capacity and shutdown (capacity.py)
    max_in_flight: int | None = Field(default=None, gt=0)
    shutdown_drain_seconds: float = Field(default=8.0, ge=0)

    # Set by `openrouter-functions serve` when it runs without real credentials.
    offline_mode: bool = False

    @field_validator("allowed_origins", "allowed_models", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    _limits_default_when_blank = field_validator(
        "default_rpm",
        "default_daily_requests",
        "default_daily_cost_usd",
        "max_output_tokens",
        "request_log_retention_days",
        mode="before",
    )(limit_or_default)
    _guard_default_when_blank = field_validator("prompt_guard", mode="before")(blank_keeps_default)
    _blank_limits_and_secrets_are_unset = field_validator(
        "max_in_flight",
        "database_url",
        "supabase_jwt_secret",
        "supabase_service_role_key",
        "health_token",
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
    def in_flight_limit(self) -> int:
        """Calls one instance runs at once (``MAX_IN_FLIGHT``); by default as many as it may open upstream
        connections, so no call ever waits for one."""
        return self.max_in_flight if self.max_in_flight is not None else max_connections()

    def refusals(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Why these settings must not serve at all (chat and completion answer 500, ``serve`` exits),
        or nothing; ``env`` decides whether this is a cloud runtime (default: the process environment)."""
        problems = [p for p in map(origin_problem, self.allowed_origins) if p is not None]
        if "*" in self.allowed_origins and on_cloud_runtime(env) and not self.allow_any_origin:
            problems.append(
                "ALLOWED_ORIGINS=* on a cloud runtime lets any web page read the answers: list your web app's "
                "origins, or set ALLOW_ANY_ORIGIN=true to confirm"
            )
        for name, url in (
            ("OPENROUTER_BASE_URL", self.openrouter_base_url),
            ("SUPABASE_URL", self.supabase_url),
            ("SUPABASE_JWKS_URL", self.supabase_jwks_url),
        ):
            insecure = url is not None and urlsplit(url).scheme != "https" and not plain_http_allowed(url)
            if insecure and not self.allow_plain_http:
                problems.append(
                    f"{name} must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true "
                    "for a private network you trust)"
                )
        return problems

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

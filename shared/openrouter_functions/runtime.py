"""What one function instance builds once and reuses: settings, the client, the token verifier.

Built on the first request, not at import (no secrets read or sockets opened while modules load).
A misconfiguration is remembered and reported by every request and by ``health``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from openrouter_service.client import OpenRouterService
from openrouter_service.errors import OpenRouterConfigError

from .auth import TokenVerifier
from .config import Settings, on_cloud_runtime
from .envelope import ApiError
from .ledger import Ledger, Limits

__all__ = ["Runtime", "UpstreamProbe", "close_runtime", "get_runtime", "reset_runtime"]

LEDGER_BREAKER_SECONDS = 5.0


@dataclass(slots=True)
class UpstreamProbe:
    """The last reachability check of OpenRouter."""

    ok: bool
    latency_ms: float
    checked_at: float
    detail: str | None = None


@dataclass
class Runtime:
    """Per-instance state; nothing here matters for correctness across instances."""

    settings: Settings
    started_at: float = field(default_factory=time.time)
    _service: OpenRouterService | None = None
    _service_error: OpenRouterConfigError | None = None
    _verifier: TokenVerifier | None = None
    _probe: UpstreamProbe | None = None
    _probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _ledger: Ledger | None = None
    _ledger_built: bool = False
    sleep: Any = asyncio.sleep  # every wait (upstream retries, ledger backoff): injectable for tests
    # Breaker: after a ledger failure, calls fail fast for a few seconds instead of each waiting out
    # a timeout (a ledger outage must not add seconds to every request).
    ledger_down_until: float = 0.0

    def ledger_suspended(self) -> bool:
        return time.monotonic() < self.ledger_down_until

    def note_ledger_failure(self) -> None:
        self.ledger_down_until = time.monotonic() + LEDGER_BREAKER_SECONDS

    @property
    def ledger(self) -> Ledger | None:
        """The configured ledger backend (``None`` when ``LEDGER_BACKEND=off``), built on first use."""
        if not self._ledger_built:
            self._ledger = self._build_ledger()
            self._ledger_built = True
        return self._ledger

    def _build_ledger(self) -> Ledger | None:
        s = self.settings
        backend = s.resolved_ledger_backend
        if backend == "off":
            return None
        if backend == "postgres":
            if not s.database_url:
                raise ApiError(500, "configuration_error", "LEDGER_BACKEND=postgres needs DATABASE_URL.")
            from .ledger.postgres import PostgresLedger

            return PostgresLedger(s.database_url.get_secret_value())
        if backend == "supabase_rest":
            if not (s.supabase_url and s.supabase_service_role_key):
                raise ApiError(
                    500,
                    "configuration_error",
                    "LEDGER_BACKEND=supabase_rest needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY.",
                )
            from .ledger.rest import SupabaseRestLedger

            return SupabaseRestLedger(s.supabase_url, s.supabase_service_role_key.get_secret_value())
        from .ledger.sqlite import SQLiteLedger

        return SQLiteLedger(s.ledger_sqlite_path)

    @property
    def default_limits(self) -> Limits:
        s = self.settings
        return Limits(s.default_rpm, s.default_daily_requests, s.default_daily_cost_usd)

    @property
    def service(self) -> OpenRouterService:
        """The pooled OpenRouter client, or a 500 ``configuration_error`` when it cannot exist."""
        if self._service is None:
            if self._service_error is None:
                try:
                    self._service = self._build_service()
                except OpenRouterConfigError as exc:
                    self._service_error = exc
            if self._service_error is not None:
                raise ApiError(500, "configuration_error", "The server is not configured to reach the AI service.")
        assert self._service is not None
        return self._service

    def _build_service(self) -> OpenRouterService:
        return self.settings.build_service(sleep=self.sleep)

    @property
    def verifier(self) -> TokenVerifier:
        if self._verifier is None:
            s = self.settings
            self._verifier = TokenVerifier(
                jwt_secret=s.supabase_jwt_secret.get_secret_value() if s.supabase_jwt_secret else None,
                jwks_url=s.jwks_url,
                issuer=s.token_issuer,
                allow_anonymous=s.allow_anonymous_users,
            )
        return self._verifier

    def configuration_problems(self) -> list[str]:
        """What is missing for chat and completion to work (no secret values, only names)."""
        problems = []
        if not self.settings.openrouter_api_key_value():
            problems.append("OPENROUTER_API_KEY is not set")
        if not self.settings.auth_configured:
            problems.append("no token verification configured (SUPABASE_JWT_SECRET or SUPABASE_URL)")
        if on_cloud_runtime() and self.settings.resolved_ledger_backend == "sqlite":
            problems.append(
                "the ledger is the embedded SQLite file on a cloud runtime (usage would be per instance and lost): "
                "set DATABASE_URL or SUPABASE_URL+SUPABASE_SERVICE_ROLE_KEY, or LEDGER_BACKEND=off"
            )
        return problems

    async def probe_upstream(self, *, probe_timeout: float = 3.0) -> tuple[UpstreamProbe, bool]:
        """OpenRouter's reachability, cached ``health_cache_seconds``: (probe, whether it was cached)."""
        ttl = self.settings.health_cache_seconds
        probe = self._probe
        if probe is not None and time.time() - probe.checked_at < ttl:
            return probe, True
        async with self._probe_lock:  # concurrent probes share one upstream call
            probe = self._probe
            if probe is not None and time.time() - probe.checked_at < ttl:
                return probe, True
            started = time.perf_counter()
            detail = None
            try:
                async with httpx.AsyncClient(timeout=probe_timeout) as client:
                    response = await client.get(f"{self.settings.openrouter_base_url.rstrip('/')}/models")
                ok = response.status_code == 200
                if not ok:
                    detail = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, detail = False, exc.__class__.__name__
            probe = UpstreamProbe(ok, (time.perf_counter() - started) * 1000.0, time.time(), detail)
            self._probe = probe
            return probe, False

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()
            self._service = None
        if self._ledger is not None:
            await self._ledger.aclose()
            self._ledger, self._ledger_built = None, False


_RUNTIME: Runtime | None = None


def configure_logging() -> None:
    """JSON lines on stdout (what Cloud Run and DigitalOcean collect); the core logs only problems."""
    root = logging.getLogger("openrouter_functions")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        root.propagate = False
    core = logging.getLogger("openrouter_service")
    if not core.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        core.addHandler(handler)
        core.setLevel(logging.WARNING)
        core.propagate = False


def get_runtime() -> Runtime:
    """This instance's runtime, built on first use from the environment."""
    global _RUNTIME
    if _RUNTIME is None:
        configure_logging()
        _RUNTIME = Runtime(Settings())
    return _RUNTIME


def reset_runtime(settings: Settings | None = None) -> Runtime | None:
    """Forget the current runtime (tests, or after the environment changed); optionally install one."""
    global _RUNTIME
    _RUNTIME = Runtime(settings) if settings is not None else None
    return _RUNTIME


async def close_runtime() -> None:
    """Close this instance's pooled connections (server shutdown); the next request builds anew."""
    global _RUNTIME
    runtime, _RUNTIME = _RUNTIME, None
    if runtime is not None:
        await runtime.aclose()

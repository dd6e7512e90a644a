"""What one function instance builds once and reuses: settings, the client, the token verifier, the meter.

Built on the first request, not at import (no secrets read or sockets opened while modules load).
A misconfiguration is remembered and reported by every request and by ``health``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from dataclasses import dataclass, field

from openrouter_service.attempts import Sleep
from openrouter_service.client import OpenRouterService
from openrouter_service.errors import OpenRouterConfigError

from .auth import Caller, TokenVerifier, bearer_token
from .config import Settings, on_cloud_runtime
from .envelope import ApiError, reply_for
from .ledger import Ledger, Limits
from .ledger.meter import Meter
from .logs import configure_logging
from .threads import ThreadStore

# A reservation older than OPENROUTER_DEADLINE + SHUTDOWN_DRAIN_SECONDS + this belongs to an instance that
# died before settling it: a refused user gets it back (Meter, ledger_release_stale).
STALE_MARGIN_SECONDS = 30.0
# A `streaming` message not written for this many flush periods, and at least this many seconds, is dead.
# The floor is above a store call's worst case (a 10 s REST timeout, a pool wait plus a connect), so one
# slow heartbeat never makes a live answer look dead.
THREAD_STALE_FLUSHES = 20
THREAD_STALE_MIN_SECONDS = 30

__all__ = ["Runtime", "UpstreamProbe", "close_runtime", "get_runtime", "reset_runtime"]


@dataclass(slots=True)
class UpstreamProbe:
    """The last check of OpenRouter: does it accept our key (``GET /key``), and how much credit is left."""

    ok: bool
    latency_ms: float
    checked_at: float
    detail: str | None = None
    limit_remaining: float | None = None


def open_thread_store(settings: Settings) -> ThreadStore | None:
    """Where threads are kept: the ledger's store (``None`` when ``LEDGER_BACKEND=off``), imported on first use."""
    problem = settings.ledger_problem
    if problem is not None:
        raise ApiError(500, "configuration_error", problem)
    backend = settings.resolved_ledger_backend
    if backend == "off":
        return None
    if backend == "postgres":
        assert settings.database_url is not None
        from .threads.postgres import PostgresThreadStore

        return PostgresThreadStore(settings.database_url.get_secret_value())
    if backend == "supabase_rest":
        assert settings.supabase_url is not None
        assert settings.supabase_service_role_key is not None
        from .threads.rest import SupabaseRestThreadStore

        return SupabaseRestThreadStore(settings.supabase_url, settings.supabase_service_role_key.get_secret_value())
    from .threads.sqlite import SQLiteThreadStore

    return SQLiteThreadStore(settings.ledger_sqlite_path)


def open_ledger(settings: Settings) -> Ledger | None:
    """The configured ledger backend (``None`` when ``LEDGER_BACKEND=off``); each is imported on first use."""
    problem = settings.ledger_problem
    if problem is not None:
        raise ApiError(500, "configuration_error", problem)
    backend = settings.resolved_ledger_backend
    if backend == "off":
        return None
    if backend == "postgres":
        assert settings.database_url is not None
        from .ledger.postgres import PostgresLedger

        return PostgresLedger(settings.database_url.get_secret_value())
    if backend == "supabase_rest":
        assert settings.supabase_url is not None
        assert settings.supabase_service_role_key is not None
        from .ledger.rest import SupabaseRestLedger

        return SupabaseRestLedger(settings.supabase_url, settings.supabase_service_role_key.get_secret_value())
    from .ledger.sqlite import SQLiteLedger

    return SQLiteLedger(settings.ledger_sqlite_path, retention_days=settings.request_log_retention_days)


# Users whose pseudonym (end_user_pseudonym) is remembered at once, at most: a user's requests come in runs.
PSEUDONYMS_KEPT = 4096


@dataclass
class Runtime:
    """Per-instance state; nothing here matters for correctness across instances."""

    settings: Settings
    started_at: float = field(default_factory=time.time)
    sleep: Sleep = asyncio.sleep  # every wait (upstream retries, ledger backoff): injectable for tests
    _service: OpenRouterService | None = None
    _service_error: OpenRouterConfigError | None = None
    _verifier: TokenVerifier | None = None
    _meter: Meter | None = None
    _threads: ThreadStore | None = None
    _threads_opened: bool = False
    _probe: UpstreamProbe | None = None
    _ledger_check: tuple[float, bool] | None = None  # (when, whether the store answered)
    _probe_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _refusals: list[str] | None = None
    # end_user_pseudonym's answers for the users seen lately (an HMAC per request otherwise).
    _pseudonyms: dict[str, str] = field(default_factory=dict, repr=False)  # the mapping they hide

    @property
    def service(self) -> OpenRouterService:
        """The pooled OpenRouter client, or a 500 ``configuration_error`` when it cannot exist."""
        if self._service is None:
            if self._service_error is None:
                try:
                    self._service = self.settings.build_service(sleep=self.sleep)
                except OpenRouterConfigError as exc:
                    self._service_error = exc
            if self._service_error is not None:
                # A new reply each time: re-raising one stored exception would grow its traceback (and
                # what it keeps alive) with every request.
                raise reply_for(self._service_error)
        assert self._service is not None
        return self._service

    def end_user_pseudonym(self, user_id: str) -> str:
        """What OpenRouter is told of a user (the ``user`` field): stable for the user and this deployment's
        key, not reversible without that key (HMAC-SHA256 of the user id, keyed by ``OPENROUTER_API_KEY``)."""
        known = self._pseudonyms.get(user_id)
        if known is None:
            if len(self._pseudonyms) >= PSEUDONYMS_KEPT:  # many users: start over rather than grow
                self._pseudonyms.clear()
            key = (self.settings.openrouter_api_key_value() or "").encode()
            known = self._pseudonyms[user_id] = "u-" + hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()[:32]
        return known

    def use_service(self, service: OpenRouterService) -> None:
        """Call OpenRouter through ``service`` from now on (benchmarks and tests with their own transport)."""
        self._service, self._service_error = service, None

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

    async def authenticate(self, authorization: str | None) -> Caller:
        """The verified caller, 401 for a missing or bad token, 500 when no verification is configured."""
        if not self.settings.auth_configured:
            bearer_token(authorization)  # no credentials at all is still the caller's 401
            raise ApiError(500, "configuration_error", "Authentication is not configured on this server.")
        return await self.verifier.verify(authorization)

    @property
    def meter(self) -> Meter:
        """Quota admission and usage settlement over the configured ledger, built on first use.

        A backend that cannot be built (e.g. ``LEDGER_BACKEND=postgres`` without ``DATABASE_URL``) is a
        500 ``configuration_error`` on every metered request, or no metering at all in open failure mode.
        """
        if self._meter is None:
            s = self.settings
            try:
                backend = open_ledger(s)
            except ApiError:
                if s.ledger_failure_mode != "open":
                    raise
                backend = None
            self._meter = Meter(
                backend,
                failure_mode=s.ledger_failure_mode,
                reserve_usd=s.quota_reserve_usd,
                default_limits=Limits(s.default_rpm, s.default_daily_requests, s.default_daily_cost_usd),
                sleep=self.sleep,
                # Past the deadline and the drain no call of ours still runs; the margin covers settling.
                stale_after=self.stale_seconds,
                settle_budget=s.ledger_settle_seconds,
            )
        return self._meter

    @property
    def stale_seconds(self) -> int:
        """Past this age a reservation or a `streaming` message belongs to an instance that died."""
        s = self.settings
        return math.ceil(s.openrouter_deadline + s.shutdown_drain_seconds + STALE_MARGIN_SECONDS)

    @property
    def thread_stale_seconds(self) -> int:
        """Past this age without a write, a `streaming` message belongs to an instance that died: a running
        turn writes (at least a heartbeat) every ``THREAD_FLUSH_SECONDS``."""
        return max(THREAD_STALE_MIN_SECONDS, math.ceil(THREAD_STALE_FLUSHES * self.settings.thread_flush_seconds))

    @property
    def threads(self) -> ThreadStore | None:
        """The thread store (docs/threads.md), built on first use; ``None`` without a ledger store."""
        if not self._threads_opened:
            self._threads = open_thread_store(self.settings)
            self._threads_opened = True
        return self._threads

    def use_threads(self, store: ThreadStore | None) -> None:
        """Keep threads in ``store`` from now on (tests, local tools)."""
        self._threads, self._threads_opened = store, True

    def use_ledger(self, backend: Ledger | None) -> Meter:
        """Meter through ``backend`` from now on (tests, local tools); returns the new meter."""
        self._meter = None
        meter = self.meter
        meter.backend = backend
        return meter

    @property
    def refusals(self) -> list[str]:
        """Why this instance refuses to serve chat and completion (unsafe configuration), worked out once."""
        if self._refusals is None:
            self._refusals = self.settings.refusals()
        return self._refusals

    def refuse_if_unsafe(self) -> None:
        """500 ``configuration_error`` while the configuration is unsafe (health names why)."""
        if self.refusals:
            raise ApiError(
                500, "configuration_error", "This server refuses to serve: " + "; ".join(self.refusals) + "."
            )

    def configuration_problems(self) -> list[str]:
        """What is missing for chat and completion to work (no secret values, only names)."""
        problems = list(self.refusals)
        if not self.settings.openrouter_api_key_value():
            problems.append("OPENROUTER_API_KEY is not set")
        if not self.settings.auth_configured:
            problems.append("no token verification configured (SUPABASE_JWT_SECRET or SUPABASE_URL)")
        if on_cloud_runtime() and self.settings.resolved_ledger_backend == "sqlite":
            problems.append(
                "the ledger is the embedded SQLite file on a cloud runtime (usage would be per instance and lost): "
                "set DATABASE_URL or SUPABASE_URL+SUPABASE_SERVICE_ROLE_KEY, or LEDGER_BACKEND=off"
            )
        if self.settings.ledger_problem is not None:
            problems.append(self.settings.ledger_problem)
        return problems

    async def check_ledger(self) -> bool:
        """Whether the ledger answers, cached ``health_cache_seconds`` like the upstream probe: a stream of
        anonymous health requests costs the database one query per period, not one each."""
        checked = self._ledger_check
        if checked is not None and time.time() - checked[0] < self.settings.health_cache_seconds:
            return checked[1]
        ok = await self.meter.check()
        self._ledger_check = (time.time(), ok)
        return ok

    async def probe_upstream(self) -> tuple[UpstreamProbe, bool]:
        """What OpenRouter says of our key, cached ``health_cache_seconds``: (probe, whether it was cached).

        Through the pooled client (and so any transport a test or benchmark injected), like every call.
        """
        if self.refusals:  # e.g. a plain-http OPENROUTER_BASE_URL: never contacted, not even by a probe
            return UpstreamProbe(False, 0.0, time.time(), "not probed: the configuration is refused"), False
        ttl = self.settings.health_cache_seconds
        probe = self._probe
        if probe is not None and time.time() - probe.checked_at < ttl:
            return probe, True
        async with self._probe_lock:  # concurrent probes share one upstream call
            probe = self._probe
            if probe is not None and time.time() - probe.checked_at < ttl:
                return probe, True
            started = time.perf_counter()
            try:
                service = self.service
            except ApiError:
                probe = UpstreamProbe(False, 0.0, time.time(), "no OpenRouter client: see configuration")
            else:
                key = await service.acheck_key()
                elapsed = (time.perf_counter() - started) * 1000.0
                probe = UpstreamProbe(key.ok, elapsed, time.time(), key.detail, key.limit_remaining)
            self._probe = probe
            return probe, False

    async def aclose(self) -> None:
        if self._service is not None:
            await self._service.aclose()
            self._service = None
        if self._meter is not None:
            await self._meter.aclose()
            self._meter = None
        if self._threads is not None:
            await self._threads.aclose()
            self._threads, self._threads_opened = None, False


_RUNTIME: Runtime | None = None


def get_runtime() -> Runtime:
    """This instance's runtime, built on first use from the environment."""
    global _RUNTIME
    if _RUNTIME is None:
        configure_logging()
        _RUNTIME = Runtime(Settings())
    return _RUNTIME


def reset_runtime(replacement: Settings | Runtime | None = None) -> Runtime | None:
    """Forget the current runtime (tests, or after the environment changed); optionally install one,
    built from settings or ready-made."""
    global _RUNTIME
    _RUNTIME = Runtime(replacement) if isinstance(replacement, Settings) else replacement
    return _RUNTIME


async def close_runtime() -> None:
    """Close this instance's pooled connections (server shutdown); the next request builds anew."""
    global _RUNTIME
    runtime, _RUNTIME = _RUNTIME, None
    if runtime is not None:
        await runtime.aclose()

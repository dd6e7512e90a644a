"""Metering: quota admission and usage settlement around whichever ledger backend is configured.

The backends only talk to their store. Everything about *how* we depend on the store lives here:
each call bounded in time, a breaker so an outage does not add seconds to every request (and only an
outage: a store refusing one request's data opens nothing), the failure mode (closed: refuse; open:
serve unmetered), finish retries within a short budget, and the ``usage_unrecorded`` line that keeps a
record that could not be written.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from openrouter_service.attempts import Sleep

from ..envelope import ApiError
from ..metrics import METRICS
from . import Admission, Ledger, LedgerRejected, LedgerUnavailable, Limits, UsageRecord, ledger_user_id

__all__ = ["Meter", "Ticket"]

log = logging.getLogger("openrouter_functions.ledger")

T = TypeVar("T")

CALL_TIMEOUT = 5.0
BREAKER_SECONDS = 5.0
# While the breaker is open, one call at a time finds out whether the store is back, at most this often:
# the end of an outage is noticed within a fraction of a second, and a hanging store holds one caller.
PROBE_SECONDS = 0.5
FINISH_ATTEMPTS = 3
# A plain response goes out only once it is settled: the whole settlement, retries included, gets this
# long, so an outage adds at most this much to a finished request (then the row goes to the log line).
SETTLE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Ticket:
    """Admission's outcome for one request that may run."""

    # The ledger holds a reservation for it (False when metering is off or the ledger was down).
    admitted: bool = False
    reserved_usd: float = 0.0
    # Served while the ledger was down (LEDGER_FAILURE_MODE=open): nothing reserved, usage still counted.
    unmetered: bool = False


class Meter:
    """Admits requests against per-user limits and settles their usage, whatever the backend."""

    def __init__(
        self,
        backend: Ledger | None,
        *,
        failure_mode: Literal["closed", "open"] = "closed",
        reserve_usd: float = 0.01,
        default_limits: Limits | None = None,
        sleep: Sleep = asyncio.sleep,
        stale_after: float | None = None,
        settle_budget: float = SETTLE_SECONDS,
    ) -> None:
        self.backend = backend
        self.failure_mode = failure_mode
        self.reserve_usd = reserve_usd
        self.default_limits = default_limits or Limits()
        self.sleep = sleep
        self.timeout = CALL_TIMEOUT
        self.settle_budget = settle_budget
        # How long a call of ours can possibly still be running (deadline + drain): a reservation older
        # than that belongs to an instance that died. None: leave it to the store's 15-minute sweep.
        self.stale_after = None if stale_after is None else math.ceil(stale_after)
        self._down_until = 0.0
        self._probe_after = 0.0
        self._probing = False

    @property
    def name(self) -> str:
        """The backend's name, ``off`` when there is none."""
        return self.backend.name if self.backend is not None else "off"

    def suspended(self) -> bool:
        """Whether the breaker is open: the store failed moments ago."""
        return time.monotonic() < self._down_until

    async def _call(
        self, call: Callable[[], Awaitable[T]], *, respect_breaker: bool = True, within: float | None = None
    ) -> T:
        """One store round trip, bounded in time (``within``, else the call timeout); any failure is
        LedgerUnavailable and opens the breaker, except LedgerRejected: one request's data says nothing
        about the store, so it must not turn every other request away."""
        probe = False
        if respect_breaker and self.suspended():
            if self._probing or time.monotonic() < self._probe_after:
                raise LedgerUnavailable("the ledger failed moments ago; not retried yet")
            self._probing = probe = True
        try:
            if getattr(self.backend, "inline", False):
                # The backend's calls run inline (SQLite: at the loop's next turn, the turn's calls in one
                # transaction, to its end): a timer could only cut a caller off from a call already
                # committed, so arming one would only cost time.
                result = await call()
            else:
                async with asyncio.timeout(self.timeout if within is None else within):
                    result = await call()
            if probe:
                self._down_until = 0.0  # the store is back
            return result
        except LedgerRejected:
            raise
        except Exception as exc:
            # A settlement cut short by its own budget says the store is slow, not down: the breaker
            # would turn every other request away for a store that is answering.
            if not (isinstance(exc, TimeoutError) and within is not None and within < self.timeout):
                now = time.monotonic()
                self._down_until, self._probe_after = now + BREAKER_SECONDS, now + PROBE_SECONDS
            if isinstance(exc, LedgerUnavailable):
                raise
            detail = "timed out" if isinstance(exc, TimeoutError) else f"{exc.__class__.__name__}: {exc}"
            raise LedgerUnavailable(detail) from exc
        finally:
            if probe:
                self._probing = False

    async def admit(
        self, ledger_id: str, user_id: str, function: str, *, request_id: str, unlimited: bool = False
    ) -> Ticket:
        """Rate window, daily quotas and a cost reservation in one round trip.

        ``ledger_id`` is the store's idempotency key for the request; ``user_id`` the caller's subject (kept
        under :func:`ledger_user_id`); ``request_id`` the caller-facing id its log lines carry.

        Raises :class:`ApiError` 429 when a limit is reached, :class:`LedgerUnavailable` when the
        store is down and the failure mode is closed, and :class:`LedgerRejected` (whatever the mode:
        the store is up, so nothing is served unmetered) when it refuses this request's data.
        ``unlimited`` (trusted server callers) is logged and counted but never limited.
        """
        backend = self.backend
        if backend is None:
            return Ticket()
        limits = Limits() if unlimited else self.default_limits
        try:
            key = ledger_user_id(user_id)
            begin_args = (ledger_id, key, self.reserve_usd, limits)
            admission = await self._call(lambda: backend.begin(*begin_args))
        except LedgerUnavailable as exc:
            METRICS.inc("orf_ledger_errors_total", function=function, op="begin")
            log.warning("ledger_begin_failed", extra={"json_fields": {"request_id": request_id, "error": str(exc)}})
            if self.failure_mode == "open" and not isinstance(exc, LedgerRejected):
                return Ticket(unmetered=True)
            raise
        stale_after = self.stale_after
        if not admission.admitted and admission.reason == "quota_exceeded" and stale_after is not None:
            admission = await self._after_releasing_stale(
                admission, lambda: backend.release_stale(key, stale_after), lambda: backend.begin(*begin_args)
            )
        if not admission.admitted:
            raise _refusal(admission)
        return Ticket(admitted=True, reserved_usd=admission.reserved_usd)

    async def _after_releasing_stale(
        self, refusal: Admission, release: Callable[[], Awaitable[int]], begin: Callable[[], Awaitable[Admission]]
    ) -> Admission:
        """A daily quota refused the request: a crashed instance's reservations may be what fills it.
        Release the ones older than any live call and, if there were some, ask again."""
        try:
            released = await self._call(release)
            if not released:
                return refusal
            log.warning("ledger_released_stale", extra={"json_fields": {"released": released}})
            return await self._call(begin)
        except LedgerUnavailable:  # the refusal stands; the store's own sweep frees them later
            return refusal

    async def settle(self, record: UsageRecord, *, request_id: str) -> None:
        """Write the request's log row and usage, retried within :data:`SETTLE_SECONDS`; a record that
        cannot be written is logged whole."""
        backend = self.backend
        if backend is None:
            return
        error: Exception | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_budget
        # With the breaker open the first attempt fails at once and the row goes straight to the log line
        # instead of holding the caller. Retries go past the breaker this settlement's own failure opened,
        # but never past the budget: a hanging store costs the caller one budget, not three timeouts.
        attempts = 1 if self.suspended() else FINISH_ATTEMPTS
        for attempt in range(attempts):
            try:
                within = min(self.timeout, max(0.0, deadline - loop.time()))
                await self._call(lambda: backend.finish(record), respect_breaker=attempts == 1, within=within)
                return
            except LedgerRejected as exc:
                error = exc  # the same data would be refused again: no retry
                break
            except LedgerUnavailable as exc:
                error = exc
                METRICS.inc("orf_ledger_errors_total", function=record.function, op="finish")
                delay = 0.1 * 3**attempt
                if attempt + 1 == attempts or loop.time() + delay >= deadline:
                    break
                await self.sleep(delay)
        METRICS.inc("orf_usage_unrecorded_total", function=record.function)
        # One line carrying the whole row, so it can be replayed into ledger_finish later.
        log.error(
            "usage_unrecorded",
            extra={
                "json_fields": {
                    "request_id": request_id,
                    "error": str(error),
                    "record": {"p_request_id": record.request_id, "p_user_id": record.user_id, "p_row": record.row()},
                }
            },
        )

    async def check(self, within: float = 3.0) -> bool:
        """Whether the store answers (health); True when metering is off."""
        if self.backend is None:
            return True
        try:
            return await asyncio.wait_for(self.backend.check(), within)
        except TimeoutError:
            return False

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()


def _refusal(admission: Admission) -> ApiError:
    if admission.reason == "rate_limited":
        return ApiError(
            429,
            "rate_limited",
            "Too many requests; slow down.",
            retry_after=admission.retry_after,
            details={"limit": admission.limit},
        )
    what = {"daily_cost_usd": "daily spending", "daily_requests": "daily request"}.get(admission.limit or "", "daily")
    return ApiError(
        429,
        "quota_exceeded",
        f"The {what} limit for your account is reached; it resets at midnight UTC.",
        retry_after=admission.retry_after,
        details={"limit": admission.limit},
    )

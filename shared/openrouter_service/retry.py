"""The retry rule: which failures are tried again, how long to wait first, and how long a caller
should wait once we give up (the ``Retry-After`` they are told).

Pure functions over (attempt, status or exception, the server's hint); nothing here sleeps or touches a
socket, so the whole rule is tested without either. The attempt loop (``attempts.py``) only carries out
what :meth:`RetryPolicy.decide` says.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import httpx

__all__ = [
    "MAX_SERVER_WAIT",
    "NEVER_RETRIED_STATUSES",
    "RETRYABLE_STATUSES",
    "TRANSPORT_RETRY_AFTER",
    "WAITING_HELPS_STATUSES",
    "RetryDecision",
    "RetryPolicy",
    "is_retryable_exception",
    "is_retryable_status",
    "server_wait_hint",
]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 524, 529})
NEVER_RETRIED_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})
# Upstream statuses after which a caller who waits may well succeed: everything we retry ourselves, and
# 402, because our account's credits can be topped up while they wait (we do not retry it: not in seconds).
WAITING_HELPS_STATUSES = RETRYABLE_STATUSES | {402}
# What a caller is told to wait after OpenRouter could not be reached: the network may be back at once,
# and a second is short enough not to matter.
TRANSPORT_RETRY_AFTER = 1.0
# The longest wait a server hint is taken at: a day covers OpenRouter's longest real limit (the free
# models' daily quota). Longer, infinite or NaN hints are nonsense; a caller must never be told them.
MAX_SERVER_WAIT = 86400.0


def is_retryable_status(status: int) -> bool:
    """True for upstream statuses that may succeed when tried again."""
    return status in RETRYABLE_STATUSES


def is_retryable_exception(exc: BaseException, *, billed: bool = False) -> bool:
    """True for transport failures worth another attempt: connection errors and connect/pool timeouts.

    A read timeout is *not* retried: the request reached OpenRouter and the model may still be
    generating, and OpenRouter bills a non-streamed generation in full whether or not we wait for it,
    so a retry would bill the caller twice for one answer. For the same reason nothing is retried once
    the call is ``billed``: a non-streamed answer's status and headers arrived, so the generation ran,
    and a body cut off after that is lost, not worth paying for twice.
    """
    if billed or isinstance(exc, httpx.ReadTimeout):
        return False
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def _number(value: str) -> float | None:
    """``value`` as a finite number; ``None`` for anything else (``inf``, ``nan`` and garbage alike)."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _capped(seconds: float) -> float:
    return min(max(0.0, seconds), MAX_SERVER_WAIT)


def server_wait_hint(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP
    date) or ``X-RateLimit-Reset`` (epoch milliseconds); ``None`` when it said nothing usable.

    Never more than :data:`MAX_SERVER_WAIT`; a non-finite value is no hint at all.
    """
    current = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    number = _number(value) if value else None
    if number is not None:
        return _capped(number / 1000.0)
    value = headers.get("retry-after")
    if value:
        number = _number(value)
        if number is not None:
            return _capped(number)
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            when = None
        if when is not None:
            return _capped(when.timestamp() - current)
    value = headers.get("x-ratelimit-reset")
    reset = _number(value) if value else None
    if reset is None:
        return None
    # OpenRouter sends epoch milliseconds; tolerate epoch seconds too.
    reset_seconds = reset / 1000.0 if reset > 1e11 else reset
    return _capped(reset_seconds - current)


class RetryDecision(NamedTuple):
    """What to do after a failed attempt: sleep ``sleep`` seconds and try again, or (``sleep is None``)
    give up and tell the caller to wait ``retry_after`` seconds (``None``: waiting will not help)."""

    sleep: float | None
    retry_after: float | None


def _no_jitter() -> float:
    return 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to retry and how long to wait: exponential backoff with jitter, capped.

    ``max_delay`` is both the cap of our own backoff and the longest server-requested wait we are
    willing to sleep; a longer request fails the call at once with ``retry_after`` set.
    """

    max_retries: int = 3
    backoff_factor: float = 2.0
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25

    def should_retry(
        self, attempt: int, *, status: int | None = None, exc: BaseException | None = None, billed: bool = False
    ) -> bool:
        """May attempt number ``attempt`` (1-based) that failed this way be followed by another?

        ``billed``: the transport failure ``exc`` came after a non-streamed answer began.
        """
        if attempt > self.max_retries:
            return False
        if exc is not None:
            return is_retryable_exception(exc, billed=billed)
        return status is not None and is_retryable_status(status)

    def backoff(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Our own wait after failed attempt ``attempt`` (1-based), jittered down by up to ``jitter``."""
        base = self.initial_delay * self.backoff_factor ** max(0, attempt - 1)
        capped = min(base, self.max_delay)
        return capped * (1.0 - self.jitter * rand())

    def delay_for(
        self,
        attempt: int,
        headers: Mapping[str, str] | None = None,
        *,
        now: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before the next attempt: the server's hint when it gave one, else backoff.

        May exceed ``max_delay`` only when the server asked for it; callers compare with
        :meth:`too_long` and fail fast instead of sleeping.
        """
        hint = server_wait_hint(headers, now=now) if headers else None
        return self._wait(attempt, hint, rand)

    def too_long(self, delay: float) -> bool:
        """True when a wait is longer than we are willing to sleep inside one request."""
        return delay > self.max_delay

    def decide(
        self,
        attempt: int,
        *,
        status: int | None = None,
        exc: BaseException | None = None,
        server_wait: float | None = None,
        billed: bool = False,
        time_left: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> RetryDecision:
        """After attempt ``attempt`` (1-based) failed with upstream ``status`` or transport failure ``exc``
        (``server_wait``: the server's parsed hint; ``billed``: see :meth:`should_retry`), sleep and try
        again, or give up and say how long a caller should wait.

        A wait longer than ``max_delay``, or one that would outlast the call's deadline (``time_left``
        seconds away), is not slept: the call fails at once and the caller is told that wait instead.
        """
        if self.should_retry(attempt, status=status, exc=exc, billed=billed):
            delay = self._wait(attempt, server_wait, rand)
            if not self.too_long(delay) and (time_left is None or delay < time_left):
                return RetryDecision(sleep=delay, retry_after=None)
            return RetryDecision(sleep=None, retry_after=delay)
        return RetryDecision(
            sleep=None, retry_after=self.caller_wait(attempt, status=status, exc=exc, server_wait=server_wait)
        )

    def caller_wait(
        self,
        attempt: int,
        *,
        status: int | None = None,
        exc: BaseException | None = None,
        server_wait: float | None = None,
    ) -> float | None:
        """Seconds a caller should wait before trying again once we gave up after attempt ``attempt``;
        ``None`` when waiting will not help.

        The server's hint when it gave one; :data:`TRANSPORT_RETRY_AFTER` after a transport failure; our
        own backoff, without jitter, when the upstream status is one where waiting helps. Never for a
        status where waiting does not help (a 400 stays wrong however long the caller waits, whatever
        header came with it).
        """
        if status is not None and status not in WAITING_HELPS_STATUSES:
            return None
        if server_wait is not None:
            return server_wait
        if exc is not None:
            return TRANSPORT_RETRY_AFTER
        if status in WAITING_HELPS_STATUSES:
            return self.backoff(attempt, rand=_no_jitter)
        return None

    def _wait(self, attempt: int, server_wait: float | None, rand: Callable[[], float]) -> float:
        return server_wait if server_wait is not None else self.backoff(attempt, rand=rand)

"""The retry rule: which failures are tried again, and how long to wait first.

Pure functions over (attempt, status or exception, headers); nothing here sleeps or touches a socket,
so the whole rule is tested without either.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "NEVER_RETRIED_STATUSES",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "is_retryable_exception",
    "is_retryable_status",
    "server_wait_hint",
]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 524, 529})
NEVER_RETRIED_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})


def is_retryable_status(status: int) -> bool:
    """True for upstream statuses that may succeed when tried again."""
    return status in RETRYABLE_STATUSES


def is_retryable_exception(exc: BaseException) -> bool:
    """True for transport failures worth another attempt: connection errors and connect/pool timeouts.

    A read timeout is *not* retried: the request reached OpenRouter and the model may still be
    generating, and OpenRouter bills a non-streamed generation in full whether or not we wait for it,
    so a retry would bill the caller twice for one answer.
    """
    if isinstance(exc, httpx.ReadTimeout):
        return False
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError)


def server_wait_hint(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP
    date) or ``X-RateLimit-Reset`` (epoch milliseconds); ``None`` when it said nothing usable."""
    current = time.time() if now is None else now
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - current)
    value = headers.get("x-ratelimit-reset")
    if value:
        try:
            reset = float(value)
        except ValueError:
            return None
        # OpenRouter sends epoch milliseconds; tolerate epoch seconds too.
        reset_seconds = reset / 1000.0 if reset > 1e11 else reset
        return max(0.0, reset_seconds - current)
    return None


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

    def should_retry(self, attempt: int, *, status: int | None = None, exc: BaseException | None = None) -> bool:
        """May attempt number ``attempt`` (1-based) that failed this way be followed by another?"""
        if attempt > self.max_retries:
            return False
        if exc is not None:
            return is_retryable_exception(exc)
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
        if hint is not None:
            return hint
        return self.backoff(attempt, rand=rand)

    def too_long(self, delay: float) -> bool:
        """True when a wait is longer than we are willing to sleep inside one request."""
        return delay > self.max_delay

"""The one attempt loop every upstream call runs in: plain, streamed and structured re-asks alike.

Shaped like stamina's ``retry_context``::

    async for attempt in service.attempts():
        with attempt:
            ...  # one try: return on success, raise on failure

Leaving ``with attempt`` by an exception is where a failure is classified: an httpx transport error
becomes the :class:`OpenRouterError` that says what happened (:func:`map_transport_error`), then the
retry policy decides. The loop sleeps before the next attempt, or lets the error out with ``attempts``
and the caller-facing ``retry_after`` filled in. A streamed attempt *commits* once its first data chunk
went to the caller (:meth:`Attempt.delivered`); a committed attempt is never retried, since the caller
already holds part of the answer.

``Attempts`` is a plain class with ``__anext__``, not an async generator: returning from inside the loop
leaves nothing to finalize, and a call allocates two small objects, not a generator frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType

import httpx

from .errors import OpenRouterConnectionError, OpenRouterError, OpenRouterTimeoutError
from .retry import RetryPolicy, server_wait_hint

__all__ = ["Attempt", "Attempts", "Sleep", "map_transport_error", "settle"]

Sleep = Callable[[float], Awaitable[None]]


def map_transport_error(exc: httpx.HTTPError, *, timeout: float, after_chunks: int = 0) -> OpenRouterError:
    """The error that says what an httpx transport failure meant for the call."""
    cls: type[OpenRouterError]
    if isinstance(exc, httpx.TimeoutException):
        cls, what = OpenRouterTimeoutError, f"OpenRouter did not answer within {timeout:g} s"
    else:
        cls, what = OpenRouterConnectionError, f"Could not reach OpenRouter ({exc.__class__.__name__})"
    if after_chunks:
        what = f"The upstream stream was cut after {after_chunks} chunks ({exc.__class__.__name__})"
    return cls(f"{what}.")


def settle(
    policy: RetryPolicy,
    error: OpenRouterError,
    attempt: int,
    *,
    transport: httpx.HTTPError | None = None,
    server_wait: float | None = None,
) -> float | None:
    """Seconds to sleep before retrying after ``error`` ended attempt ``attempt``; or ``None`` to give up,
    with ``error`` then carrying ``attempts`` and, where waiting helps, ``retry_after``.

    ``transport`` is the httpx failure ``error`` was mapped from, if any; otherwise the upstream status
    on ``error`` is what the policy judges.
    """
    status = None if transport is not None else error.upstream_status
    decision = policy.decide(attempt, status=status, exc=transport, server_wait=server_wait)
    if decision.sleep is None:
        error.attempts = attempt
        if decision.retry_after is not None:
            error.retry_after = decision.retry_after
    return decision.sleep


class Attempt:
    """One try at a call; ``with attempt:`` around it turns its failure into a retry or the final error."""

    __slots__ = ("_loop", "chunks", "headers", "number")

    def __init__(self, loop: Attempts, number: int) -> None:
        self._loop = loop
        self.number = number
        self.chunks = 0
        # The headers of a failed answer, set before raising its error: the server's wait hint is there.
        self.headers: Mapping[str, str] | None = None

    @property
    def committed(self) -> bool:
        """True once a data chunk went to the caller: from then on this attempt is never retried."""
        return self.chunks > 0

    def delivered(self) -> None:
        """Record one data chunk handed to the caller (commits the attempt)."""
        self.chunks += 1

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # success, or cancellation / generator close: nothing to classify
        return self._loop._failed(self, exc)


class Attempts:
    """Async iterator of :class:`Attempt` s: a new one while the previous failed and may be retried."""

    __slots__ = ("_finished", "_number", "_policy", "_sleep", "_timeout", "_wait")

    def __init__(self, policy: RetryPolicy, sleep: Sleep, *, timeout: float) -> None:
        self._policy = policy
        self._sleep = sleep
        self._timeout = timeout
        self._number = 0
        self._wait: float | None = None
        self._finished = False

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if self._finished:
            raise StopAsyncIteration
        if self._wait is not None:
            wait, self._wait = self._wait, None
            await self._sleep(wait)
        self._number += 1
        # Finished unless this attempt fails in a way the policy retries (see _failed).
        self._finished = True
        return Attempt(self, self._number)

    def _failed(self, attempt: Attempt, exc: Exception) -> bool:
        """Classify ``exc`` ending ``attempt``: True to swallow it and retry, else raise the final error."""
        transport: httpx.HTTPError | None = None
        if isinstance(exc, httpx.HTTPError):
            transport = exc
            error = map_transport_error(exc, timeout=self._timeout, after_chunks=attempt.chunks)
        elif isinstance(exc, OpenRouterError):
            error = exc
        else:
            return False
        if attempt.committed:
            error.attempts = attempt.number
            wait = None
        else:
            server_wait = server_wait_hint(attempt.headers) if attempt.headers else None
            wait = settle(self._policy, error, attempt.number, transport=transport, server_wait=server_wait)
        if wait is not None:
            self._wait = wait
            self._finished = False
            return True
        if error is exc:
            return False
        raise error from exc

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
already holds part of the answer. A plain attempt is *billed* once its answer began
(:meth:`Attempt.answered`): the generation ran, so a body cut off after that is not retried either.

Every call has a :class:`Deadline`: each await of an attempt runs under :meth:`Attempt.limit`, and no
retry is slept past it; a stream must also see its first data chunk in time. Running out is an
:class:`OpenRouterTimeoutError`.

``Attempts`` is a plain class with ``__anext__``, not an async generator: returning from inside the loop
leaves nothing to finalize, and a call allocates two small objects, not a generator frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType

import httpx

from .errors import OpenRouterConnectionError, OpenRouterError, OpenRouterTimeoutError
from .retry import RetryPolicy, server_wait_hint

__all__ = ["Attempt", "Attempts", "Deadline", "Sleep", "map_transport_error", "settle"]

Sleep = Callable[[float], Awaitable[None]]

# Seconds a transport's read timeout may run late and still end a read before the deadline.
_READ_BOUND_MARGIN = 1.0
_UNBOUNDED: AbstractAsyncContextManager[object] = contextlib.nullcontext()


def map_transport_error(
    exc: httpx.HTTPError, *, timeout: float, after_chunks: int = 0, billed: bool = False
) -> OpenRouterError:
    """The error that says what an httpx transport failure meant for the call (``billed``: it came
    while reading an answer that had begun)."""
    cls: type[OpenRouterError]
    if isinstance(exc, httpx.TimeoutException):
        cls, what = OpenRouterTimeoutError, f"OpenRouter did not answer within {timeout:g} s"
    else:
        cls, what = OpenRouterConnectionError, f"Could not reach OpenRouter ({exc.__class__.__name__})"
    if after_chunks:
        what = f"The upstream stream was cut after {after_chunks} chunks ({exc.__class__.__name__})"
    elif billed and cls is OpenRouterConnectionError:
        what = f"The upstream answer was cut off ({exc.__class__.__name__})"
    return cls(f"{what}.")


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a call must be over, and by when a stream must have sent its first data chunk
    (``time.monotonic()`` instants; ``None``: no such bound)."""

    seconds: float
    at: float
    first_chunk_seconds: float | None = None
    first_chunk_at: float | None = None

    @classmethod
    def starting_now(cls, seconds: float, first_chunk_seconds: float | None = None) -> Deadline:
        """A deadline ``seconds`` from now (and a first chunk due ``first_chunk_seconds`` from now)."""
        now = time.monotonic()
        first_at = None if first_chunk_seconds is None else now + first_chunk_seconds
        return cls(seconds, now + seconds, first_chunk_seconds, first_at)


def settle(
    policy: RetryPolicy,
    error: OpenRouterError,
    attempt: int,
    *,
    transport: httpx.HTTPError | None = None,
    server_wait: float | None = None,
    billed: bool = False,
    time_left: float | None = None,
) -> float | None:
    """Seconds to sleep before retrying after ``error`` ended attempt ``attempt``; or ``None`` to give up,
    with ``error`` then carrying ``attempts`` and, where waiting helps, ``retry_after``.

    ``transport`` is the httpx failure ``error`` was mapped from, if any; otherwise the upstream status
    on ``error`` is what the policy judges. ``billed`` and ``time_left``: see :meth:`RetryPolicy.decide`.
    """
    status = None if transport is not None else error.upstream_status
    decision = policy.decide(
        attempt, status=status, exc=transport, server_wait=server_wait, billed=billed, time_left=time_left
    )
    if decision.sleep is None:
        error.attempts = attempt
        if decision.retry_after is not None:
            error.retry_after = decision.retry_after
    return decision.sleep


class Attempt:
    """One try at a call; ``with attempt:`` around it turns its failure into a retry or the final error."""

    __slots__ = ("_first_chunk_bound", "_limit", "_loop", "billed", "chunks", "headers", "number")

    def __init__(self, loop: Attempts, number: int) -> None:
        self._loop = loop
        self.number = number
        self.chunks = 0
        self.billed = False
        # The headers of a failed answer, set before raising its error: the server's wait hint is there.
        self.headers: Mapping[str, str] | None = None
        self._limit: asyncio.Timeout | None = None  # the timer of the last limit(), if it armed one
        self._first_chunk_bound = False

    @property
    def committed(self) -> bool:
        """True once a data chunk went to the caller: from then on this attempt is never retried."""
        return self.chunks > 0

    def delivered(self) -> None:
        """Record one data chunk handed to the caller (commits the attempt)."""
        self.chunks += 1

    def answered(self) -> None:
        """Record that a non-streamed answer began (status 200 and headers in): the generation ran and is
        billed, so a failure from here on is not retried."""
        self.billed = True

    def limit(
        self, *, first_chunk: bool = False, read_bound: float | None = None
    ) -> AbstractAsyncContextManager[object]:
        """``async with attempt.limit():`` around one await: it ends with the call's deadline (and, with
        ``first_chunk`` before this attempt delivered a chunk, when the first data chunk is due).

        ``read_bound``: the await is one read that the transport itself ends within that many seconds
        (its read timeout); while the bound ends well before the deadline no timer is armed, since the
        deadline cannot pass first (a timer per streamed read was ~40 % of the read's own cost).

        Never around a ``yield``: the timeout would cancel whatever the caller runs meanwhile.
        """
        deadline = self._loop.deadline
        when = deadline.at if deadline is not None else None
        self._first_chunk_bound = False
        first_at = deadline.first_chunk_at if deadline is not None and first_chunk and not self.committed else None
        if first_at is not None and (when is None or first_at < when):
            when, self._first_chunk_bound = first_at, True
        delay = None if when is None else max(0.0, when - time.monotonic())
        if read_bound is not None and delay is not None and delay > read_bound + _READ_BOUND_MARGIN:
            self._limit = None
            return _UNBOUNDED
        self._limit = asyncio.timeout(delay)
        return self._limit

    def _ran_out(self, exc: BaseException) -> OpenRouterTimeoutError | None:
        """The error for ``exc`` when it is this attempt's :meth:`limit` expiring, else ``None``."""
        if not isinstance(exc, TimeoutError) or self._limit is None or not self._limit.expired():
            return None
        deadline = self._loop.deadline
        assert deadline is not None
        if self._first_chunk_bound:
            return OpenRouterTimeoutError(f"OpenRouter sent no data within {deadline.first_chunk_seconds:g} s.")
        return OpenRouterTimeoutError(f"OpenRouter did not finish within the {deadline.seconds:g} s deadline.")

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

    __slots__ = ("_finished", "_number", "_policy", "_secret", "_sleep", "_timeout", "_wait", "deadline")

    def __init__(
        self,
        policy: RetryPolicy,
        sleep: Sleep,
        *,
        timeout: float,
        deadline: Deadline | None = None,
        secret: str | None = None,
    ) -> None:
        self._policy = policy
        self._sleep = sleep
        self._timeout = timeout
        self.deadline = deadline
        # Our key: an upstream that echoes it in an error message must not pass it on.
        self._secret = secret
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
            error = map_transport_error(exc, timeout=self._timeout, after_chunks=attempt.chunks, billed=attempt.billed)
        elif isinstance(exc, OpenRouterError):
            error = exc
        else:
            ran_out = attempt._ran_out(exc)
            if ran_out is None:
                return False
            error = ran_out
        if attempt.committed:
            error.attempts = attempt.number
            wait = None
        else:
            server_wait = server_wait_hint(attempt.headers) if attempt.headers else None
            time_left = None if self.deadline is None else self.deadline.at - time.monotonic()
            wait = settle(
                self._policy,
                error,
                attempt.number,
                transport=transport,
                server_wait=server_wait,
                billed=attempt.billed,
                time_left=time_left,
            )
        if wait is not None:
            self._wait = wait
            self._finished = False
            return True
        if self._secret:
            error.redact(self._secret)
        if error is exc:
            return False
        raise error from exc

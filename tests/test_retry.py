"""The retry rule as pure functions (what is retried, how long we wait, when we give up at once, what a
caller is told to wait), and the one attempt loop that carries it out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from helpers import Sleeps
from openrouter_service import (
    OpenRouterBadRequestError,
    OpenRouterConnectionError,
    OpenRouterRateLimitError,
    OpenRouterServerError,
    OpenRouterTimeoutError,
)
from openrouter_service.attempts import Attempts, Deadline
from openrouter_service.errors import error_from_upstream
from openrouter_service.retry import (
    MAX_SERVER_WAIT,
    NEVER_RETRIED_STATUSES,
    RETRYABLE_STATUSES,
    WAITING_HELPS_STATUSES,
    RetryDecision,
    RetryPolicy,
    server_wait_hint,
)

NOW = 1_800_000_000.0


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 524, 529])
def test_transient_statuses_are_retried_until_max_retries(status: int) -> None:
    policy = RetryPolicy(max_retries=3)
    assert [policy.should_retry(a, status=status) for a in (1, 2, 3, 4)] == [True, True, True, False]


@pytest.mark.parametrize("status", sorted(NEVER_RETRIED_STATUSES))
def test_client_errors_are_never_retried(status: int) -> None:
    assert not RetryPolicy(max_retries=5).should_retry(1, status=status)


def test_zero_retries_means_one_attempt() -> None:
    assert not RetryPolicy(max_retries=0).should_retry(1, status=503)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("x"),
        httpx.RemoteProtocolError("reset"),
        httpx.ReadError("reset"),
    ],
)
def test_connection_errors_and_timeouts_are_retried(exc: Exception) -> None:
    assert RetryPolicy().should_retry(1, exc=exc)


def test_read_timeouts_are_not_retried_to_avoid_double_billing() -> None:
    assert not RetryPolicy().should_retry(1, exc=httpx.ReadTimeout("the model is still generating"))


def test_other_exceptions_are_not_retried() -> None:
    assert not RetryPolicy().should_retry(1, exc=ValueError("bug"))
    assert not RetryPolicy().should_retry(1, exc=httpx.UnsupportedProtocol("ftp"))


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(initial_delay=0.5, backoff_factor=2.0, max_delay=3.0, jitter=0.0)
    assert [policy.backoff(a) for a in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_only_shortens_the_wait_by_at_most_its_fraction() -> None:
    policy = RetryPolicy(initial_delay=1.0, jitter=0.25)
    assert policy.backoff(1, rand=lambda: 0.0) == 1.0
    assert policy.backoff(1, rand=lambda: 1.0) == 0.75


def test_retry_after_seconds_wins_over_backoff() -> None:
    assert RetryPolicy().delay_for(1, {"retry-after": "2"}) == 2.0


def test_retry_after_ms_is_preferred_and_converted() -> None:
    assert server_wait_hint({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 4, tz=UTC)
    assert server_wait_hint({"retry-after": format_datetime(when, usegmt=True)}, now=NOW) == pytest.approx(4.0)


def test_x_ratelimit_reset_is_epoch_milliseconds() -> None:
    assert server_wait_hint({"x-ratelimit-reset": str(int((NOW + 2.5) * 1000))}, now=NOW) == pytest.approx(2.5)


def test_a_date_in_the_past_means_no_wait() -> None:
    assert server_wait_hint({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=NOW) == 0.0


def test_garbage_hints_fall_back_to_backoff() -> None:
    policy = RetryPolicy(initial_delay=0.5, jitter=0.0)
    assert server_wait_hint({"retry-after": "soon", "x-ratelimit-reset": "later"}) is None
    assert policy.delay_for(1, {"retry-after": "soon"}) == 0.5


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "inf"},
        {"retry-after": "nan"},
        {"retry-after": "-Infinity"},
        {"retry-after": "1e400"},
        {"retry-after-ms": "inf"},
        {"x-ratelimit-reset": "nan"},
    ],
)
def test_non_finite_hints_are_no_hint_at_all(headers: dict[str, str]) -> None:
    assert server_wait_hint(headers, now=NOW) is None
    assert RetryPolicy(initial_delay=0.5, jitter=0.0).delay_for(1, headers) == 0.5


def test_a_non_finite_ms_hint_falls_back_to_retry_after() -> None:
    assert server_wait_hint({"retry-after-ms": "nan", "retry-after": "3"}) == 3.0


@pytest.mark.parametrize(
    "headers",
    [
        {"retry-after": "1e12"},
        {"retry-after-ms": "1e15"},
        {"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"},
        {"x-ratelimit-reset": "9e15"},
    ],
)
def test_absurd_hints_are_capped_at_a_day(headers: dict[str, str]) -> None:
    assert server_wait_hint(headers, now=NOW) == MAX_SERVER_WAIT == 86400.0
    assert EXACT.decide(1, status=429, server_wait=server_wait_hint(headers, now=NOW)) == RetryDecision(
        sleep=None, retry_after=86400.0
    )


def test_waits_longer_than_the_cap_are_flagged() -> None:
    policy = RetryPolicy(max_delay=8.0)
    assert policy.too_long(policy.delay_for(1, {"retry-after": "60"}))
    assert not policy.too_long(policy.delay_for(1, {"retry-after": "8"}))


# -- the decision after a failed attempt ----------------------------------------------------------------

EXACT = RetryPolicy(max_retries=2, initial_delay=0.5, backoff_factor=2.0, max_delay=8.0, jitter=0.25)


def no_jitter() -> float:
    return 0.0


def test_a_retryable_status_with_attempts_left_sleeps_our_jittered_backoff() -> None:
    assert EXACT.decide(2, status=503, rand=lambda: 1.0) == RetryDecision(sleep=0.75, retry_after=None)


def test_the_servers_wait_is_slept_when_within_the_cap() -> None:
    assert EXACT.decide(1, status=429, server_wait=8.0) == RetryDecision(sleep=8.0, retry_after=None)


def test_a_server_wait_over_the_cap_is_not_slept_but_told_to_the_caller() -> None:
    assert EXACT.decide(1, status=429, server_wait=3600.0) == RetryDecision(sleep=None, retry_after=3600.0)


def test_exhausted_retries_tell_the_caller_our_backoff_without_jitter() -> None:
    assert EXACT.decide(3, status=429, rand=lambda: 1.0) == RetryDecision(sleep=None, retry_after=2.0)
    assert EXACT.decide(3, status=503, server_wait=5.0) == RetryDecision(sleep=None, retry_after=5.0)


def test_out_of_credits_is_not_retried_but_waiting_helps() -> None:
    assert EXACT.decide(1, status=402) == RetryDecision(sleep=None, retry_after=0.5)
    assert WAITING_HELPS_STATUSES == RETRYABLE_STATUSES | {402}


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422, None])
def test_when_waiting_cannot_help_the_caller_is_told_no_wait(status: int | None) -> None:
    assert EXACT.decide(1, status=status) == RetryDecision(sleep=None, retry_after=None)


def test_a_server_hint_on_a_final_error_is_passed_on_where_waiting_helps() -> None:
    assert EXACT.decide(1, status=402, server_wait=30.0) == RetryDecision(sleep=None, retry_after=30.0)
    # A 400 stays wrong however long the caller waits, whatever header came with it.
    assert EXACT.decide(1, status=400, server_wait=30.0) == RetryDecision(sleep=None, retry_after=None)


def test_transport_failures_sleep_backoff_then_tell_the_caller_one_second() -> None:
    refused = httpx.ConnectError("refused")
    assert EXACT.decide(1, exc=refused, rand=no_jitter) == RetryDecision(sleep=0.5, retry_after=None)
    assert EXACT.decide(3, exc=refused) == RetryDecision(sleep=None, retry_after=1.0)
    assert EXACT.decide(1, exc=httpx.ReadTimeout("still generating")) == RetryDecision(sleep=None, retry_after=1.0)


def test_a_transport_failure_after_a_plain_answer_began_is_not_retried() -> None:
    # The generation ran and is billed; a retry would bill it again.
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    assert EXACT.should_retry(1, exc=cut) and not EXACT.should_retry(1, exc=cut, billed=True)
    assert EXACT.decide(1, exc=cut, billed=True) == RetryDecision(sleep=None, retry_after=1.0)


def test_a_wait_that_would_outlast_the_deadline_is_not_slept() -> None:
    assert EXACT.decide(1, status=503, rand=no_jitter, time_left=0.6) == RetryDecision(sleep=0.5, retry_after=None)
    assert EXACT.decide(1, status=503, rand=no_jitter, time_left=0.4) == RetryDecision(sleep=None, retry_after=0.5)
    assert EXACT.decide(1, status=429, server_wait=5.0, time_left=3.0) == RetryDecision(sleep=None, retry_after=5.0)


def test_caller_wait_prefers_the_server_then_transport_then_status() -> None:
    assert EXACT.caller_wait(1, exc=httpx.ConnectError("x"), server_wait=4.0) == 4.0
    assert EXACT.caller_wait(1, exc=httpx.ConnectError("x")) == 1.0
    assert EXACT.caller_wait(2, status=529) == 1.0
    assert EXACT.caller_wait(2, status=500) == 1.0
    assert EXACT.caller_wait(2, status=404) is None


# -- the attempt loop -----------------------------------------------------------------------------------


def loop(sleeps: Sleeps, *, max_retries: int = 2, timeout: float = 30.0) -> Attempts:
    policy = RetryPolicy(max_retries=max_retries, initial_delay=0.5, jitter=0.0)
    return Attempts(policy, sleeps, timeout=timeout)


async def test_a_successful_first_attempt_is_the_only_one() -> None:
    sleeps = Sleeps()
    numbers = []
    async for attempt in loop(sleeps):
        with attempt:
            numbers.append(attempt.number)
    assert numbers == [1] and sleeps == []


async def test_retryable_errors_are_retried_after_sleeping_then_raised_with_attempts_and_retry_after() -> None:
    sleeps = Sleeps()
    numbers = []
    with pytest.raises(OpenRouterRateLimitError) as info:
        async for attempt in loop(sleeps):
            with attempt:
                numbers.append(attempt.number)
                raise error_from_upstream(429, {"error": {"code": 429, "message": "slow down"}})
    assert numbers == [1, 2, 3] and sleeps == [0.5, 1.0]
    assert (info.value.attempts, info.value.retry_after) == (3, 2.0)


async def test_the_servers_wait_comes_from_the_headers_noted_on_the_attempt() -> None:
    sleeps = Sleeps()
    async for attempt in loop(sleeps):
        with attempt:
            if attempt.number == 1:
                attempt.headers = httpx.Headers({"Retry-After": "3"})
                raise error_from_upstream(503, None)
    assert sleeps == [3.0]


async def test_transport_errors_are_mapped_to_what_happened() -> None:
    sleeps = Sleeps()
    refused = httpx.ConnectError("refused")
    with pytest.raises(OpenRouterConnectionError, match=r"^Could not reach OpenRouter \(ConnectError\)\.$") as info:
        async for attempt in loop(sleeps, max_retries=1):
            with attempt:
                raise refused
    assert info.value.__cause__ is refused
    assert (info.value.attempts, info.value.retry_after, sleeps) == (2, 1.0, [0.5])


async def test_a_read_timeout_is_a_timeout_error_and_not_retried() -> None:
    sleeps = Sleeps()
    with pytest.raises(OpenRouterTimeoutError, match=r"did not answer within 2\.5 s") as info:
        async for attempt in loop(sleeps, timeout=2.5):
            with attempt:
                raise httpx.ReadTimeout("slow")
    assert (info.value.attempts, info.value.retry_after, sleeps) == (1, 1.0, [])


async def test_a_committed_attempt_is_never_retried_and_tells_no_wait() -> None:
    sleeps = Sleeps()
    with pytest.raises(OpenRouterConnectionError, match="cut after 2 chunks") as info:
        async for attempt in loop(sleeps):
            with attempt:
                attempt.delivered()
                attempt.delivered()
                raise httpx.ReadError("reset")
    assert (info.value.attempts, info.value.retry_after, sleeps) == (1, None, [])

    with pytest.raises(OpenRouterServerError) as server:
        async for attempt in loop(sleeps):
            with attempt:
                attempt.delivered()
                raise error_from_upstream(200, {"error": {"code": 502, "message": "provider died"}})
    assert (server.value.attempts, server.value.retry_after, sleeps) == (1, None, [])


async def test_other_exceptions_pass_through_untouched_and_are_not_retried() -> None:
    sleeps = Sleeps()
    numbers = []
    with pytest.raises(KeyError):
        async for attempt in loop(sleeps):
            with attempt:
                numbers.append(attempt.number)
                raise KeyError("bug")
    assert numbers == [1] and sleeps == []


async def test_a_billed_attempt_cut_while_reading_is_not_retried() -> None:
    sleeps = Sleeps()
    numbers = []
    with pytest.raises(
        OpenRouterConnectionError, match=r"^The upstream answer was cut off \(RemoteProtocolError\)\.$"
    ) as info:
        async for attempt in loop(sleeps):
            with attempt:
                numbers.append(attempt.number)
                attempt.answered()
                raise httpx.RemoteProtocolError("incomplete body")
    assert (numbers, sleeps, info.value.attempts, info.value.retry_after) == ([1], [], 1, 1.0)


async def test_no_retry_is_slept_past_the_deadline() -> None:
    sleeps = Sleeps()
    attempts = Attempts(
        RetryPolicy(max_retries=3, jitter=0.0), sleeps, timeout=30.0, deadline=Deadline.starting_now(2.0)
    )
    with pytest.raises(OpenRouterServerError) as info:
        async for attempt in attempts:
            with attempt:
                attempt.headers = httpx.Headers({"Retry-After": "5"})
                raise error_from_upstream(503, None)
    assert (info.value.attempts, info.value.retry_after, sleeps) == (1, 5.0, [])


async def test_an_attempt_running_past_the_deadline_ends_in_a_timeout_error() -> None:
    attempts = Attempts(RetryPolicy(), Sleeps(), timeout=30.0, deadline=Deadline.starting_now(0.05))
    with pytest.raises(
        OpenRouterTimeoutError, match=r"^OpenRouter did not finish within the 0\.05 s deadline\.$"
    ) as info:
        async for attempt in attempts:
            with attempt:
                async with attempt.limit():
                    await asyncio.sleep(30)
    assert (info.value.attempts, info.value.retry_after) == (1, None)


async def test_a_stream_without_its_first_chunk_in_time_ends_in_a_timeout_error() -> None:
    deadline = Deadline.starting_now(30.0, first_chunk_seconds=0.05)
    attempts = Attempts(RetryPolicy(), Sleeps(), timeout=30.0, deadline=deadline)
    with pytest.raises(OpenRouterTimeoutError, match=r"^OpenRouter sent no data within 0\.05 s\.$") as info:
        async for attempt in attempts:
            with attempt:
                async with attempt.limit(first_chunk=True):
                    await asyncio.sleep(30)
    assert info.value.attempts == 1


async def test_the_first_chunk_limit_no_longer_applies_once_a_chunk_went_out() -> None:
    deadline = Deadline.starting_now(30.0, first_chunk_seconds=0.0)
    async for attempt in Attempts(RetryPolicy(), Sleeps(), timeout=30.0, deadline=deadline):
        with attempt:
            attempt.delivered()
            async with attempt.limit(first_chunk=True):
                await asyncio.sleep(0)


async def test_a_timeout_error_from_elsewhere_is_not_taken_for_ours() -> None:
    with pytest.raises(TimeoutError):
        async for attempt in Attempts(RetryPolicy(), Sleeps(), timeout=30.0, deadline=Deadline.starting_now(30.0)):
            with attempt:
                async with attempt.limit():
                    raise TimeoutError("some library's own")


async def test_a_final_error_never_carries_our_key() -> None:
    key = "gateway-key-0f9e8d7c6b5a"  # not shaped like an OpenRouter key: masked because it is ours
    attempts = Attempts(RetryPolicy(max_retries=0), Sleeps(), timeout=30.0, secret=key)
    body = {"error": {"message": f"upstream refused key {key}", "metadata": {"raw": key}}}
    with pytest.raises(OpenRouterBadRequestError) as info:
        async for attempt in attempts:
            with attempt:
                raise error_from_upstream(400, body)
    assert (str(info.value), info.value.message, info.value.metadata) == (
        "upstream refused key ***",
        "upstream refused key ***",
        {"raw": "***"},
    )

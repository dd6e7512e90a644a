"""The retry rule as pure functions: what is retried, how long we wait, when we give up at once."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from openrouter_service.retry import NEVER_RETRIED_STATUSES, RetryPolicy, server_wait_hint

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


def test_waits_longer_than_the_cap_are_flagged() -> None:
    policy = RetryPolicy(max_delay=8.0)
    assert policy.too_long(policy.delay_for(1, {"retry-after": "60"}))
    assert not policy.too_long(policy.delay_for(1, {"retry-after": "8"}))

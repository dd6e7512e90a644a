"""The meter alone: how the functions depend on a ledger backend (timeouts, breaker, failure mode,
finish retries, refusals), with stub backends and no sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from helpers import Sleeps
from log_lines import as_json
from openrouter_functions.envelope import ApiError
from openrouter_functions.ledger import Admission, LedgerRejected, LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.meter import FINISH_ATTEMPTS, Meter, Ticket
from openrouter_functions.metrics import METRICS

USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"


class StubLedger:
    """A backend whose answers the test sets; records what it was asked."""

    name = "stub"

    def __init__(self, admission: Admission | None = None, *, fails: bool = False, hangs: bool = False) -> None:
        self.admission = admission or Admission(True, reserved_usd=0.01)
        self.fails = fails
        self.hangs = hangs
        self.begins: list[tuple[Any, ...]] = []
        self.finishes = 0
        self.stale = 0  # reservations a crashed instance left; releasing them admits the next begin
        self.releases: list[int] = []

    async def _maybe_fail(self) -> None:
        if self.hangs:
            await asyncio.sleep(30)
        if self.fails:
            raise LedgerUnavailable("connection refused")

    async def begin(self, request_id: str, user_id: str, reserve_usd: float, limits: Limits) -> Admission:
        self.begins.append((request_id, user_id, reserve_usd, limits))
        await self._maybe_fail()
        return self.admission

    async def finish(self, record: UsageRecord) -> bool:
        self.finishes += 1
        await self._maybe_fail()
        return True

    async def release_stale(self, user_id: str, older_than_seconds: int) -> int:
        self.releases.append(older_than_seconds)
        await self._maybe_fail()
        released, self.stale = self.stale, 0
        if released:
            self.admission = Admission(True, reserved_usd=0.01)
        return released

    async def check(self) -> bool:
        await self._maybe_fail()
        return True

    async def aclose(self) -> None:
        return None


def record() -> UsageRecord:
    return UsageRecord(request_id="ledger-1", user_id=USER, function="chat", admitted=True)


async def test_admission_passes_the_defaults_and_reservation_to_the_backend() -> None:
    backend = StubLedger()
    meter = Meter(backend, reserve_usd=0.02, default_limits=Limits(rpm=5))
    ticket = await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert ticket == Ticket(admitted=True, reserved_usd=0.01)
    assert backend.begins == [("ledger-1", USER, 0.02, Limits(rpm=5))]
    await meter.admit("ledger-2", USER, "chat", request_id="req-2", unlimited=True)
    assert backend.begins[-1][3] == Limits()  # trusted server callers are counted, never limited


@pytest.mark.parametrize(
    ("admission", "kind", "message"),
    [
        (Admission(False, "rate_limited", "rpm", 12), "rate_limited", "Too many requests; slow down."),
        (
            Admission(False, "quota_exceeded", "daily_requests", 3600),
            "quota_exceeded",
            "The daily request limit for your account is reached; it resets at midnight UTC.",
        ),
        (
            Admission(False, "quota_exceeded", "daily_cost_usd", 3600),
            "quota_exceeded",
            "The daily spending limit for your account is reached; it resets at midnight UTC.",
        ),
    ],
)
async def test_a_refusal_is_a_429_naming_the_limit(admission: Admission, kind: str, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        await Meter(StubLedger(admission)).admit("ledger-1", USER, "chat", request_id="req-1")
    error = caught.value
    assert (error.status, error.type, error.message) == (429, kind, message)
    assert (error.retry_after, error.details) == (admission.retry_after, {"limit": admission.limit})


async def test_no_backend_admits_without_a_reservation() -> None:
    meter = Meter(None)
    assert await meter.admit("ledger-1", USER, "chat", request_id="req-1") == Ticket()
    assert (meter.name, await meter.check()) == ("off", True)


async def test_closed_mode_refuses_and_the_breaker_then_answers_without_asking() -> None:
    backend = StubLedger(fails=True)
    meter = Meter(backend)
    before = METRICS.value("orf_ledger_errors_total", function="chat", op="begin")
    for _ in range(2):
        with pytest.raises(LedgerUnavailable):
            await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert len(backend.begins) == 1
    assert meter.suspended()
    assert METRICS.value("orf_ledger_errors_total", function="chat", op="begin") == before + 2


async def test_open_mode_serves_unmetered() -> None:
    meter = Meter(StubLedger(fails=True), failure_mode="open")
    assert await meter.admit("ledger-1", USER, "chat", request_id="req-1") == Ticket(unmetered=True)


async def test_a_hanging_store_is_bounded_by_the_timeout() -> None:
    meter = Meter(StubLedger(hangs=True))
    meter.timeout = 0.05
    started = time.monotonic()
    with pytest.raises(LedgerUnavailable, match="timed out"):
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert time.monotonic() - started < 5
    assert meter.suspended()


async def test_any_backend_exception_is_an_outage() -> None:
    class Exploding(StubLedger):
        async def begin(self, *args: Any) -> Admission:
            raise RuntimeError("client could not be built")

    with pytest.raises(LedgerUnavailable, match="RuntimeError: client could not be built"):
        await Meter(Exploding()).admit("ledger-1", USER, "chat", request_id="req-1")


async def test_an_inline_backend_runs_without_a_timer_and_its_failures_are_still_outages() -> None:
    class Inline(StubLedger):
        inline = True  # like SQLite: its calls never hand the loop back, so no timer is armed around them

    armed: list[float | None] = []
    real_timeout = asyncio.timeout

    def counting_timeout(delay: float | None) -> Any:
        armed.append(delay)
        return real_timeout(delay)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncio, "timeout", counting_timeout)
        meter = Meter(Inline())
        assert await meter.admit("ledger-1", USER, "chat", request_id="req-1") == Ticket(
            admitted=True, reserved_usd=0.01
        )
        await meter.settle(record(), request_id="req-1")
        assert armed == []
        await Meter(StubLedger()).admit("ledger-2", USER, "chat", request_id="req-2")
        assert armed == [5.0]

    failing = Meter(Inline(fails=True))
    with pytest.raises(LedgerUnavailable):
        await failing.admit("ledger-3", USER, "chat", request_id="req-3")
    assert failing.suspended()


async def test_settle_retries_with_backoff_then_gives_up() -> None:
    sleeps = Sleeps()
    backend = StubLedger(fails=True)
    meter = Meter(backend, sleep=sleeps)
    before = METRICS.value("orf_usage_unrecorded_total", function="chat")
    await meter.settle(record(), request_id="req-1")
    assert backend.finishes == FINISH_ATTEMPTS
    assert sleeps == pytest.approx([0.1, 0.3])
    assert METRICS.value("orf_usage_unrecorded_total", function="chat") == before + 1


async def test_settle_with_the_breaker_open_tries_nothing_and_keeps_the_record() -> None:
    sleeps = Sleeps()
    backend = StubLedger(fails=True)
    meter = Meter(backend, sleep=sleeps)
    with pytest.raises(LedgerUnavailable):
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    before = METRICS.value("orf_usage_unrecorded_total", function="chat")
    await meter.settle(record(), request_id="req-1")
    assert (backend.finishes, sleeps) == (0, [])
    assert METRICS.value("orf_usage_unrecorded_total", function="chat") == before + 1


async def test_check_is_bounded() -> None:
    meter = Meter(StubLedger(hangs=True))
    assert await meter.check(within=0.05) is False


# -- one request's data is not an outage; an outage costs a finished request at most a second ----------


class RejectingLedger(StubLedger):
    """A store that is up but refuses one request's values (what a backend raises as LedgerRejected)."""

    async def finish(self, record: UsageRecord) -> bool:
        self.finishes += 1
        raise LedgerRejected("sqlite: UnicodeEncodeError: surrogates not allowed")


async def test_a_rejected_record_is_logged_once_and_opens_no_breaker(caplog: pytest.LogCaptureFixture) -> None:
    sleeps = Sleeps()
    backend = RejectingLedger()
    meter = Meter(backend, sleep=sleeps)
    errors_before = METRICS.value("orf_ledger_errors_total", function="chat", op="finish")
    unrecorded_before = METRICS.value("orf_usage_unrecorded_total", function="chat")
    caplog.set_level("INFO", logger="openrouter_functions")
    rejected = UsageRecord(request_id="ledger-1", user_id=USER, function="chat", model="x\ud800", admitted=True)

    await meter.settle(rejected, request_id="req-1")

    assert (backend.finishes, sleeps, meter.suspended()) == (1, [], False)  # not retried, nobody else refused
    assert METRICS.value("orf_ledger_errors_total", function="chat", op="finish") == errors_before
    assert METRICS.value("orf_usage_unrecorded_total", function="chat") == unrecorded_before + 1
    [line] = [as_json(r) for r in caplog.records if r.getMessage() == "usage_unrecorded"]
    assert line["error"] == "sqlite: UnicodeEncodeError: surrogates not allowed"
    assert line["record"]["p_row"]["model"] == "x\ud800"  # written escaped, so the line still goes out
    # The next request is admitted as if nothing happened.
    assert await meter.admit("ledger-2", USER, "chat", request_id="req-2") == Ticket(admitted=True, reserved_usd=0.01)


async def test_a_rejected_begin_is_refused_even_in_open_mode() -> None:
    class RejectingBegin(StubLedger):
        async def begin(self, *args: Any) -> Admission:
            raise LedgerRejected("postgres: DataError: invalid input")

    meter = Meter(RejectingBegin(), failure_mode="open")
    with pytest.raises(LedgerRejected):
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert not meter.suspended()


async def test_settle_against_a_hanging_store_gives_up_within_its_budget(caplog: pytest.LogCaptureFixture) -> None:
    backend = StubLedger(hangs=True)
    meter = Meter(backend)  # real sleeps and the real 5 s call timeout: only the settle budget bounds it
    caplog.set_level("INFO", logger="openrouter_functions")
    started = time.monotonic()

    await meter.settle(record(), request_id="req-1")

    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert backend.finishes == 1  # the timed-out attempt used the budget: no second wait
    # Running out of its own budget says the store is slow, not down: other requests still ask it.
    assert not meter.suspended()
    [line] = [as_json(r) for r in caplog.records if r.getMessage() == "usage_unrecorded"]
    assert (line["request_id"], line["error"]) == ("req-1", "timed out")


async def test_settle_retries_a_fast_failure_only_while_the_budget_lasts() -> None:
    sleeps = Sleeps()
    backend = StubLedger(fails=True)
    meter = Meter(backend, sleep=sleeps)
    meter.settle_budget = 0.2  # room for the 0.1 s backoff, not for the 0.3 s one after it
    await meter.settle(record(), request_id="req-1")
    assert (backend.finishes, sleeps) == (2, [0.1])


QUOTA_FULL = Admission(False, "quota_exceeded", "daily_requests", 3600)


async def test_a_crashed_instances_reservation_is_released_and_the_request_admitted() -> None:
    backend = StubLedger(QUOTA_FULL)
    backend.stale = 1
    meter = Meter(backend, stale_after=338.2)

    ticket = await meter.admit("ledger-1", USER, "chat", request_id="req-1")

    assert ticket.admitted
    assert backend.releases == [339]  # whole seconds, rounded up: never younger than a live call
    assert len(backend.begins) == 2


async def test_nothing_stale_keeps_the_refusal() -> None:
    backend = StubLedger(QUOTA_FULL)
    meter = Meter(backend, stale_after=300)

    with pytest.raises(ApiError) as refused:
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")

    assert refused.value.status == 429
    assert (backend.releases, len(backend.begins)) == ([300], 1)


@pytest.mark.parametrize(
    ("admission", "stale_after"),
    [(Admission(False, "rate_limited", "rpm", 30), 300.0), (QUOTA_FULL, None)],
    ids=["rpm-refusal", "no-bound-configured"],
)
async def test_release_is_tried_only_for_a_daily_quota_with_a_bound(
    admission: Admission, stale_after: float | None
) -> None:
    backend = StubLedger(admission)
    backend.stale = 1
    meter = Meter(backend, stale_after=stale_after)

    with pytest.raises(ApiError):
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert backend.releases == []


async def test_a_failing_release_keeps_the_quota_refusal() -> None:
    backend = StubLedger(QUOTA_FULL)
    meter = Meter(backend, stale_after=300)
    original = backend.release_stale

    async def broken(user_id: str, older_than_seconds: int) -> int:
        await original(user_id, older_than_seconds)
        raise LedgerUnavailable("connection reset")

    backend.release_stale = broken  # type: ignore[method-assign]
    with pytest.raises(ApiError) as refused:
        await meter.admit("ledger-1", USER, "chat", request_id="req-1")
    assert refused.value.status == 429, "the user sees the quota, not a ledger outage"

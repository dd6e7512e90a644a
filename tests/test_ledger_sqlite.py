"""The embedded SQLite ledger: the same contract as the SQL functions (docs/ledger.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openrouter_functions.ledger import Limits, UsageRecord
from openrouter_functions.ledger.sqlite import SQLiteLedger

USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
OTHER = "0b7f3a52-8f43-4a0e-9a3c-2a4cbb7d5e01"
NOON = 1_795_780_800.0  # 2026-11-27T12:00:00Z


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def ledger(tmp_path: Path, clock: Clock) -> SQLiteLedger:
    return SQLiteLedger(tmp_path / "ledger.sqlite3", clock=clock)


def record(request_id: str, *, cost: float = 0.002, user: str = USER, status: int = 200) -> UsageRecord:
    return UsageRecord(
        request_id,
        user,
        "chat",
        "openai/gpt-4o",
        status=status,
        attempts=1,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        cost_usd=cost,
        prompt_preview="hi",
    )


async def test_admit_then_settle_from_reported_usage(ledger: SQLiteLedger) -> None:
    admission = await ledger.begin("r1", USER, "chat", "openai/gpt-4o", 0.01, Limits(daily_cost_usd=1.0))
    assert admission.admitted
    assert admission.reserved_usd == 0.01
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"], day["requests"]) == (1, 0.01, 0)
    assert await ledger.finish(record("r1", cost=0.0031))
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"], day["requests"], day["cost_usd"]) == (0, 0.0, 1, 0.0031)
    assert (day["prompt_tokens"], day["completion_tokens"]) == (10, 5)
    [row] = await ledger.rows("request_log")
    assert row["status"] == 200
    assert row["prompt_preview"] == "hi"


async def test_finish_is_idempotent(ledger: SQLiteLedger) -> None:
    await ledger.begin("r1", USER, "chat", None, 0.01, Limits())
    assert await ledger.finish(record("r1"))
    assert not await ledger.finish(record("r1"))
    [day] = await ledger.rows("usage_daily")
    assert day["requests"] == 1
    assert day["cost_usd"] == 0.002
    assert len(await ledger.rows("request_log")) == 1


async def test_begin_twice_does_not_reserve_twice(ledger: SQLiteLedger) -> None:
    await ledger.begin("r1", USER, "chat", None, 0.01, Limits())
    await ledger.begin("r1", USER, "chat", None, 0.01, Limits())
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"]) == (1, 0.01)


async def test_rpm_window(ledger: SQLiteLedger, clock: Clock) -> None:
    limits = Limits(rpm=2)
    clock.now = NOON + 15
    assert (await ledger.begin("a", USER, "chat", None, 0, limits)).admitted
    assert (await ledger.begin("b", USER, "chat", None, 0, limits)).admitted
    refused = await ledger.begin("c", USER, "chat", None, 0, limits)
    assert (refused.admitted, refused.reason, refused.limit, refused.retry_after) == (False, "rate_limited", "rpm", 45)
    assert (await ledger.begin("d", OTHER, "chat", None, 0, limits)).admitted  # per user
    clock.now = NOON + 60
    assert (await ledger.begin("e", USER, "chat", None, 0, limits)).admitted


async def test_daily_request_quota_counts_in_flight(ledger: SQLiteLedger) -> None:
    limits = Limits(daily_requests=2)
    assert (await ledger.begin("a", USER, "chat", None, 0, limits)).admitted
    assert (await ledger.begin("b", USER, "chat", None, 0, limits)).admitted
    refused = await ledger.begin("c", USER, "chat", None, 0, limits)
    assert (refused.reason, refused.limit, refused.retry_after) == ("quota_exceeded", "daily_requests", 12 * 3600)


async def test_daily_cost_quota_with_reservations(ledger: SQLiteLedger) -> None:
    limits = Limits(daily_cost_usd=0.05)
    for i in range(5):
        assert (await ledger.begin(f"r{i}", USER, "chat", None, 0.01, limits)).admitted
    refused = await ledger.begin("r5", USER, "chat", None, 0.01, limits)
    assert (refused.reason, refused.limit) == ("quota_exceeded", "daily_cost_usd")
    await ledger.finish(record("r0", cost=0.001))  # settling frees the unused part of the reservation
    assert not (await ledger.begin("r6", USER, "chat", None, 0.01, limits)).admitted  # 0.041 + 0.01 > 0.05
    assert (await ledger.begin("r7", USER, "chat", None, 0.009, limits)).admitted


async def test_user_limits_override_defaults(ledger: SQLiteLedger) -> None:
    await ledger.set_limits(USER, Limits(daily_requests=1))
    assert (await ledger.begin("a", USER, "chat", None, 0, Limits(daily_requests=100))).admitted
    assert not (await ledger.begin("b", USER, "chat", None, 0, Limits(daily_requests=100))).admitted
    assert (await ledger.begin("c", OTHER, "chat", None, 0, Limits(daily_requests=100))).admitted


async def test_refused_request_is_logged_without_usage(ledger: SQLiteLedger) -> None:
    assert await ledger.finish(record("refused", status=429, cost=0))
    [row] = await ledger.rows("request_log")
    assert row["status"] == 429
    assert await ledger.rows("usage_daily") == []


async def test_stale_reservations_are_released(ledger: SQLiteLedger, clock: Clock) -> None:
    limits = Limits(daily_requests=1)
    assert (await ledger.begin("lost", USER, "chat", None, 0.01, limits)).admitted
    clock.now += 16 * 60  # the instance died before finishing
    assert (await ledger.begin("next", USER, "chat", None, 0.01, limits)).admitted
    [day] = await ledger.rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"]) == (1, 0.01)


async def test_settles_on_the_reservation_day(ledger: SQLiteLedger, clock: Clock) -> None:
    clock.now = NOON + 12 * 3600 - 1  # 23:59:59
    await ledger.begin("late", USER, "chat", None, 0.01, Limits())
    clock.now += 2
    await ledger.finish(record("late"))
    [day] = await ledger.rows("usage_daily")
    assert (day["day"], day["requests"], day["in_flight"]) == ("2026-11-27", 1, 0)


async def test_concurrent_begins_never_overspend(ledger: SQLiteLedger) -> None:
    limits = Limits(daily_requests=7)
    answers = await asyncio.gather(*(ledger.begin(f"c{i}", USER, "chat", None, 0, limits) for i in range(40)))
    assert sum(a.admitted for a in answers) == 7


async def test_unwritable_path_is_ledger_unavailable(tmp_path: Path) -> None:
    from openrouter_functions.ledger import LedgerUnavailable

    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = SQLiteLedger(blocker / "ledger.sqlite3")
    assert not await broken.check()
    with pytest.raises(LedgerUnavailable):
        await broken.begin("r", USER, "chat", None, 0, Limits())


async def test_a_request_that_ran_without_a_reservation_is_still_counted(ledger: SQLiteLedger, clock: Clock) -> None:
    await ledger.begin("long", USER, "chat", None, 0.01, Limits())
    clock.now += 16 * 60  # a stream longer than the stale sweep
    await ledger.begin("other", USER, "chat", None, 0.01, Limits())  # sweeps "long"
    ran = record("long", cost=0.5)
    ran.admitted = True
    assert await ledger.finish(ran)
    [day] = await ledger.rows("usage_daily")
    assert (day["requests"], day["cost_usd"], day["in_flight"]) == (1, 0.5, 1)  # "other" still in flight

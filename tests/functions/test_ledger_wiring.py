"""The functions and the ledger (SQLite default here): rows, sums, limits, outages, nothing lost."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from helpers import HEALTH_DETAIL, USER_ID, bearer
from log_lines import as_json
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.ledger import Admission, LedgerUnavailable, Limits, UsageRecord, ledger_user_id
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.metrics import METRICS
from openrouter_functions.runtime import Runtime, get_runtime

HI = {"messages": [{"role": "user", "content": "Hello there"}]}


def sqlite_ledger() -> SQLiteLedger:
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    return ledger


async def test_chat_writes_one_row_and_settles_reported_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat", json=HI, headers=bearer())
    usage = response.json()["usage"]
    ledger = sqlite_ledger()
    [row] = await ledger.rows("request_log")
    assert row["user_id"] == USER_ID
    assert (row["function"], row["status"], row["outcome"], row["attempts"]) == ("chat", 200, "ok", 1)
    assert (row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
        usage["cost"],
    )
    assert row["generation_id"] == response.json()["id"]
    assert row["prompt_preview"] == "Hello there"
    [day] = await ledger.rows("usage_daily")
    assert (day["requests"], day["cost_usd"], day["reserved_usd"], day["in_flight"]) == (1, usage["cost"], 0, 0)


async def test_streamed_chat_is_settled_when_the_stream_ends(client: httpx.AsyncClient) -> None:
    response = await client.post("/chat", json={**HI, "stream": True}, headers=bearer())
    final = json.loads(response.text.split("\n\n")[-3][len("data: ") :])
    ledger = sqlite_ledger()
    [row] = await ledger.rows("request_log")
    assert row["completion_tokens"] == final["usage"]["completion_tokens"]
    assert row["cost_usd"] == final["usage"]["cost"]
    [day] = await ledger.rows("usage_daily")
    assert (day["requests"], day["in_flight"]) == (1, 0)


async def test_daily_quota_refuses_with_429_and_logs_the_refusal(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(DEFAULT_DAILY_REQUESTS="1")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    refused = await client.post("/completion", json={"prompt": "again"}, headers=bearer())
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "quota_exceeded"
    assert refused.json()["error"]["limit"] == "daily_requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert len(fake.received) == 1
    rows = await sqlite_ledger().rows("request_log")
    assert sorted(r["status"] for r in rows) == [200, 429]


async def test_rpm_limit_is_rate_limited(client: httpx.AsyncClient, configure: Any) -> None:
    configure(DEFAULT_RPM="1")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    refused = await client.post("/chat", json=HI, headers=bearer())
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_cost_quota_uses_the_reservation(client: httpx.AsyncClient, configure: Any) -> None:
    configure(DEFAULT_DAILY_COST_USD="0.005", QUOTA_RESERVE_USD="0.01")
    refused = await client.post("/chat", json=HI, headers=bearer())  # the reservation alone would overspend
    assert refused.status_code == 429
    assert refused.json()["error"]["limit"] == "daily_cost_usd"
    configure(DEFAULT_DAILY_COST_USD="0.005", QUOTA_RESERVE_USD="0.001")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200


async def test_per_user_limits_table_overrides_defaults(client: httpx.AsyncClient, configure: Any) -> None:
    configure(DEFAULT_DAILY_REQUESTS="100")
    await sqlite_ledger().set_limits(USER_ID, Limits(daily_requests=0))
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 429


async def test_bad_request_after_sign_in_is_logged_without_usage(client: httpx.AsyncClient) -> None:
    await client.post("/chat", json={"messages": []}, headers=bearer())
    [row] = await sqlite_ledger().rows("request_log")
    assert (row["status"], row["error_type"]) == (400, "invalid_request")
    assert await sqlite_ledger().rows("usage_daily") == []


async def test_unauthenticated_requests_leave_no_row(client: httpx.AsyncClient) -> None:
    await client.post("/chat", json=HI)
    assert await sqlite_ledger().rows("request_log") == []


async def test_reused_client_request_id_is_still_metered(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        await client.post("/chat", json=HI, headers={**bearer(), "X-Request-Id": "same"})
    assert len(await sqlite_ledger().rows("request_log")) == 2
    [day] = await sqlite_ledger().rows("usage_daily")
    assert day["requests"] == 2


async def test_upstream_failure_is_logged_and_reservation_released(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    fake.script({"fault": "status", "status": 400, "message": "bad"})
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 400
    [row] = await sqlite_ledger().rows("request_log")
    assert (row["status"], row["error_type"], row["attempts"]) == (400, "bad_request", 1)
    [day] = await sqlite_ledger().rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"], day["requests"]) == (0, 0, 1)


# -- outages -----------------------------------------------------------------------------------------


class BrokenLedger:
    name = "broken"

    def __init__(self, *, begin_fails: bool = True, finish_fails: bool = True) -> None:
        self.begin_fails = begin_fails
        self.finish_fails = finish_fails
        self.finishes = 0

    async def begin(self, *args: Any) -> Admission:
        if self.begin_fails:
            raise LedgerUnavailable("connection refused")
        return Admission(True, reserved_usd=0.01)

    async def finish(self, record: UsageRecord) -> bool:
        self.finishes += 1
        if self.finish_fails:
            raise LedgerUnavailable("connection refused")
        return True

    async def check(self) -> bool:
        return not self.begin_fails

    async def aclose(self) -> None:
        return None


def install(runtime: Runtime, ledger: BrokenLedger) -> None:
    runtime.use_ledger(ledger)


async def test_ledger_outage_at_begin_fails_closed_by_default(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    install(get_runtime(), BrokenLedger())
    response = await client.post("/chat", json=HI, headers=bearer())
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "ledger_unavailable"
    assert response.headers["retry-after"] == "5"
    assert fake.received == []


async def test_ledger_outage_at_begin_can_fail_open(
    client: httpx.AsyncClient, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = configure(LEDGER_FAILURE_MODE="open")
    ledger = BrokenLedger(finish_fails=False)
    install(runtime, ledger)
    caplog.set_level("INFO", logger="openrouter_functions")
    response = await client.post("/chat", json=HI, headers={**bearer(), "X-Request-Id": "req-open-1"})
    assert response.status_code == 200
    [begin] = [as_json(r) for r in caplog.records if r.getMessage() == "ledger_begin_failed"]
    assert (begin["request_id"], begin["severity"]) == ("req-open-1", "WARNING")
    # The breaker the failed begin opened sends the record straight to the replayable log line: served
    # unmetered, but counted as having run once it is replayed.
    assert ledger.finishes == 0
    [line] = [as_json(r) for r in caplog.records if r.getMessage() == "usage_unrecorded"]
    assert line["request_id"] == "req-open-1"
    assert line["record"]["p_row"]["admitted"] is True
    assert line["record"]["p_row"]["cost_usd"] == response.json()["usage"]["cost"]


async def test_a_ledger_that_cannot_be_built_is_reported(client: httpx.AsyncClient, configure: Any) -> None:
    configure(LEDGER_BACKEND="postgres")  # no DATABASE_URL
    refused = await client.post("/chat", json=HI, headers=bearer())
    assert (refused.status_code, refused.json()["error"]["type"]) == (500, "configuration_error")
    configure(LEDGER_BACKEND="postgres", LEDGER_FAILURE_MODE="open")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200  # served unmetered
    health = await client.get("/health", headers=HEALTH_DETAIL)
    assert health.status_code == 503
    body = health.json()
    assert body["down"] == ["ledger", "configuration"]
    assert body["checks"]["ledger"] == {"ok": False, "backend": "postgres", "failure_mode": "open"}
    assert "LEDGER_BACKEND=postgres needs DATABASE_URL." in body["checks"]["configuration"]["problems"]


async def test_a_request_refused_by_policy_is_logged_with_its_model(client: httpx.AsyncClient, configure: Any) -> None:
    configure(ALLOWED_MODELS="openai/*")
    response = await client.post("/chat", json={**HI, "model": "anthropic/claude-3-opus"}, headers=bearer())
    assert response.json()["error"]["type"] == "model_not_allowed"
    [row] = await sqlite_ledger().rows("request_log")
    assert (row["model"], row["status"], row["error_type"]) == ("anthropic/claude-3-opus", 400, "model_not_allowed")


async def test_failed_finish_is_retried_then_logged_whole(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    ledger = BrokenLedger(begin_fails=False)
    install(get_runtime(), ledger)
    before = METRICS.value("orf_usage_unrecorded_total", function="chat")
    caplog.set_level("INFO", logger="openrouter_functions")
    response = await client.post("/chat", json=HI, headers=bearer())
    assert response.status_code == 200  # the caller got the answer; the record is not lost either
    assert ledger.finishes == 3
    assert len(sleeps) == 2
    assert METRICS.value("orf_usage_unrecorded_total", function="chat") == before + 1
    [line] = [as_json(r) for r in caplog.records if r.getMessage() == "usage_unrecorded"]
    assert line["record"]["p_user_id"] == USER_ID
    assert line["record"]["p_row"]["cost_usd"] == response.json()["usage"]["cost"]
    assert line["record"]["p_row"]["status"] == 200


async def test_health_reports_the_ledger(client: httpx.AsyncClient) -> None:
    body = (await client.get("/health", headers=HEALTH_DETAIL)).json()
    assert body["checks"]["ledger"] == {"ok": True, "backend": "sqlite", "failure_mode": "closed"}
    install(get_runtime(), BrokenLedger())
    response = await client.get("/health", headers=HEALTH_DETAIL)
    assert response.status_code == 503
    assert response.json()["down"] == ["ledger"]


async def test_ledger_off(client: httpx.AsyncClient, configure: Any) -> None:
    configure(LEDGER_BACKEND="off")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    assert (await client.get("/health", headers=HEALTH_DETAIL)).json()["checks"]["ledger"]["backend"] == "off"


# -- what the review found ----------------------------------------------------------------------------


async def test_bad_messages_do_not_spend_quota(client: httpx.AsyncClient, configure: Any) -> None:
    configure(DEFAULT_DAILY_REQUESTS="1")
    for _ in range(2):
        bad = await client.post("/chat", json={"messages": [{"role": "bogus", "content": "x"}]}, headers=bearer())
        assert bad.status_code == 400
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200


async def test_max_output_tokens_is_applied_when_the_caller_sets_none(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(MAX_OUTPUT_TOKENS="64")
    await client.post("/chat", json=HI, headers=bearer())
    await client.post("/chat", json={**HI, "max_tokens": 10}, headers=bearer())
    assert [r.json()["max_tokens"] for r in fake.received] == [64, 10]


class SlowLedger(BrokenLedger):
    def __init__(self) -> None:
        super().__init__(begin_fails=False, finish_fails=False)
        self.begins = 0

    async def begin(self, *args: Any) -> Admission:
        self.begins += 1
        import asyncio

        await asyncio.sleep(30)
        raise AssertionError("unreachable")


async def test_a_hanging_ledger_is_bounded_and_then_skipped(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    ledger = SlowLedger()
    install(get_runtime(), ledger)
    get_runtime().meter.timeout = 0.2
    first = await client.post("/chat", json=HI, headers=bearer())
    assert first.status_code == 503
    assert first.json()["error"]["type"] == "ledger_unavailable"
    second = await client.post("/chat", json=HI, headers=bearer())  # the breaker answers at once
    assert second.status_code == 503
    assert ledger.begins == 1
    assert fake.received == []


class ExplodingLedger(BrokenLedger):
    async def begin(self, *args: Any) -> Admission:
        raise RuntimeError("supabase client could not be built")


@pytest.mark.parametrize(("mode", "status"), [("closed", 503), ("open", 200)])
async def test_any_ledger_failure_follows_the_failure_mode(
    client: httpx.AsyncClient, configure: Any, mode: str, status: int
) -> None:
    runtime = configure(LEDGER_FAILURE_MODE=mode)
    install(runtime, ExplodingLedger(begin_fails=True, finish_fails=False))
    response = await client.post("/chat", json=HI, headers=bearer())
    assert response.status_code == status
    assert response.headers["x-request-id"]


async def test_a_cancelled_request_releases_its_reservation_and_is_logged(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    import asyncio

    fake.script({"fault": "hang"})
    task = asyncio.create_task(client.post("/chat", json=HI, headers=bearer()))
    for _ in range(200):
        if fake.received:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [row] = await sqlite_ledger().rows("request_log")
    assert (row["status"], row["outcome"]) == (499, "cancelled")
    [day] = await sqlite_ledger().rows("usage_daily")
    assert (day["in_flight"], day["reserved_usd"]) == (0, 0)
    # No usage came back, and OpenRouter still bills what was generated: the reservation is charged.
    assert (row["cost_usd"], day["requests"], day["cost_usd"]) == (0.01, 1, 0.01)


class HangingFinishLedger(BrokenLedger):
    """Admits, then never answers a finish (a store that went away mid-request)."""

    def __init__(self) -> None:
        super().__init__(begin_fails=False, finish_fails=False)

    async def finish(self, record: UsageRecord) -> bool:
        import asyncio

        self.finishes += 1
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


async def test_a_hanging_finish_holds_a_finished_answer_at_most_a_second(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    ledger = HangingFinishLedger()
    install(get_runtime(), ledger)  # the meter's real 5 s call timeout: only the settle budget bounds it
    caplog.set_level("INFO", logger="openrouter_functions")
    started = time.monotonic()
    response = await client.post("/chat", json=HI, headers={**bearer(), "X-Request-Id": "req-hang-1"})
    assert response.status_code == 200
    assert time.monotonic() - started < 1.5
    assert ledger.finishes == 1
    [line] = [as_json(r) for r in caplog.records if r.getMessage() == "usage_unrecorded"]
    assert (line["request_id"], line["error"]) == ("req-hang-1", "timed out")
    assert line["record"]["p_row"]["cost_usd"] == response.json()["usage"]["cost"]


async def test_a_crashed_instances_reservation_stops_blocking_the_user_after_deadline_and_drain(
    client: httpx.AsyncClient, configure: Any
) -> None:
    """An instance that died mid-call left a reservation; the user's quota is whole again once no call of
    ours could still be running (OPENROUTER_DEADLINE + SHUTDOWN_DRAIN_SECONDS + a margin), not 15 minutes."""
    configure(DEFAULT_DAILY_REQUESTS="1", OPENROUTER_DEADLINE="60", SHUTDOWN_DRAIN_SECONDS="5")
    ledger = sqlite_ledger()
    admitted = await ledger.begin("crashed-call", ledger_user_id(USER_ID), 0.01, Limits(daily_requests=1))
    assert admitted.admitted

    refused = await client.post("/chat", json=HI, headers=bearer())
    assert refused.status_code == 429, "a reservation younger than deadline + drain may still be running"

    def age(conn: Any) -> None:  # the crashed call began 2 minutes ago: past 60 + 5 + 30 s
        conn.execute("update ledger_reservations set created_at = '2000-01-01T00:00:00.000Z'")

    await ledger._run(age)
    response = await client.post("/chat", json=HI, headers=bearer())
    assert response.status_code == 200, response.text
    [day] = await ledger.rows("usage_daily")
    assert (day["requests"], day["in_flight"]) == (1, 0)

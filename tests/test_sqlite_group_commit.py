"""Group commit in the SQLite ledger: the calls made in one turn of the event loop share one transaction.

What a user of the ledger would notice if it went wrong: quotas overshot under concurrency, a request
recorded twice or not at all, one bad record taking other requests' records down with it, a call
answered before its record is committed, a lone call waiting for company, a cancelled caller breaking
the others. The ledger's rules themselves are tested in tests/db/test_ledger_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import openrouter_functions.ledger.sqlite as module
from openrouter_functions.ledger import LedgerRejected, LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.sqlite import SQLiteLedger

USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
NOON = 1_795_780_800.0  # 2026-11-27T12:00:00Z: every call in one rpm window and one day


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SQLiteLedger]:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=lambda: NOON)
    assert await ledger.check()  # the file and its tables exist
    yield ledger
    await ledger.aclose()


def statements(ledger: SQLiteLedger) -> Counter[str]:
    """Counts of the statements the ledger's connection runs from now on, by first word (``commit``...)."""
    counts: Counter[str] = Counter()
    ledger._connection().set_trace_callback(lambda sql: counts.update([sql.split(None, 1)[0].lower()]))
    return counts


def record(request_id: str, **fields: Any) -> UsageRecord:
    return UsageRecord(request_id, USER, "chat", **({"admitted": True, "prompt_tokens": 1, "cost_usd": 0.001} | fields))


async def usage(ledger: SQLiteLedger) -> dict[str, Any]:
    (row,) = await ledger.rows("usage_daily")
    return row


def read(path: str, sql: str) -> list[tuple[Any, ...]]:
    """What another connection (another process) sees in the file: only what was committed."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def test_concurrent_begins_admit_exactly_the_daily_quota_in_one_transaction(ledger: SQLiteLedger) -> None:
    counts = statements(ledger)

    admissions = await asyncio.gather(
        *(ledger.begin(f"r{i}", USER, i / 1000, Limits(daily_requests=7)) for i in range(40))
    )

    # One after another, each seeing the reservations of those before it: the first seven are admitted.
    assert [a.admitted for a in admissions] == [True] * 7 + [False] * 33
    assert {a.limit for a in admissions[7:]} == {"daily_requests"}
    assert [a.reserved_usd for a in admissions[:7]] == [i / 1000 for i in range(7)]  # each its own answer
    assert counts["commit"] == 1
    assert (await usage(ledger))["in_flight"] == 7
    assert len(read(ledger.path, "select * from ledger_reservations")) == 7


async def test_concurrent_requests_are_each_recorded_exactly_once(ledger: SQLiteLedger) -> None:
    counts = statements(ledger)

    async def one_request(n: int) -> None:
        admission = await ledger.begin(f"r{n}", USER, 0.01, Limits())
        assert admission.admitted
        await asyncio.sleep(0)  # requests interleave: begins and finishes share batches
        assert await ledger.finish(record(f"r{n}"))
        # Answered only once committed: another connection sees the record the moment the caller resumes.
        assert read(ledger.path, f"select count(*) from request_log where request_id = 'r{n}'") == [(1,)]

    await asyncio.gather(*(one_request(n) for n in range(100)))
    duplicates = await asyncio.gather(*(ledger.finish(record(f"r{n}")) for n in range(0, 100, 10)))

    assert not any(duplicates)
    row = await usage(ledger)
    assert (row["requests"], row["in_flight"], row["reserved_usd"], row["prompt_tokens"]) == (100, 0, 0, 100)
    assert row["cost_usd"] == pytest.approx(0.1)
    assert read(ledger.path, "select count(*), count(distinct request_id) from request_log") == [(100, 100)]
    assert read(ledger.path, "select count(*) from ledger_reservations") == [(0,)]
    assert counts["commit"] <= 10  # 210 calls, a few transactions


async def test_a_failing_call_loses_its_own_writes_only(ledger: SQLiteLedger) -> None:
    assert (await ledger.begin("bad", USER, 0.01, Limits())).admitted
    assert (await ledger.begin("good", USER, 0.01, Limits())).admitted
    counts = statements(ledger)

    def half_done(conn: sqlite3.Connection) -> None:
        conn.execute("insert into user_limits (user_id, rpm) values (?, 1)", (USER,))
        raise ValueError("a value the store cannot hold")

    outcomes = await asyncio.gather(
        ledger.finish(record("good")),
        ledger.finish(record("bad", prompt_tokens=2**70)),  # more than SQLite's integers hold
        ledger._run(half_done),
        ledger.begin("next", USER, 0.01, Limits()),
        return_exceptions=True,
    )

    assert outcomes[0] is True
    assert isinstance(outcomes[1], LedgerRejected)
    assert isinstance(outcomes[2], LedgerRejected)
    assert getattr(outcomes[3], "admitted", None) is True
    assert counts["commit"] == 1  # the others' writes committed together, once
    assert read(ledger.path, "select request_id from request_log") == [("good",)]
    assert read(ledger.path, "select * from user_limits") == []  # the half-done call's insert is gone
    assert sorted(read(ledger.path, "select request_id from ledger_reservations")) == [("bad",), ("next",)]
    row = await usage(ledger)
    assert (row["requests"], row["in_flight"]) == (1, 2)
    # The bad record's request is settled by a retry with values that fit.
    assert await ledger.finish(record("bad"))
    assert (await usage(ledger))["in_flight"] == 1


async def test_a_lone_call_waits_for_nothing_and_commits_alone(ledger: SQLiteLedger) -> None:
    counts = statements(ledger)

    task = asyncio.create_task(ledger.begin("r0", USER, 0.01, Limits()))
    turns = 0
    while not task.done() and turns < 10:
        await asyncio.sleep(0)  # one turn of the event loop, no time passing
        turns += 1

    assert task.done()
    assert turns <= 3  # it ran on the loop's next turn: no timer, no wait for company
    assert task.result().admitted
    for n in range(1, 5):  # one after another: one transaction each, no savepoints
        assert (await ledger.begin(f"r{n}", USER, 0.01, Limits())).admitted
    assert counts["commit"] == 5
    assert counts["savepoint"] == 0


async def test_a_batch_holds_at_most_max_batch_calls(ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MAX_BATCH", 4)
    counts = statements(ledger)

    admissions = await asyncio.gather(*(ledger.begin(f"r{i}", USER, 0.01, Limits()) for i in range(10)))

    assert all(a.admitted for a in admissions)
    assert counts["commit"] == 3  # 4 + 4 + 2


async def test_a_failed_commit_fails_every_call_of_the_batch_and_writes_none(ledger: SQLiteLedger) -> None:
    assert (await ledger.begin("held", USER, 0.01, Limits())).admitted
    conn = ledger._connection()

    def no_commit(action: int, what: str | None, *_: Any) -> int:
        refused = action == sqlite3.SQLITE_TRANSACTION and (what or "").upper() == "COMMIT"
        return sqlite3.SQLITE_DENY if refused else sqlite3.SQLITE_OK

    conn.set_authorizer(no_commit)
    outcomes = await asyncio.gather(
        ledger.begin("new", USER, 0.01, Limits()),
        ledger.finish(record("held")),
        ledger.set_limits(USER, Limits(rpm=1)),
        return_exceptions=True,
    )
    lone = await asyncio.gather(ledger.finish(record("held")), return_exceptions=True)
    conn.set_authorizer(None)

    for outcome in [*outcomes, *lone]:
        assert isinstance(outcome, LedgerUnavailable)
        assert not isinstance(outcome, LedgerRejected)  # the store failed, not the request's data
    assert not conn.in_transaction
    assert read(ledger.path, "select request_id from ledger_reservations") == [("held",)]
    assert read(ledger.path, "select * from request_log") == []
    assert read(ledger.path, "select * from user_limits") == []
    assert read(ledger.path, "select requests, in_flight from usage_daily") == [(0, 1)]
    # The store is back: the same calls go through.
    assert await ledger.finish(record("held"))
    assert (await ledger.begin("new", USER, 0.01, Limits())).admitted


async def test_a_full_disk_fails_every_call_of_the_batch_and_writes_none(ledger: SQLiteLedger) -> None:
    assert (await ledger.begin("held", USER, 0.01, Limits())).admitted
    conn = ledger._connection()
    (pages,) = conn.execute("pragma page_count").fetchone()
    conn.execute(f"pragma max_page_count = {pages}")  # no room for one more page

    outcomes = await asyncio.gather(
        ledger.finish(record("held")),
        *(ledger.finish(record(f"r{i}", admitted=False, prompt_preview="p" * 512)) for i in range(40)),
        return_exceptions=True,
    )
    conn.execute("pragma max_page_count = 1073741823")

    assert all(isinstance(o, LedgerUnavailable) and not isinstance(o, LedgerRejected) for o in outcomes)
    assert read(ledger.path, "select * from request_log") == []
    assert read(ledger.path, "select request_id from ledger_reservations") == [("held",)]
    assert await ledger.finish(record("held"))


async def test_a_file_locked_beyond_the_timeout_fails_the_batch(ledger: SQLiteLedger) -> None:
    ledger._connection().execute("pragma busy_timeout = 50")
    with contextlib.closing(sqlite3.connect(ledger.path, isolation_level=None)) as other:
        other.execute("begin immediate")  # another process writing, and writing, and writing
        outcomes = await asyncio.gather(
            ledger.begin("a", USER, 0.01, Limits()), ledger.begin("b", USER, 0.01, Limits()), return_exceptions=True
        )
        other.execute("rollback")

    assert all(isinstance(o, LedgerUnavailable) for o in outcomes)
    assert read(ledger.path, "select * from ledger_reservations") == []
    assert (await ledger.begin("a", USER, 0.01, Limits())).admitted


async def test_a_cancelled_caller_breaks_nothing_and_its_call_still_runs(ledger: SQLiteLedger) -> None:
    begin = asyncio.create_task(ledger.begin("cancelled", USER, 0.01, Limits()))
    finish = asyncio.create_task(ledger.finish(record("gone", admitted=False)))
    other = asyncio.create_task(ledger.begin("other", USER, 0.01, Limits()))
    await asyncio.sleep(0)  # all three are waiting for the batch
    begin.cancel()
    finish.cancel()

    done = await asyncio.wait_for(asyncio.gather(begin, finish, other, return_exceptions=True), 5)

    assert isinstance(done[0], asyncio.CancelledError)
    assert isinstance(done[1], asyncio.CancelledError)
    assert getattr(done[2], "admitted", None) is True
    # A finish whose caller went away is still recorded; a begin's reservation is settled by the request's
    # finish (the pipeline settles a cancelled request, admitted or not, under a shield).
    assert read(ledger.path, "select request_id from request_log") == [("gone",)]
    assert (await usage(ledger))["in_flight"] == 2
    assert await ledger.finish(record("cancelled", admitted=False))
    row = await usage(ledger)
    assert (row["requests"], row["in_flight"]) == (1, 1)


async def test_checkpoints_count_calls_not_commits(ledger: SQLiteLedger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The WAL between two checkpoints stays as short as it was with one commit per call."""
    monkeypatch.setattr(module, "CHECKPOINT_EVERY", 10)

    await asyncio.gather(*(ledger.begin(f"r{i}", USER, 0.01, Limits()) for i in range(12)))

    assert ledger._checkpointer is not None


async def test_closing_runs_the_calls_still_waiting_first(ledger: SQLiteLedger) -> None:
    finish = asyncio.create_task(ledger.finish(record("last", admitted=False)))
    await asyncio.sleep(0)  # waiting for the batch

    await ledger.aclose()

    assert await finish
    assert ledger._conn is None  # closed, not reopened by a call run after it
    assert read(ledger.path, "select request_id from request_log") == [("last",)]


def test_calls_left_by_a_closed_event_loop_run_with_the_next_loops_batch(tmp_path: Path) -> None:
    """A loop closed before its drain ran (a test's loop torn down, a runtime outliving its loop) leaves
    its calls queued: the next loop runs them, and does not mistake them for another thread's batch."""
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=lambda: NOON)
    first = asyncio.new_event_loop()
    orphan = first.create_task(ledger.finish(record("orphan", admitted=False)))
    first.call_soon(first.stop)  # after the task's first step (its call queued), before the drain
    first.run_forever()
    first.close()
    assert not orphan.done()

    async def later() -> None:
        counts = statements(ledger)
        assert await ledger.finish(record("later", admitted=False))
        assert counts["commit"] == 1  # one transaction for both
        await ledger.aclose()

    asyncio.run(later())
    assert sorted(read(ledger.path, "select request_id from request_log")) == [("later",), ("orphan",)]


def test_threads_with_event_loops_of_their_own_share_one_ledger_without_a_hang(tmp_path: Path) -> None:
    """Each loop's callers are answered on their own loop, whatever the interleaving: here the other thread
    gets the GIL between the look at the queue and the append to it (a list whose length sleeps)."""
    import threading
    import time

    class SlowList(list[Any]):
        def __len__(self) -> int:
            size = super().__len__()
            time.sleep(0.001)
            return size

    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=lambda: NOON)
    ledger._queue = SlowList()
    drain = ledger._drain

    def drain_keeping_it_slow() -> None:
        drain()
        if type(ledger._queue) is list:
            ledger._queue = SlowList(ledger._queue)

    foreign: list[int] = []
    answer = module._answer

    def answered_on_its_own_loop(future: asyncio.Future[Any], error: BaseException | None, result: Any = None) -> None:
        if future.get_loop() is not asyncio.get_running_loop():  # answered from another thread's loop
            foreign.append(1)
        answer(future, error, result)

    hung: list[int] = []

    def worker() -> None:
        async def main() -> None:
            for _ in range(100):
                try:
                    await asyncio.wait_for(ledger.check(), 2.0)
                except TimeoutError:
                    hung.append(1)

        asyncio.run(main())

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_answer", answered_on_its_own_loop)
        patch.setattr(ledger, "_drain", drain_keeping_it_slow)
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert (hung, foreign) == ([], [])

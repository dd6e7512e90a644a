"""What only the SQLite ledger has: a file, its schema version, an injectable clock, and local helpers.

The ledger's rules are tested once for every backend in tests/db/test_ledger_contract.py.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from openrouter_functions.ledger import Admission, LedgerUnavailable, Limits, UsageRecord
from openrouter_functions.ledger.sqlite import SCHEMA_VERSION, SQLiteLedger

USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
OTHER = "0b7f3a52-8f43-4a0e-9a3c-2a4cbb7d5e01"
NOON = 1_795_780_800.0  # 2026-11-27T12:00:00Z

# The layout files had before the schema was versioned (user_version 0).
UNVERSIONED_SCHEMA = """
create table request_log (
  request_id text primary key, user_id text not null, function text not null, model text,
  status integer not null, error_type text, outcome text, latency_ms real, attempts integer,
  prompt_tokens integer, completion_tokens integer, total_tokens integer, cost_usd real,
  generation_id text, prompt_preview text, response_preview text, created_at text not null);
create table usage_daily (
  user_id text not null, day text not null, requests integer not null default 0,
  prompt_tokens integer not null default 0, completion_tokens integer not null default 0,
  cost_usd real not null default 0, reserved_usd real not null default 0, in_flight integer not null default 0,
  primary key (user_id, day));
create table user_limits (user_id text primary key, rpm integer, daily_requests integer, daily_cost_usd real, updated_at text);
create table rate_windows (
  user_id text not null, window_start integer not null, count integer not null default 0,
  primary key (user_id, window_start));
create table ledger_reservations (
  request_id text primary key, user_id text not null, day text not null, reserved_usd real not null,
  created_at real not null);
insert into usage_daily (user_id, day, requests, in_flight) values ('6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11', '2026-11-27', 3, 1);
insert into rate_windows values ('6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11', 1795780800, 5);
"""


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def columns(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"pragma table_info({table})")]


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        version: int = conn.execute("pragma user_version").fetchone()[0]
        return version


async def test_the_clock_is_what_now_is_in_the_sql_functions(tmp_path: Path) -> None:
    clock = Clock(NOON + 15.25)
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=clock)

    assert await ledger.begin("r1", USER, 0.01, Limits(rpm=1)) == Admission(True, reserved_usd=0.01)
    assert await ledger.begin("r2", USER, 0.01, Limits(rpm=1)) == Admission(False, "rate_limited", "rpm", 45)
    clock.now = NOON + 12 * 3600 - 30  # 23:59:30
    assert await ledger.begin("r3", OTHER, 0, Limits(daily_requests=0)) == Admission(
        False, "quota_exceeded", "daily_requests", 30
    )

    [reservation] = await ledger.rows("ledger_reservations")
    assert (reservation["day"], reservation["created_at"]) == ("2026-11-27", "2026-11-27T12:00:15.250Z")
    assert await ledger.rows("rate_windows") == [
        {"user_id": USER, "window_start": "2026-11-27T12:00:00.000Z", "requests": 1}
    ]
    assert await ledger.finish(UsageRecord("r1", USER, "chat", admitted=True))
    [logged] = await ledger.rows("request_log")
    assert logged["created_at"] == "2026-11-27T23:59:30.000Z"
    await ledger.aclose()


async def test_set_limits_and_rows_are_the_local_servers_view_of_the_tables(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=Clock())

    await ledger.set_limits(USER, Limits(rpm=5, daily_cost_usd=0.25))
    await ledger.set_limits(USER, Limits(daily_requests=50))  # replaces the whole row, as an operator's edit

    assert await ledger.rows("user_limits") == [
        {
            "user_id": USER,
            "rpm": None,
            "daily_requests": 50,
            "daily_cost_usd": None,
            "updated_at": "2026-11-27T12:00:00.000Z",
        }
    ]
    with pytest.raises(ValueError, match="sqlite_master"):
        await ledger.rows("sqlite_master")
    await ledger.aclose()


async def test_the_parent_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / ".openrouter-functions" / "ledger.sqlite3"
    ledger = SQLiteLedger(path)

    assert await ledger.check()

    assert path.is_file()
    assert user_version(path) == SCHEMA_VERSION
    await ledger.aclose()


async def test_an_unusable_path_makes_the_ledger_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    broken = SQLiteLedger(blocker / "ledger.sqlite3")

    assert not await broken.check()
    with pytest.raises(LedgerUnavailable, match="^sqlite: "):
        await broken.begin("r", USER, 0, Limits())


async def test_a_file_from_before_the_schema_version_is_recreated(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(UNVERSIONED_SCHEMA)
    assert user_version(path) == 0

    ledger = SQLiteLedger(path, clock=Clock())
    assert (await ledger.begin("r1", USER, 0.01, Limits(daily_requests=1))).admitted  # the old counts are gone

    assert user_version(path) == SCHEMA_VERSION
    assert columns(path, "rate_windows") == ["user_id", "window_start", "requests"]
    assert columns(path, "ledger_reservations") == [
        "request_id",
        "user_id",
        "day",
        "amount_usd",
        "admission",
        "created_at",
    ]
    assert "total_tokens" in columns(path, "usage_daily")
    assert [(row["requests"], row["in_flight"]) for row in await ledger.rows("usage_daily")] == [(0, 1)]
    await ledger.aclose()


async def test_a_file_at_the_current_version_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = SQLiteLedger(path, clock=Clock())
    await first.begin("r1", USER, 0.01, Limits())
    await first.aclose()

    again = SQLiteLedger(path, clock=Clock())

    assert [row["request_id"] for row in await again.rows("ledger_reservations")] == ["r1"]
    await again.aclose()


async def test_a_version_1_file_is_migrated_with_its_rows(tmp_path: Path) -> None:
    """Version 2 made the small tables WITHOUT ROWID (fewer pages per write); a version 1 file keeps its
    counts, limits, reservations and log."""
    from openrouter_functions.ledger import sqlite_schema

    path = tmp_path / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in sqlite_schema._SCHEMA:  # version 1 is version 2 with rowids
            conn.execute(statement.replace(") without rowid", ")"))
        conn.executescript(
            f"""
            pragma user_version = 1;
            insert into usage_daily (user_id, day, requests, in_flight, reserved_usd, cost_usd)
              values ('{USER}', '2026-11-27', 3, 1, 0.01, 0.5);
            insert into user_limits (user_id, daily_requests) values ('{USER}', 5);
            insert into rate_windows values ('{USER}', '2026-11-27T12:00:00.000Z', 2);
            insert into ledger_reservations (request_id, user_id, day, amount_usd, admission, created_at)
              values ('r0', '{USER}', '2026-11-27', 0.01, '{{"admitted": true}}', '2026-11-27T11:59:00.000Z');
            insert into request_log (request_id, user_id, function, status) values ('old', '{USER}', 'chat', 200);
            """
        )
    assert "without rowid" not in Path(path).read_bytes().decode("latin-1").lower()

    ledger = SQLiteLedger(path, clock=Clock())
    # 3 settled + 1 in flight of the user's 5: one more is admitted, then the quota is reached.
    assert (await ledger.begin("r1", USER, 0.01, Limits())).admitted
    assert (await ledger.begin("r2", USER, 0.01, Limits())).limit == "daily_requests"
    assert await ledger.finish(UsageRecord("r0", USER, "chat", admitted=True, cost_usd=0.25))
    [usage] = await ledger.rows("usage_daily")
    assert (usage["requests"], usage["in_flight"], usage["reserved_usd"], usage["cost_usd"]) == (4, 1, 0.01, 0.75)
    assert (await ledger.rows("rate_windows"))[0]["requests"] == 3
    assert {row["request_id"] for row in await ledger.rows("request_log")} == {"old", "r0"}
    await ledger.aclose()

    assert user_version(path) == SCHEMA_VERSION == 2
    with contextlib.closing(sqlite3.connect(path)) as conn:
        tables = dict(conn.execute("select name, sql from sqlite_master where type = 'table'").fetchall())
        indexes = {name for (name,) in conn.execute("select name from sqlite_master where type = 'index'")}
    assert sorted(tables) == sorted(("request_log", *sqlite_schema._WITHOUT_ROWID_SINCE_2))
    assert all(tables[t].endswith("without rowid") for t in sqlite_schema._WITHOUT_ROWID_SINCE_2)
    assert not tables["request_log"].endswith("without rowid")
    assert "request_log_user_id_created_at_idx" in indexes
    assert "ledger_reservations_user_id_created_at_idx" not in indexes  # see sqlite_schema._SCHEMA


async def test_two_ledgers_on_one_file_share_the_limits(tmp_path: Path) -> None:
    """Like two local processes: BEGIN IMMEDIATE serializes them on the file, as the row lock does in SQL."""
    path = tmp_path / "ledger.sqlite3"
    one, other = SQLiteLedger(path, clock=Clock()), SQLiteLedger(path, clock=Clock())

    assert (await one.begin("r1", USER, 0, Limits(daily_requests=1))).admitted
    refused = await other.begin("r2", USER, 0, Limits(daily_requests=1))

    assert (refused.admitted, refused.limit) == (False, "daily_requests")
    await one.aclose()
    await other.aclose()


# -- retention and erasure (what public.purge_request_log and public.erase_user_data do in PostgreSQL) ----

DAY = 24 * 3600.0


async def logged(ledger: SQLiteLedger, request_id: str, user: str = USER) -> None:
    assert await ledger.finish(UsageRecord(request_id, user, function="chat", status=200, admitted=False))


async def test_a_finish_purges_rows_older_than_the_retention_at_most_once_an_hour(tmp_path: Path) -> None:
    clock = Clock()
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=clock, retention_days=30)
    await logged(ledger, "day-0")
    clock.now += 20 * DAY
    await logged(ledger, "day-20")
    clock.now += 11 * DAY  # day 31: "day-0" is past the retention, and the last purge was long ago
    await logged(ledger, "day-31")
    assert [r["request_id"] for r in await ledger.rows("request_log")] == ["day-20", "day-31"]

    clock.now += 20 * DAY  # day 51: "day-20" is 31 days old now
    await logged(ledger, "day-51")
    clock.now += 60  # a minute later: no second purge within the hour
    await logged(ledger, "day-51b")
    assert [r["request_id"] for r in await ledger.rows("request_log")] == ["day-31", "day-51", "day-51b"]


async def test_without_a_retention_rows_are_kept(tmp_path: Path) -> None:
    clock = Clock()
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=clock)
    await logged(ledger, "ancient")
    clock.now += 400 * DAY
    await logged(ledger, "today")
    assert len(await ledger.rows("request_log")) == 2
    with pytest.raises(LedgerUnavailable):
        await ledger.purge_request_log(0)


async def test_erasing_a_user_leaves_everyone_else(tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3", clock=Clock())
    for user in (USER, OTHER):
        assert (await ledger.begin(f"running-{user}", user, 0.01, Limits(rpm=10))).admitted
        await logged(ledger, f"done-{user}", user)
        await ledger.set_limits(user, Limits(rpm=5))

    erased = await ledger.erase_user_data(USER)

    assert erased == {"request_log": 1, "usage_daily": 1, "user_limits": 1, "rate_windows": 1, "ledger_reservations": 1}
    for table in ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations"):
        assert {r["user_id"] for r in await ledger.rows(table)} == {OTHER}, table


async def test_checkpoints_run_in_the_background_and_never_inside_a_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openrouter_functions.ledger.sqlite as module

    monkeypatch.setattr(module, "CHECKPOINT_EVERY", 3)
    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path)
    ran: list[str] = []
    checkpoint_now = ledger._checkpoint_now

    def counted() -> None:
        ran.append(threading.current_thread().name)
        checkpoint_now()

    monkeypatch.setattr(ledger, "_checkpoint_now", counted)
    for n in range(7):
        assert (await ledger.begin(f"r{n}", USER, 0.01, Limits())).admitted
        assert await ledger.finish(UsageRecord(f"r{n}", USER, "chat", admitted=True, cost_usd=0.001))
    assert ledger._conn is not None
    assert ledger._conn.execute("pragma wal_autocheckpoint").fetchone() == (0,)  # SQLite's own is off
    await ledger.aclose()  # waits for a checkpoint still running

    assert ran and set(ran) == {"sqlite-ledger-checkpoint"}
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("select requests, in_flight from usage_daily").fetchall() == [(7, 0)]


async def test_a_failed_checkpoint_costs_nothing_but_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import openrouter_functions.ledger.sqlite as module

    monkeypatch.setattr(module, "CHECKPOINT_EVERY", 1)
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3")
    assert (await ledger.begin("r1", USER, 0.01, Limits())).admitted  # the file and its tables exist
    assert ledger._checkpointer is not None
    ledger._checkpointer.join(10)
    ledger.path = str(tmp_path / "missing" / "ledger.sqlite3")  # the checkpoint's connection cannot open it
    assert await ledger.finish(UsageRecord("r1", USER, "chat", admitted=True))  # copies what the first one left
    assert (await ledger.begin("r2", USER, 0.01, Limits())).admitted  # starts the next background checkpoint
    assert ledger._checkpointer is not None
    ledger._checkpointer.join(10)
    assert "sqlite_checkpoint_failed" in caplog.text
    assert await ledger.finish(UsageRecord("r2", USER, "chat", admitted=True))
    assert (await ledger.begin("r3", USER, 0.01, Limits())).admitted
    await ledger.aclose()


async def test_the_wal_starts_over_after_checkpoints_on_a_busy_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background checkpoint leaves the frames committed while it ran; unless they are copied too, SQLite
    never starts the WAL over and it grows with every request (it did: 55 MB per thousand requests)."""
    import openrouter_functions.ledger.sqlite as module

    monkeypatch.setattr(module, "CHECKPOINT_EVERY", 4)
    path = tmp_path / "ledger.sqlite3"
    ledger = SQLiteLedger(path)
    checkpoint_now = ledger._checkpoint_now

    def busy_checkpoint() -> None:
        # A request commits while the checkpoint runs, as under load: after the frames it copies.
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("begin immediate")
            other.execute("insert into user_limits (user_id, rpm) values (?, 1)", (str(len(ran)),))
            checkpoint_now()
            other.execute("commit")
        ran.append(1)

    ran: list[int] = []
    monkeypatch.setattr(ledger, "_checkpoint_now", busy_checkpoint)
    wal = Path(f"{path}-wal")
    sizes = []
    for n in range(120):
        assert (await ledger.begin(f"r{n}", USER, 0.01, Limits())).admitted
        assert await ledger.finish(UsageRecord(f"r{n}", USER, "chat", admitted=True, prompt_preview="p" * 500))
        if ledger._checkpointer is not None:
            ledger._checkpointer.join(10)
        sizes.append(wal.stat().st_size)
    await ledger.aclose()

    assert len(ran) >= 20
    # 120 requests write ~1,500 frames (6 MB); started over, the WAL holds a few checkpoint periods' worth.
    assert max(sizes) < 1_000_000, sizes
    assert sizes[-1] <= max(sizes[: len(sizes) // 2])

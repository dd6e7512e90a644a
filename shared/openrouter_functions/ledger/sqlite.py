"""The embedded ledger: SQLite, for local runs. The same contract and rules as the SQL functions.

The tables mirror ``supabase/migrations``: the same names, columns and meaning, with timestamps as UTC
ISO-8601 text (``2026-11-27T12:00:00.000Z``, which sorts like the time it names), days as
``YYYY-MM-DD`` and money as reals rounded to 8 places like ``numeric(14, 8)``. ``_begin`` and
``_finish`` follow ``public.ledger_begin`` and ``public.ledger_finish`` step by step, in the same
order, so the two read side by side; a change to one belongs in the other.

``BEGIN IMMEDIATE`` takes SQLite's write lock before anything is read. It plays the part of the SQL
functions' lock on the user's ``usage_daily`` row (for every user at once, which a local run can
afford), for every thread and process sharing the file.

Commits write the WAL without syncing it (``synchronous=normal``); the checkpoints that copy it back
into the database file (and sync both) run in a short-lived thread on a connection of its own, every
:data:`CHECKPOINT_EVERY` commits, instead of inside a commit on the event loop: a checkpoint's syncs
took up to tens of milliseconds there, holding every request the loop was serving.

A checkpoint in another thread never finishes the job on a busy ledger, though: the frames committed
while it ran are left in the WAL, and SQLite starts the WAL over (writes it from its beginning again)
only once every frame is in the database file. The WAL then grew without end (55 MB per thousand
requests) and every call slowed down with it. So the first commit after a background checkpoint copies
what is left, the frames committed meanwhile (a few requests' worth), on the ledger's own connection;
the next write starts the WAL over.

Group commit: the calls made while other work is on the event loop share one transaction. The first
call to arrive schedules a drain for the loop's next turn (``call_soon``, no timer: a lone call waits
for nothing but the work already queued before it); every call made before it runs joins, up to
:data:`MAX_BATCH`. The drain runs them one after another, in the order they were made, inside one
``BEGIN IMMEDIATE ... COMMIT``: each sees the writes of those before it, the same serial order as one
transaction each, and none is answered before the commit (no write-behind). A call that raises (a value
the store cannot hold, a bad argument) loses its own writes only: the transaction is rolled back and the
batch runs again with each call in a SAVEPOINT of its own (savepoints on every batch would cost more
than the failures they are for). A failure of the transaction itself (BEGIN, COMMIT, or SQLite rolling
everything back after a full disk) fails every call of the batch, with nothing of it committed.
Much of a call's cost is the pages it writes to the WAL at its commit and the commit itself, and the
calls of one batch mostly write the same pages (a user's usage row, the tables' b-tree pages): sharing a
commit writes them once.

A call runs once it joined a batch, even if its caller is cancelled while waiting (the caller then
misses the answer): a finish whose caller went away is still recorded, and a begin's reservation is
settled by the request's finish (found by its id) or released as stale, as when an instance dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from . import Admission, LedgerRejected, LedgerUnavailable, Limits, UsageRecord
from .sqlite_schema import PREVIEW_CHARS, SCHEMA_VERSION, TABLES, create_tables

__all__ = ["LOG_COLUMNS", "SCHEMA_VERSION", "TABLES", "SQLiteLedger"]

log = logging.getLogger("openrouter_functions.ledger")

STALE_AFTER = timedelta(minutes=15)
PURGE_EVERY_SECONDS = 3600.0
# Calls committed between two background checkpoints (SQLite's own automatic one, off here, comes every
# ~1,000 WAL pages; a request's begin and finish write about nine, fewer when batched). Each one ends
# with a short catch-up on the ledger's own connection (see the module's docstring) whose syncs cost the
# same however much it copies: 512 calls (a WAL of ~10 MB at most) cost half as much per request as 128
# did. Calls, not commits: a commit holds up to MAX_BATCH calls, and the WAL must stay as short as it was.
CHECKPOINT_EVERY = 512
# Calls in one transaction at most (group commit, see the module's docstring): the loop is held for the
# whole batch, ~50 µs a call; more calls wait for the next turn of the loop.
MAX_BATCH = 64

# Errors a statement raises over the values it was given, not over the file: a lone surrogate in a
# text (UnicodeEncodeError), an integer SQLite cannot hold (OverflowError), a number Decimal cannot
# round (decimal.InvalidOperation, an ArithmeticError), a CHECK the row breaks.
_DATA_ERRORS = (sqlite3.DataError, sqlite3.IntegrityError, ValueError, ArithmeticError)

LOG_COLUMNS = (
    "request_id",
    "user_id",
    "function",
    "model",
    "status",
    "error_type",
    "outcome",
    "latency_ms",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "generation_id",
    "prompt_preview",
    "response_preview",
    "created_at",
)

_LOG_ROW = (
    f"insert into request_log ({', '.join(LOG_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"values ({', '.join('?' for _ in LOG_COLUMNS)}) on conflict (request_id) do nothing"
)

# A user's usage row for a day, made sure to exist.
_DAY_ROW = "insert into usage_daily (user_id, day, updated_at) values (?, ?, ?) on conflict do nothing"

# What ledger_begin reads (parameters: user, day, stale-before, request id, window start): today's usage
# row (nulls when there is none yet), whether stale reservations exist, the first admission of a repeated
# begin, the user's own limits, and the requests counted in the current minute window.
_BEGIN_READ = """
select u.requests, u.in_flight, u.cost_usd, u.reserved_usd,
       exists (select 1 from ledger_reservations where user_id = ?1 and created_at < ?3),
       (select admission from ledger_reservations where request_id = ?4 and user_id = ?1),
       (select rpm from user_limits where user_id = ?1),
       (select daily_requests from user_limits where user_id = ?1),
       (select daily_cost_usd from user_limits where user_id = ?1),
       (select case when window_start = ?5 then requests else 0 end from rate_windows where user_id = ?1)
  from (select 1) left join usage_daily u on u.user_id = ?1 and u.day = ?2
"""

# Usage settled by a finish: on the reservation's day releasing it, or on today for a request that ran
# without one (then nothing is released).
_SETTLE = """
update usage_daily
   set requests = requests + 1,
       prompt_tokens = prompt_tokens + coalesce(?, 0),
       completion_tokens = completion_tokens + coalesce(?, 0),
       total_tokens = total_tokens + coalesce(?, 0),
       cost_usd = round(cost_usd + coalesce(?, 0), 8),
       reserved_usd = max(round(reserved_usd - ?, 8), 0),
       in_flight = max(in_flight - ?, 0),
       updated_at = ?
 where user_id = ? and day = ?
"""


def _timestamp(moment: datetime) -> str:
    """A UTC time as the tables keep it; the same text as SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ')``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _money(value: Any) -> float | None:
    """What ``numeric(14, 8)`` keeps of a number: rounded half away from zero to 8 places, as Postgres does."""
    if value is None:
        return None
    return float(Decimal(repr(value)).quantize(Decimal("1e-8"), ROUND_HALF_UP))


def _whole(value: Any) -> int | None:
    """A JSON number stored in an integer column: rounded half away from zero, as Postgres does."""
    if value is None or type(value) is int:  # most are whole already (not bool: Decimal refuses it)
        return value
    return int(Decimal(repr(value)).quantize(Decimal(1), ROUND_HALF_UP))


def _preview(value: Any) -> str | None:
    """Previews are cut rather than rejected by the CHECK: losing the log row (and the usage settlement
    with it) over a long preview would be the worse failure."""
    return None if value is None else str(value)[:PREVIEW_CHARS]


def _seconds_until(moment: datetime, until: datetime) -> int:
    return max(1, math.ceil((until - moment).total_seconds()))


def _release(conn: sqlite3.Connection, user_id: str, stale_before: str, now: str) -> int:
    """The SQL functions' sweep: ``delete ... returning`` the user's reservations taken before
    ``stale_before``, then give each day's usage row its requests and reserved cost back."""
    released = conn.execute(
        "delete from ledger_reservations where user_id = ? and created_at < ? returning day, amount_usd",
        (user_id, stale_before),
    ).fetchall()
    per_day: dict[str, tuple[int, float]] = {}
    for released_day, amount in released:
        count, total = per_day.get(released_day, (0, 0.0))
        per_day[released_day] = (count + 1, total + amount)
    for released_day, (count, total) in per_day.items():
        conn.execute(
            "update usage_daily set in_flight = max(in_flight - ?, 0), "
            "reserved_usd = max(round(reserved_usd - ?, 8), 0), updated_at = ? where user_id = ? and day = ?",
            (count, total, now, user_id, released_day),
        )
    return len(released)


def _ledger_error(exc: BaseException) -> BaseException:
    """What a call's caller gets for an error its statements raised: LedgerRejected for the call's own
    data, LedgerUnavailable for the store, anything else as it is."""
    if isinstance(exc, _DATA_ERRORS):
        error: LedgerUnavailable = LedgerRejected(f"sqlite: {exc.__class__.__name__}: {exc}")
    elif isinstance(exc, sqlite3.Error | OSError):
        error = LedgerUnavailable(f"sqlite: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


def _answer(future: asyncio.Future[Any], error: BaseException | None, result: Any = None) -> None:
    """Hand a call's outcome to its caller, unless the caller stopped waiting (cancelled)."""
    if future.done():
        return
    try:
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    except RuntimeError:  # its event loop is closed: nobody is waiting any more
        pass


_Call = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]


def _refusal(reason: str, limit: str, retry_after: int) -> dict[str, Any]:
    return {"admitted": False, "reason": reason, "limit": limit, "retry_after": retry_after}


class SQLiteLedger:
    """Ledger in one SQLite file, for local runs.

    Calls run inline on the event loop, the calls made in one turn of the loop in one transaction (group
    commit, see the module's docstring): each is a few local statements, and handing them to a worker
    thread cost more CPU than the work itself on our machines. The lock keeps the connection safe if the
    ledger is ever shared across threads. ``clock`` (seconds since the epoch) is what ``now()`` is in
    the SQL functions.
    """

    name = "sqlite"
    # Every call is answered by the loop's next turn (its batch runs then, to its end, without yielding):
    # the meter arms no timeout around it. One could only cut a caller off from a call already committed.
    inline = True

    def __init__(
        self, path: str | Path, *, clock: Callable[[], float] = time.time, retention_days: int | None = None
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        # public.purge_request_log's job, done here by the ledger itself: at most once an hour, a finish
        # also deletes request_log rows older than ``retention_days`` (None: kept).
        self.retention_days = retention_days
        self._next_purge = 0.0
        self._wal = False  # the file is in WAL mode: checkpoints are ours to run (see the module's docstring)
        self._commits = 0  # calls committed since the last background checkpoint
        self._checkpointer: threading.Thread | None = None
        # A background checkpoint finished: the next commit copies the frames committed while it ran.
        self._catch_up = False
        # Group commit: the calls waiting for the next drain, and the event loop that will run it.
        self._queue: list[_Call] = []
        self._queue_loop: asyncio.AbstractEventLoop | None = None
        self._queue_lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                (mode,) = conn.execute("pragma journal_mode=wal").fetchone()
                conn.execute("pragma synchronous=normal")
                if mode == "wal":  # not for ":memory:"
                    conn.execute("pragma wal_autocheckpoint=0")
                    self._wal = True
                create_tables(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(conn, *args)`` in a write transaction, shared with the calls made in the same turn of the
        event loop (see the module's docstring); its result once that transaction is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] | None = loop.create_future()
        # The queue belongs to one event loop at a time; the lock makes the look and the append one step
        # for a ledger shared by threads that run loops of their own.
        with self._queue_lock:
            queue = self._queue
            if not queue:
                self._queue_loop = loop
                loop.call_soon(self._drain)
            elif self._queue_loop is not loop:
                pending = self._queue_loop
                if pending is None or not pending.is_closed():
                    # Another thread's event loop has a batch pending: this call runs on its own, now (its
                    # futures are answered only on their own loop's thread).
                    future = None
                else:
                    # Left behind by a loop closed before its drain ran: they run with this loop's batch.
                    self._queue_loop = loop
                    loop.call_soon(self._drain)
            if future is not None:
                queue.append((fn, args, future))
        if future is None:
            return self._run_alone(fn, args)
        return await future

    def _drain(self) -> None:
        """Run the calls queued for this turn of the loop (at most MAX_BATCH; the rest at the next turn)."""
        with self._queue_lock:
            queue = self._queue
            if len(queue) > MAX_BATCH:
                batch = queue[:MAX_BATCH]
                del queue[:MAX_BATCH]
                assert self._queue_loop is not None
                self._queue_loop.call_soon(self._drain)
            else:
                batch, self._queue = queue, []
        if len(batch) == 1:  # nothing to share the transaction with: one of its own, as before batches
            fn, args, future = batch[0]
            try:
                result = self._run_alone(fn, args)
            except BaseException as exc:
                _answer(future, exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                _answer(future, None, result)
        elif batch:
            self._run_batch(batch)

    def _run_alone(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """One call in a transaction of its own."""
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("begin immediate")
            except (sqlite3.Error, OSError) as exc:
                raise LedgerUnavailable(f"sqlite: {exc}") from exc
            try:
                result = fn(conn, *args)
                conn.execute("commit")
            except BaseException as exc:
                if conn.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                    conn.execute("rollback")
                error = _ledger_error(exc)
                if error is exc:
                    raise
                raise error from exc
            self._committed(conn, 1)
            return result

    def _run_batch(self, batch: list[_Call]) -> None:
        """Several calls in one transaction, one after another; every caller is answered after the commit.
        A failure of the transaction itself fails them all, with nothing of the batch committed."""
        with self._lock:
            try:
                conn = self._connection()
                outcomes = self._transaction(conn, batch, isolated=False)
                if outcomes is None:
                    # A call raised, its writes until then mixed with the others': the batch runs again,
                    # each call in a savepoint of its own, so that the one failing loses its own writes only.
                    outcomes = self._transaction(conn, batch, isolated=True)
            except BaseException as exc:
                for _, _, future in batch:
                    failure = LedgerUnavailable(f"sqlite: {exc}") if isinstance(exc, Exception) else exc
                    if failure is not exc:
                        failure.__cause__ = exc
                    _answer(future, failure)
                if not isinstance(exc, Exception):
                    raise
                return
            assert outcomes is not None
            try:
                self._committed(conn, len(batch))
            finally:  # committed: every caller gets its answer, whatever the checkpoints do
                for future, error, result in outcomes:
                    _answer(future, error, result)

    @staticmethod
    def _transaction(
        conn: sqlite3.Connection, batch: list[_Call], *, isolated: bool
    ) -> list[tuple[asyncio.Future[Any], BaseException | None, Any]] | None:
        """The batch's calls in one transaction, committed; each call's result or error. Not ``isolated``
        (no savepoints: they cost ~7 µs a call, and calls seldom raise), a call raising rolls the whole
        transaction back and returns None. What fails the transaction itself is raised, rolled back."""
        outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        conn.execute("begin immediate")
        try:
            for fn, args, future in batch:
                if isolated:
                    conn.execute("savepoint call")
                try:
                    result = fn(conn, *args)
                except Exception as exc:
                    if not conn.in_transaction:  # SQLite rolled the whole transaction back (a full disk)
                        raise
                    if not isolated:
                        conn.execute("rollback")
                        return None
                    conn.execute("rollback to call")
                    conn.execute("release call")
                    outcomes.append((future, _ledger_error(exc), None))
                else:
                    if isolated:
                        conn.execute("release call")
                    outcomes.append((future, None, result))
            conn.execute("commit")
        except BaseException:
            if conn.in_transaction:
                # A connection that cannot roll back: SQLite rolls back when it is next used.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("rollback")
            raise
        return outcomes

    def _committed(self, conn: sqlite3.Connection, calls: int) -> None:
        """After a commit of ``calls`` calls: the checkpoints (see the module's docstring)."""
        if self._wal:
            self._commits += calls
            if self._catch_up:
                self._catch_up_checkpoint(conn)
            elif self._commits >= CHECKPOINT_EVERY:
                self._checkpoint()

    def _checkpoint(self) -> None:
        """Start a checkpoint in the background, unless the previous one is still running."""
        running = self._checkpointer
        if running is not None and running.is_alive():
            return
        self._commits = 0
        thread = threading.Thread(target=self._checkpoint_now, name="sqlite-ledger-checkpoint", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # no new threads (the interpreter is shutting down): closing checkpoints anyway
            return
        self._checkpointer = thread

    def _checkpoint_now(self) -> None:
        """Copy the WAL into the database file (PASSIVE: waits for no reader or writer), on a connection of
        its own, then close it. A failure costs nothing but a longer WAL: the next one catches up."""
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                conn.execute("pragma wal_checkpoint(passive)").fetchone()
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            log.warning("sqlite_checkpoint_failed", extra={"json_fields": {"error": str(exc)}})
            return
        self._catch_up = True

    def _catch_up_checkpoint(self, conn: sqlite3.Connection) -> None:
        """Copy the frames committed while the background checkpoint ran (see the module's docstring), after
        a commit, under the ledger's lock. A failure costs nothing but a longer WAL, as in the background."""
        self._catch_up = False
        try:
            conn.execute("pragma wal_checkpoint(passive)").fetchone()
        except (sqlite3.Error, OSError) as exc:
            log.warning("sqlite_checkpoint_failed", extra={"json_fields": {"error": str(exc)}})

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # -- release_stale: public.ledger_release_stale ---------------------------------------------------

    async def release_stale(self, user_id: str, older_than_seconds: int) -> int:
        if older_than_seconds < 0:
            raise LedgerUnavailable("sqlite: ledger_release_stale: p_older_than_seconds must be >= 0")

        def release(conn: sqlite3.Connection) -> int:
            moment = self._now()
            stale_before = _timestamp(moment - timedelta(seconds=older_than_seconds))
            return _release(conn, user_id, stale_before, _timestamp(moment))

        released: int = await self._run(release)
        return released

    # -- begin: public.ledger_begin -----------------------------------------------------------------

    async def begin(self, request_id: str, user_id: str, reserve_usd: float, limits: Limits) -> Admission:
        answer: dict[str, Any] = await self._run(self._begin, request_id, user_id, reserve_usd, limits)
        return Admission.from_json(answer)

    def _begin(
        self, conn: sqlite3.Connection, request_id: str, user_id: str, reserve_usd: float, defaults: Limits
    ) -> dict[str, Any]:
        moment = self._now()
        now = _timestamp(moment)
        day = moment.date().isoformat()
        window = moment.replace(second=0, microsecond=0)
        next_midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC)
        stale_before = _timestamp(moment - STALE_AFTER)
        reserve = _money(reserve_usd) or 0.0
        if reserve < 0:
            raise LedgerUnavailable(f"sqlite: ledger_begin: p_reserve_usd must be >= 0, got {reserve_usd}")

        # Everything the SQL function reads, in one statement: today's usage row, whether the user holds
        # stale reservations, a first admission under this request id, the user's limits and their
        # minute window. Under BEGIN IMMEDIATE's file lock nothing changes between reads, so one read
        # sees what the SQL function's reads one after another see.
        read = (user_id, day, stale_before, request_id, _timestamp(window))
        state = conn.execute(_BEGIN_READ, read).fetchone()

        # The user's row for today exists from here on (the SQL function locks it; the file lock taken by
        # BEGIN IMMEDIATE already serializes us).
        if state[0] is None:
            conn.execute(_DAY_ROW, (user_id, day, now))

        # Release reservations whose instance died between begin and finish (older than 15 minutes); the
        # sweep may have released today's usage, or this very request's first reservation: read again.
        if state[4]:
            _release(conn, user_id, stale_before, now)
            state = conn.execute(_BEGIN_READ, read).fetchone()
        requests, in_flight, cost_usd, reserved_usd = state[:4] if state[0] is not None else (0, 0, 0.0, 0.0)

        # A repeated begin (a retried call) gets the first admission back and reserves nothing more.
        if state[5] is not None:
            first: dict[str, Any] = json.loads(state[5])
            return first

        # Limits: the user's override, else the function's default; None means unlimited.
        rpm = state[6] if state[6] is not None else defaults.rpm
        daily_requests = state[7] if state[7] is not None else defaults.daily_requests
        daily_cost = _money(state[8] if state[8] is not None else defaults.daily_cost_usd)

        window_count = state[9] or 0

        if rpm is not None and window_count >= rpm:
            return _refusal("rate_limited", "rpm", _seconds_until(moment, window + timedelta(minutes=1)))

        # In-flight requests count against the daily quota: otherwise a burst of parallel requests would
        # all see the same settled count and overshoot it.
        if daily_requests is not None and requests + in_flight >= daily_requests:
            return _refusal("quota_exceeded", "daily_requests", _seconds_until(moment, next_midnight))

        # Summed in floats, compared as numeric(14, 8) would: 0.03 + 0.02 reaches a 0.05 limit, it does not pass it.
        if daily_cost is not None and (_money(cost_usd + reserved_usd + reserve) or 0.0) > daily_cost:
            return _refusal("quota_exceeded", "daily_cost_usd", _seconds_until(moment, next_midnight))

        # Admitted: count the request in its minute window and take the reservation.
        conn.execute(
            """
            insert into rate_windows (user_id, window_start, requests) values (?, ?, 1)
            on conflict (user_id) do update
               set requests = case when window_start = excluded.window_start then requests + 1 else 1 end,
                   window_start = excluded.window_start
            """,
            (user_id, _timestamp(window)),
        )
        conn.execute(
            "update usage_daily set in_flight = in_flight + 1, reserved_usd = round(reserved_usd + ?, 8), "
            "updated_at = ? where user_id = ? and day = ?",
            (reserve, now, user_id, day),
        )
        answer = {
            "admitted": True,
            "day": day,
            "reserved_usd": reserve,
            "limits": {"rpm": rpm, "daily_requests": daily_requests, "daily_cost_usd": daily_cost},
        }
        conn.execute(
            "insert into ledger_reservations (request_id, user_id, day, amount_usd, admission, created_at) "
            "values (?, ?, ?, ?, ?, ?)",
            (request_id, user_id, day, reserve, json.dumps(answer), now),
        )
        return answer

    # -- finish: public.ledger_finish ---------------------------------------------------------------

    async def finish(self, record: UsageRecord) -> bool:
        answer: dict[str, Any] = await self._run(self._finish, record.request_id, record.user_id, record.row())
        if self.retention_days is not None and self._clock() >= self._next_purge:
            self._next_purge = self._clock() + PURGE_EVERY_SECONDS
            await self.purge_request_log(self.retention_days)
        return bool(answer["recorded"])

    # -- retention and erasure: public.purge_request_log, public.erase_user_data -------------------------

    async def purge_request_log(self, retention_days: int) -> int:
        """Delete request_log rows older than ``retention_days``; returns how many."""
        if retention_days < 1:
            raise LedgerUnavailable("sqlite: purge_request_log: the retention period must be at least 1 day")
        cutoff = _timestamp(self._now() - timedelta(days=retention_days))

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute("delete from request_log where created_at < ?", (cutoff,)).rowcount

        deleted: int = await self._run(purge)
        return deleted

    async def erase_user_data(self, user_id: str) -> dict[str, int]:
        """Delete every row of one user, table by table; returns how many went from each."""

        def erase(conn: sqlite3.Connection) -> dict[str, int]:
            return {
                table: conn.execute(f"delete from {table} where user_id = ?", (user_id,)).rowcount  # noqa: S608
                for table in ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations")
            }

        erased: dict[str, int] = await self._run(erase)
        return erased

    def _finish(self, conn: sqlite3.Connection, request_id: str, user_id: str, row: dict[str, Any]) -> dict[str, Any]:
        moment = self._now()
        now = _timestamp(moment)
        tokens = tuple(_whole(row.get(key)) for key in ("prompt_tokens", "completion_tokens", "total_tokens"))
        cost_usd = _money(row.get("cost_usd"))

        logged = conn.execute(
            _LOG_ROW,
            (
                request_id,
                user_id,
                row.get("function"),
                row.get("model"),
                _whole(row.get("status")),
                row.get("error_type"),
                row.get("outcome"),
                _whole(row.get("latency_ms")),
                _whole(row.get("attempts")),
                *tokens,
                cost_usd,
                row.get("generation_id"),
                _preview(row.get("prompt_preview")),
                _preview(row.get("response_preview")),
                now,
            ),
        )
        if logged.rowcount == 0:
            return {"recorded": False, "duplicate": True}

        # The SQL function reads the reservation, locks its usage row, then deletes it; under SQLite's file
        # lock one `delete ... returning` is the same step.
        released = conn.execute(
            "delete from ledger_reservations where request_id = ? and user_id = ? returning day, amount_usd",
            (request_id, user_id),
        ).fetchone()
        settled = released is not None
        if released is not None:
            # Settled on the reservation's day: a request that crosses midnight counts where it began.
            day, amount = released
            conn.execute(_SETTLE, (*tokens, cost_usd, amount, 1, now, user_id, day))

        # A request that ran but holds no reservation any more (it outlived the 15-minute stale sweep, or
        # it was served while begin was failing and LEDGER_FAILURE_MODE=open) is still counted, on today.
        if not settled and row.get("admitted"):
            day = moment.date().isoformat()
            conn.execute(_DAY_ROW, (user_id, day, now))
            conn.execute(_SETTLE, (*tokens, cost_usd, 0, 0, now, user_id, day))

        return {"recorded": True}

    async def check(self) -> bool:
        try:
            await self._run(lambda conn: conn.execute("select 1").fetchone())
        except LedgerUnavailable:
            return False
        return True

    async def aclose(self) -> None:
        while self._queue and self._queue_loop is asyncio.get_running_loop():  # calls not run yet run first
            self._drain()
        checkpointer = self._checkpointer
        if checkpointer is not None:
            # Off the event loop: a checkpoint still running must not stall shutdown's other work. Its
            # connection goes before ours (the last one checkpoints).
            await asyncio.to_thread(checkpointer.join, 10.0)
            self._checkpointer = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- reading and limits (tests, local tools) ----------------------------------------------------

    async def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one ledger table, as dicts."""
        if table not in TABLES:
            raise ValueError(table)

        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(f"select * from {table}")  # noqa: S608 - table name checked above
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

        result: list[dict[str, Any]] = await self._run(read)
        return result

    async def set_limits(self, user_id: str, limits: Limits) -> None:
        """Per-user limits (what an operator would edit in the ``user_limits`` table)."""
        await self._run(
            lambda conn: conn.execute(
                "insert into user_limits (user_id, rpm, daily_requests, daily_cost_usd, updated_at) "
                "values (?, ?, ?, ?, ?) "
                "on conflict (user_id) do update set rpm = excluded.rpm, daily_requests = excluded.daily_requests, "
                "daily_cost_usd = excluded.daily_cost_usd, updated_at = excluded.updated_at",
                (user_id, limits.rpm, limits.daily_requests, _money(limits.daily_cost_usd), _timestamp(self._now())),
            )
        )

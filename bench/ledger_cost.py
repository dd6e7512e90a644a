"""What one request's ledger round trip costs: ``Meter.admit`` + ``Meter.settle`` per backend, in process.

No HTTP, no server: the meter around the SQLite ledger (a file in a temporary folder) and around the
PostgreSQL ledger (a throwaway cluster from ``tests/pgcluster.py`` on 127.0.0.1, skipped when there is
none), called one request at a time on a uvloop event loop, as ``serve`` runs them. Per request
(begin + finish): wall-clock latency (median and p90 of single requests) and this process's CPU
(``time.process_time`` over a block of requests), requests per second, and for PostgreSQL the database's CPU too (its
postmaster and backends, from ``/proc``). Rounds are interleaved across the backends, so a noisy
machine slows all of them alike; medians of rounds are printed.

    .venv/bin/python bench/ledger_cost.py [--rounds 7] [--calls 400] [--no-postgres] [--users 1]
        [--concurrency 1] [--pin split|same] [--socket] [--pool-size 4] [--sqlite-from FILE] [--wal]

``--users`` spreads requests over that many users (1: every request for one user, the worst case for
row locks; many users: the usual case). ``--concurrency`` runs that many requests at once on the loop
(the SQLite ledger then commits the calls made in one turn of the loop together, and a request's latency
includes waiting for its batch: before group commit a call never yielded, so the time it queued behind
the others did not show in its latency). ``--sqlite-from`` measures another version of
``ledger/sqlite.py`` alongside (e.g. ``git show HEAD:shared/...`` saved to a file), in the same
interleaved rounds; ``--wal`` also counts the WAL pages each SQLite request writes (on a file of its
own, checkpoints off) and the commits it takes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from openrouter_functions.ledger import Limits, UsageRecord
from openrouter_functions.ledger.meter import Meter
from openrouter_functions.ledger.sqlite import SQLiteLedger

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # pgcluster, imported where PostgreSQL is measured


def _tree_cpu_seconds(pid: int) -> float:
    """utime + stime (ticks) of a process and its children: the PostgreSQL server's CPU."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


async def _one_request(meter: Meter, user: str) -> float:
    ledger_id = str(uuid.uuid4())
    t0 = time.perf_counter()
    ticket = await meter.admit(ledger_id, user, "chat", request_id=ledger_id)
    record = UsageRecord(
        request_id=ledger_id,
        user_id=user,
        function="chat",
        model="openai/gpt-4o",
        status=200,
        latency_ms=12.5,
        attempts=1,
        prompt_tokens=10,
        completion_tokens=20,
        total_tokens=30,
        cost_usd=0.000123,
        generation_id="gen-1",
        admitted=ticket.admitted,
    )
    await meter.settle(record, request_id=ledger_id)
    return time.perf_counter() - t0


async def _one_block(
    meter: Meter, users: list[str], calls: int, db_pid: int | None, concurrency: int = 1
) -> dict[str, float]:
    latencies: list[float] = []
    db0 = _tree_cpu_seconds(db_pid) if db_pid else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if concurrency == 1:
        for i in range(calls):
            latencies.append(await _one_request(meter, users[i % len(users)]))
    else:
        counter = iter(range(calls))

        async def worker() -> None:
            for i in counter:
                latencies.append(await _one_request(meter, users[i % len(users)]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    db = (_tree_cpu_seconds(db_pid) - db0) if db_pid else 0.0
    latencies.sort()
    return {
        "p50_us": statistics.median(latencies) * 1e6,
        "p90_us": latencies[int(len(latencies) * 0.9)] * 1e6,
        "cpu_us": cpu / calls * 1e6,
        "db_cpu_us": db / calls * 1e6,
        "per_s": calls / wall,
    }


def _sqlite_from(path: str) -> type[SQLiteLedger]:
    """``SQLiteLedger`` of another version of the module, loaded inside the package (its relative imports)."""
    spec = importlib.util.spec_from_file_location("openrouter_functions.ledger._sqlite_compared", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    ledger_class: type[SQLiteLedger] = module.SQLiteLedger
    return ledger_class


async def _wal_pages(ledger_class: type[SQLiteLedger], users: list[str], calls: int, concurrency: int) -> str:
    """WAL pages written and commits per request, on a fresh file with checkpoints off."""
    names = vars(sys.modules[ledger_class.__module__])  # that version's module globals
    every = names["CHECKPOINT_EVERY"]
    names["CHECKPOINT_EVERY"] = 10**12
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-wal-") as folder:
            path = Path(folder) / "ledger.sqlite3"
            ledger = ledger_class(path)
            meter = Meter(ledger, default_limits=Limits(rpm=10**6, daily_requests=10**9, daily_cost_usd=10**6))
            await ledger.check()
            conn = ledger._connection()
            commits = 0

            def count(statement: str) -> None:
                nonlocal commits
                commits += statement.strip().lower() == "commit"

            conn.set_trace_callback(count)
            (page_size,) = conn.execute("pragma page_size").fetchone()
            wal = Path(f"{path}-wal")
            before = wal.stat().st_size if wal.exists() else 0
            commits = 0
            await _one_block(meter, users, calls, None, concurrency)
            frames = (wal.stat().st_size - max(before, 32)) / (page_size + 24)
            conn.set_trace_callback(None)
            await meter.aclose()
    finally:
        names["CHECKPOINT_EVERY"] = every
    return f"{frames / calls:.2f} WAL pages ({frames * (page_size + 24) / calls:.0f} B), {commits / calls:.2f} commits"


async def main(args: argparse.Namespace) -> None:
    limits = Limits(rpm=10**6, daily_requests=10**9, daily_cost_usd=10**6)
    users = [str(uuid.uuid4()) for _ in range(args.users)]
    meters: dict[str, tuple[Meter, int | None]] = {}
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-cost-"))
        sqlite = SQLiteLedger(Path(folder) / "ledger.sqlite3")
        meters["sqlite"] = (Meter(sqlite, default_limits=limits), None)
        compared = _sqlite_from(args.sqlite_from) if args.sqlite_from else None
        if compared is not None:
            other = compared(Path(folder) / "compared.sqlite3")
            meters["sqlite-from"] = (Meter(other, default_limits=limits), None)
        if not args.no_postgres:
            try:
                from openrouter_functions.ledger.postgres import PostgresLedger
                from pgcluster import PgCluster

                cluster = PgCluster.start(dbname="ledger_cost")
                stack.callback(cluster.stop)
                assert cluster.datadir is not None
                db_pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
                dsn = cluster.dsn
                if args.socket and cluster.socket_dir is not None:
                    dsn = f"postgresql://postgres@/{cluster.dbname}?host={cluster.socket_dir}&port={cluster.port}"
                if args.pin is not None:
                    _pin(db_pid, args.pin)
                ledger = PostgresLedger(dsn, pool_size=args.pool_size)
                meters["postgres"] = (Meter(ledger, default_limits=limits), db_pid)
            except Exception as exc:
                print(f"PostgreSQL skipped: {exc.__class__.__name__}: {exc}")
        for meter, db_pid in meters.values():  # warm-up: connections, statement caches
            await _one_block(meter, users, 50, db_pid)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in meters}
        names = list(meters)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                meter, db_pid = meters[name]
                results[name].append(await _one_block(meter, users, args.calls, db_pid, args.concurrency))
        for meter, _ in meters.values():
            await meter.aclose()

    print(
        f"{args.rounds} rounds x {args.calls} requests, {args.concurrency} at once, {args.users} user(s); "
        "per request (admit + settle):"
    )
    print(f"{'backend':10} {'p50 µs':>8} {'p90 µs':>8} {'CPU µs':>8} {'DB CPU µs':>10} {'req/s':>8}")
    for name, rounds in results.items():

        def med(key: str, rounds: list[dict[str, float]] = rounds) -> float:
            return statistics.median(r[key] for r in rounds)

        db = f"{med('db_cpu_us'):10.0f}" if name == "postgres" else f"{'-':>10}"
        print(f"{name:10} {med('p50_us'):8.0f} {med('p90_us'):8.0f} {med('cpu_us'):8.0f} {db} {med('per_s'):8.0f}")
    if args.wal:
        classes = {"sqlite": SQLiteLedger} | ({"sqlite-from": compared} if compared is not None else {})
        for name, ledger_class in classes.items():
            print(f"{name:10} per request: {await _wal_pages(ledger_class, users, args.calls, args.concurrency)}")


def _pin(db_pid: int, placement: str) -> None:
    """``split``: this process on the last core, PostgreSQL (postmaster, so every backend it forks) on the
    first, as bench/gateway_compare.py places them; ``same``: both on the first."""
    last = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {last if placement == "split" else 0})
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(entry) == db_pid or (fields and int(fields[1]) == db_pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(entry), {0})


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--pin", choices=("split", "same"), help="pin this process and PostgreSQL (see _pin)")
    parser.add_argument("--pool-size", type=int, default=4, help="the PostgreSQL ledger's connections")
    parser.add_argument("--socket", action="store_true", help="reach PostgreSQL over its Unix socket")
    parser.add_argument("--sqlite-from", metavar="FILE", help="also measure this version of ledger/sqlite.py")
    parser.add_argument("--wal", action="store_true", help="count the WAL pages and commits of a SQLite request")
    arguments = parser.parse_args()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main(arguments))

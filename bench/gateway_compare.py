"""Our gateway (``openrouter-functions serve``) against bare passthrough floors, under wrk, in one run.

Run by hand from the repository root (needs ``wrk``: installed with apt-get when missing and root)::

    .venv/bin/python bench/gateway_compare.py             # ~3-4 min
    .venv/bin/python bench/gateway_compare.py --quick     # ~1 min smoke run (numbers not meaningful)
    .venv/bin/python bench/gateway_compare.py --profile   # + py-spy profiles of serve (each ledger) under c=16 load

Systems, all running at once and measured interleaved (rounds, order rotated and reversed every round),
every one in front of the same fake OpenRouter (its own process, no chunk delay):

``aiohttp passthrough``  raw ASGI app under uvicorn (uvloop + httptools) forwarding the POST body with a
                         bare aiohttp client; no auth, no checks (bench/_passthrough_app.py)
``httpx floor``          the same passthrough through ``httpx.AsyncClient`` + ``httpx_aiohttp.AiohttpTransport``
``ours, SQLite``         ``openrouter-functions serve``, defaults (embedded SQLite ledger), real HS256 tokens
``ours, ledger off``     the same with ``LEDGER_BACKEND=off``
``ours, PostgreSQL``     ``LEDGER_BACKEND=postgres`` on a throwaway PostgreSQL on loopback
                         (tests/pgcluster.py; the row is skipped when PostgreSQL is unavailable)
``direct``               the load generator straight at the fake

Measured:

* wrk (1 thread, ``--latency``) at c=1 and c=16 (``--levels``), ``--duration`` s per point after a
  ``--warmup`` s warm-up (round 1; later rounds re-warm for 1 s): requests/s, p50, p99; and the CPU the
  server process used (``/proc/<pid>/task/*/schedstat``) per request served: the gateway process only
  (for ``direct``, the fake). The fake's and (PostgreSQL row) the database's CPU per request are kept too.
* Streams (``"stream": true``), c=1, a raw asyncio client: time to the first ``data:`` chunk (p50 over
  sequential streams), and CPU per stream for the echo reply (~15 events) and for a ``--chunks``-word
  reply, whose difference per extra chunk is the per-chunk cost.
* Cold start of ``serve`` (ledger off and SQLite): spawn to the first 200 on ``/health`` and to the first
  200 chat, ``--starts`` runs each, median. RSS (``VmRSS``) of every server idle after start and after
  the load.
* The client alone: ``OpenRouterService.chat_completion`` vs a bare httpx POST on the same httpx-aiohttp
  transport, sequential calls (bench/client_overhead.py's ``phase``, reused).

Cores: with two or more, the server under test gets the last core to itself, and wrk, the fake, this
script and PostgreSQL share the others (for ``direct`` the fake moves to the server core while it is
measured); ``--no-pin`` leaves placement to the kernel. ``--db-core server`` moves PostgreSQL (postmaster and
every backend) to the server core while the PostgreSQL row is measured, as ``direct`` does with the fake:
the ledger's store then counts as part of the system under test, and a request's four trips to it are
not four cross-core wake-ups (each ~0.5 ms on our 2-core VMs, more than the SQL itself).
Ratios are medians of per-round ratios.
Results also go to ``bench/results/gateway_compare.json``. Only 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import (
    API_KEY,
    PAYLOAD,
    RESULTS_DIR,
    STREAM_PAYLOAD,
    FakeServerProcess,
    Samples,
    environment,
    free_port,
    pin_cpus,
    print_table,
    round_orders,
    stop_process,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
JWT_SECRET = "bench-secret-that-is-at-least-32-characters-long"
USER_ID = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
BODY = json.dumps(PAYLOAD, separators=(",", ":")).encode()
STREAM_BODY = json.dumps(STREAM_PAYLOAD, separators=(",", ":")).encode()
STREAM_TIMEOUT = 30.0  # seconds one stream may take at most
READ_LIMIT = 16 << 20  # bytes read per stream at most
TICK = os.sysconf("SC_CLK_TCK")

AIOHTTP, HTTPX, SQLITE, OFF, POSTGRES, DIRECT = "aiohttp", "httpx", "sqlite", "off", "postgres", "direct"
LABELS = {
    AIOHTTP: "bare aiohttp passthrough",
    HTTPX: "httpx floor (httpx + httpx-aiohttp)",
    SQLITE: "ours, default (SQLite ledger)",
    OFF: "ours, LEDGER_BACKEND=off",
    POSTGRES: "ours, PostgreSQL ledger",
    DIRECT: "direct (client -> fake)",
}
OURS = (SQLITE, OFF, POSTGRES)


# --------------------------------------------------------------------------------------------------
# Processes: /proc readings, placement, the servers under test
# --------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """CPU time of one process: the sum of its threads' ``schedstat`` run time (nanoseconds, where utime +
    stime from ``/proc/<pid>/stat`` count 10 ms clock ticks), falling back to ``stat``. Threads that exited
    in between are not counted; our servers keep theirs (the event loop, executor threads)."""
    total, found = 0, False
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int((task / "schedstat").read_text().split()[0])
                found = True
    return total / 1e9 if found else stat_cpu_seconds(pid)


def stat_cpu_seconds(pid: int) -> float:
    """utime + stime from ``/proc/<pid>/stat`` (whole process, exited threads included; 10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process and its live descendants (PostgreSQL's postmaster and backends)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICK
    family, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    return sum(times.get(pid, 0.0) for pid in family)


def status_field(pid: int, name: str) -> int | None:
    """A number from ``/proc/<pid>/status`` (``VmRSS`` in kB, ``Threads``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    return None


def rss_mb(pid: int) -> float:
    kb = status_field(pid, "VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def set_affinity(pid: int, cpus: set[int] | None) -> None:
    """Move every thread of ``pid`` to ``cpus`` (affinity is per thread on Linux); no-op for ``None``."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


@dataclass
class Placement:
    """Which cores the server under test and everything else (client, wrk, fake, PostgreSQL) get."""

    server: set[int] | None = None
    rest: set[int] | None = None


def token() -> str:
    from openrouter_devtools.serve import mint_dev_token

    return mint_dev_token(JWT_SECRET, user_id=USER_ID, hours=2.0)


# serve's LOG_LEVEL (--log-level): INFO, as deployed, writes every request's JSON line (to /dev/null here).
SERVE_LOG_LEVEL = "INFO"


def serve_env(upstream: str, ledger: str, folder: Path, database_url: str | None = None) -> dict[str, str]:
    """A clean environment for ``serve``: our settings only, no .env file read (``ENV_FILE`` is empty)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENROUTER_", "SUPABASE_", "LEDGER_")) and k not in ("DATABASE_URL", "ENV_FILE")
    }
    empty = folder / "empty.env"
    empty.touch()
    env.update(
        ENV_FILE=str(empty),
        DEFAULT_RPM="unlimited",  # one user, many calls: no limits
        DEFAULT_DAILY_COST_USD="unlimited",
        OPENROUTER_API_KEY=API_KEY,
        OPENROUTER_BASE_URL=upstream,
        SUPABASE_JWT_SECRET=JWT_SECRET,
        LEDGER_BACKEND=ledger,
        LEDGER_SQLITE_PATH=str(folder / "ledger.sqlite3"),
        LOG_LEVEL=SERVE_LOG_LEVEL,
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def wait_http_ok(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not answer /health in {timeout:.0f} s")


@dataclass
class System:
    key: str
    url: str  # what the load generator POSTs to
    auth: str  # bearer token sent
    pid: int  # whose CPU is "the server's" (the fake for direct)
    proc: subprocess.Popen[bytes] | None = None
    db_pid: int | None = None  # PostgreSQL's postmaster, for the database's CPU

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def host_port(self) -> tuple[str, int, str]:
        parsed = httpx.URL(self.url)
        return parsed.host, parsed.port or 80, parsed.raw_path.decode()


def spawn(argv: list[str], env: dict[str, str] | None, log: Path, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
    set_affinity(proc.pid, cpus)
    return proc


def start_passthrough(kind: str, upstream: str, folder: Path, placement: Placement) -> System:
    port = free_port()
    argv = [sys.executable, str(BENCH / "_passthrough_app.py"), "--client", kind, "--upstream", upstream]
    log = folder / f"passthrough-{kind}.log"
    proc = spawn([*argv, "--port", str(port)], None, log, placement.server)
    try:
        wait_http_ok(port, proc, log)
    except BaseException:
        stop_process(proc)
        raise
    return System(kind, f"http://127.0.0.1:{port}/", API_KEY, proc.pid, proc)


def start_serve(
    key: str, ledger: str, upstream: str, folder: Path, placement: Placement, database_url: str | None = None
) -> System:
    port = free_port()
    sub = folder / f"serve-{key}"
    sub.mkdir(exist_ok=True)
    argv = [sys.executable, "-m", "openrouter_devtools.cli", "serve", "--port", str(port)]
    log = sub / "stderr.log"
    proc = spawn(argv, serve_env(upstream, ledger, sub, database_url), log, placement.server)
    try:
        wait_http_ok(port, proc, log)
        # one chat call: the runtime (pool, ledger schema) is set up lazily; fail here, not under wrk
        answer = httpx.post(
            f"http://127.0.0.1:{port}/chat",
            content=BODY,
            headers={"Authorization": f"Bearer {token()}", "Content-Type": "application/json"},
            timeout=30,
        )
        if answer.status_code != 200:
            raise RuntimeError(f"serve ({ledger}) answered {answer.status_code}: {answer.text[:300]}")
    except BaseException:
        stop_process(proc)
        raise
    return System(key, f"http://127.0.0.1:{port}/chat", token(), proc.pid, proc)


def start_postgres(stack: contextlib.ExitStack) -> tuple[str | None, int | None, str]:
    """``(DATABASE_URL, postmaster pid, message)`` of a throwaway cluster, or ``(None, None, why not)``."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from pgcluster import PgCluster  # tests/pgcluster.py

        cluster = PgCluster.start(dbname="gateway_bench")
    except Exception as exc:  # PgUnavailable, a failed migration, no runuser, ...
        return None, None, f"PostgreSQL unavailable ({exc.__class__.__name__}: {str(exc).strip()[:300]})"
    finally:
        sys.path.remove(str(ROOT / "tests"))
    stack.callback(cluster.stop)
    pid = None
    if cluster.datadir is not None:
        with contextlib.suppress(OSError, ValueError):
            pid = int((cluster.datadir / "postmaster.pid").read_text().split()[0])
    return cluster.dsn, pid, f"PostgreSQL {cluster.bindir.parent.name} at 127.0.0.1:{cluster.port}"


def set_tree_affinity(root: int, cpus: set[int] | None) -> None:
    """``set_affinity`` for a process and its live children (PostgreSQL's postmaster and backends)."""
    if cpus is None:
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if int(entry.name) == root or parent == root:
                    set_affinity(int(entry.name), cpus)


# --db-core server: PostgreSQL goes to the server core while the PostgreSQL row is measured.
DB_ON_SERVER_CORE = False


@contextlib.contextmanager
def measured(system: System, fake: FakeServerProcess, placement: Placement) -> Iterator[None]:
    """For ``direct`` the fake is the server under test: it gets the server core while measured (and, with
    ``--db-core server``, PostgreSQL does for the PostgreSQL row)."""
    moved = fake.pid if system.key == DIRECT else None
    if system.db_pid is not None and DB_ON_SERVER_CORE:
        moved = system.db_pid
    if moved is None:
        yield
        return
    set_tree_affinity(moved, placement.server)
    try:
        yield
    finally:
        set_tree_affinity(moved, placement.rest)


# --------------------------------------------------------------------------------------------------
# Load: wrk, or a Python fallback
# --------------------------------------------------------------------------------------------------


def ensure_wrk(install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    print("wrk not found: apt-get install -y wrk ...", flush=True)
    for argv in (["apt-get", "install", "-y", "wrk"], ["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            done = subprocess.run(argv, capture_output=True, timeout=300, check=False)
            if argv[1] == "install" and done.returncode == 0:
                break
    return shutil.which("wrk")


def lua_script(folder: Path, key: str, body: bytes, auth: str) -> Path:
    path = folder / f"wrk-{key}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {auth}"\n'
    )
    return path


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    if match := re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", text):
        out["requests"] = int(match.group(1))
    if match := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["rps"] = float(match.group(1))
    for pct in ("50", "99"):
        if match := re.search(rf"^\s+{pct}%\s+(\S+)", text, re.MULTILINE):
            out[f"p{pct}_ms"] = _ms(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx"] = int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = sum(int(g) for g in match.groups())
    missing = {"requests", "rps", "p50_ms", "p99_ms"} - out.keys()
    if missing:
        raise RuntimeError(f"could not read {sorted(missing)} from wrk's output:\n{text}")
    return out


class LoadGenerator:
    """``run(system, concurrency, seconds)`` -> requests, rps, p50_ms, p99_ms, non_2xx, socket_errors."""

    def __init__(self, wrk: str | None, folder: Path, placement: Placement) -> None:
        self.wrk = wrk
        self.folder = folder
        self.placement = placement
        self.scripts: dict[str, Path] = {}

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else "python (asyncio + httpx-aiohttp; wrk unavailable)"

    def run(self, system: System, concurrency: int, seconds: int) -> dict[str, Any]:
        if self.wrk is None:
            return asyncio.run(python_load(system, concurrency, seconds))
        if system.key not in self.scripts:
            self.scripts[system.key] = lua_script(self.folder, system.key, BODY, system.auth)
        argv = [self.wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "--latency"]
        argv += ["-s", str(self.scripts[system.key]), system.url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout)


async def python_load(system: System, concurrency: int, seconds: int) -> dict[str, Any]:
    """The fallback load loop: ``concurrency`` workers POSTing for ``seconds`` (at most 10**6 calls each)."""
    from httpx_aiohttp import AiohttpTransport

    headers = {"Authorization": f"Bearer {system.auth}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counts = Counter[str]()
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=10) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            for _ in range(1_000_000):
                if time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                try:
                    response = await client.post(system.url, content=BODY, headers=headers)
                except httpx.HTTPError:
                    counts["errors"] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if not 200 <= response.status_code < 400:
                    counts["non_2xx"] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "non_2xx": counts["non_2xx"],
        "socket_errors": counts["errors"],
    }


@dataclass
class Point:
    """Per-round values of one system at one concurrency level."""

    rps: Samples = field(default_factory=Samples)
    p50: Samples = field(default_factory=Samples)
    p99: Samples = field(default_factory=Samples)
    cpu: Samples = field(default_factory=Samples)  # server process CPU us per request
    upstream_cpu: Samples = field(default_factory=Samples)  # the fake's CPU us per request
    db_cpu: Samples = field(default_factory=Samples)  # PostgreSQL's CPU us per request
    runs: list[dict[str, Any]] = field(default_factory=list)


def load_phase(
    args: argparse.Namespace,
    systems: dict[str, System],
    fake: FakeServerProcess,
    load: LoadGenerator,
    placement: Placement,
) -> dict[tuple[str, int], Point]:
    points = {(key, level): Point() for key in systems for level in args.levels}
    for r, order in enumerate(round_orders(list(systems), args.rounds)):
        levels = args.levels if r % 2 == 0 else args.levels[::-1]
        for key in order:
            system = systems[key]
            for level in levels:
                with measured(system, fake, placement):
                    warmup = args.warmup if r == 0 else min(args.warmup, 1)
                    if warmup:
                        load.run(system, level, warmup)
                    fake.reset()  # the fake records every request: keep its memory flat
                    cpu0, up0 = cpu_seconds(system.pid), cpu_seconds(fake.pid)
                    db0 = tree_cpu_seconds(system.db_pid) if system.db_pid else 0.0
                    ticks0 = stat_cpu_seconds(system.pid)
                    run = load.run(system, level, args.duration)
                    cpu1, up1 = cpu_seconds(system.pid), cpu_seconds(fake.pid)
                    db1 = tree_cpu_seconds(system.db_pid) if system.db_pid else 0.0
                    ticks1 = stat_cpu_seconds(system.pid)
                n = max(run["requests"], 1)
                run["server_cpu_us_per_req_stat"] = round((ticks1 - ticks0) / n * 1e6, 1)  # cross-check
                if run["non_2xx"] > 0.01 * n or run["socket_errors"] > 0.01 * n:
                    raise RuntimeError(f"{system.label} at c={level}: too many failures: {run}")
                point = points[key, level]
                point.rps.add(run["rps"])
                point.p50.add(run["p50_ms"])
                point.p99.add(run["p99_ms"])
                point.cpu.add((cpu1 - cpu0) / n * 1e6)
                point.upstream_cpu.add((up1 - up0) / n * 1e6)
                point.db_cpu.add((db1 - db0) / n * 1e6)
                point.runs.append({"round": r + 1, **run})
                print(
                    f"  round {r + 1} {system.label:<36} c={level:<3} {run['rps']:8,.0f} rps  "
                    f"p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms  "
                    f"server CPU {(cpu1 - cpu0) / n * 1e6:5.0f} us/req",
                    flush=True,
                )
    return points


# --------------------------------------------------------------------------------------------------
# Streams: a raw asyncio client
# --------------------------------------------------------------------------------------------------


class StreamClient:
    """Pre-built ``POST`` bytes for a streamed call over one keep-alive connection."""

    def __init__(self, system: System) -> None:
        host, port, path = system.host_port
        self.host, self.port = host, port
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {system.auth}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len(STREAM_BODY)}\r\n\r\n"
        )
        self.request = head.encode() + STREAM_BODY
        self.conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def __aenter__(self) -> StreamClient:
        self.conn = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn[1].close()
            with contextlib.suppress(OSError):
                await self.conn[1].wait_closed()
            self.conn = None

    async def stream(self) -> tuple[float, float, int]:
        """``(seconds to the first data: chunk, seconds to the end, data events)`` of one streamed call."""
        assert self.conn is not None
        reader, writer = self.conn
        async with asyncio.timeout(STREAM_TIMEOUT):
            sent = time.perf_counter()
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            lower = head.lower()
            if b"transfer-encoding: chunked" not in lower:
                length = re.search(rb"content-length: *(\d+)", lower)
                body = await (reader.readexactly(int(length.group(1))) if length else reader.read(READ_LIMIT))
                raise RuntimeError(f"not a chunked stream (status {status}): {body[:300]!r}")
            body = bytearray()
            first = 0.0
            while len(body) < READ_LIMIT:
                chunk = await reader.read(65536)
                if not chunk:
                    raise RuntimeError("connection closed mid-stream")
                if not first and b"data:" in body[-8:] + chunk:
                    first = time.perf_counter() - sent
                body += chunk
                if body.endswith(b"\r\n0\r\n\r\n"):
                    break
            end = time.perf_counter() - sent
        if status != 200:
            raise RuntimeError(f"stream answered {status}: {bytes(body[:300])!r}")
        return first, end, body.count(b"data: {")


async def stream_batch(system: System, fake: FakeServerProcess, streams: int, warm: int) -> dict[str, Any]:
    """``streams`` sequential streams on a fresh connection after ``warm`` untimed ones."""
    async with StreamClient(system) as client:
        for _ in range(warm):
            await client.stream()
        cpu0, up0 = cpu_seconds(system.pid), cpu_seconds(fake.pid)
        results = [await client.stream() for _ in range(streams)]
        cpu1, up1 = cpu_seconds(system.pid), cpu_seconds(fake.pid)
    return {
        "ttfb_ms": [r[0] * 1e3 for r in results],
        "total_ms": [r[1] * 1e3 for r in results],
        "events": statistics.median(r[2] for r in results),
        "cpu_s": cpu1 - cpu0,
        "upstream_cpu_s": up1 - up0,
        "streams": streams,
    }


def script_fake(fake: FakeServerProcess, words: int, repeat: int) -> None:
    fake.reset()
    step = {"fault": "reply", "content": " ".join(["word"] * words), "repeat": repeat}
    httpx.post(f"{fake.url}/_fake/script", json=[step], timeout=10).raise_for_status()


def stream_phase(
    args: argparse.Namespace, systems: dict[str, System], fake: FakeServerProcess, placement: Placement
) -> dict[str, Any]:
    """TTFB and CPU per stream for the echo reply; then CPU per stream for a ``--chunks``-word reply."""
    few = {
        key: {"ttfb": Samples(), "ttfb_all": [], "cpu_s": 0.0, "up_s": 0.0, "n": 0, "events": 0.0} for key in systems
    }
    many = {key: {"cpu_s": 0.0, "up_s": 0.0, "n": 0, "events": 0.0, "total_ms": []} for key in systems}
    for r, order in enumerate(round_orders(list(systems), args.stream_rounds)):
        for key in order:
            with measured(systems[key], fake, placement):
                fake.reset()
                batch = asyncio.run(stream_batch(systems[key], fake, args.streams, 10 if r == 0 else 2))
            entry = few[key]
            entry["ttfb"].add(statistics.median(batch["ttfb_ms"]))
            entry["ttfb_all"] += batch["ttfb_ms"]
            entry["cpu_s"] += batch["cpu_s"]
            entry["up_s"] += batch["upstream_cpu_s"]
            entry["n"] += batch["streams"]
            entry["events"] = batch["events"]
        for key in order[::-1]:
            with measured(systems[key], fake, placement):
                script_fake(fake, args.chunks, args.long_streams + 1)
                try:
                    batch = asyncio.run(stream_batch(systems[key], fake, args.long_streams, 1))
                finally:
                    fake.reset()
            entry = many[key]
            entry["cpu_s"] += batch["cpu_s"]
            entry["up_s"] += batch["upstream_cpu_s"]
            entry["n"] += batch["streams"]
            entry["events"] = batch["events"]
            entry["total_ms"] += batch["total_ms"]
    print(f"  streams: {args.stream_rounds} rounds done", flush=True)
    out: dict[str, Any] = {}
    for key in systems:
        f, m = few[key], many[key]
        cpu_few = f["cpu_s"] / f["n"] * 1e6
        cpu_many = m["cpu_s"] / m["n"] * 1e6
        out[key] = {
            "ttfb_ms_round_p50": f["ttfb"].as_dict("ms"),
            "ttfb_ms_p50": round(statistics.median(f["ttfb_all"]), 3),
            "_ttfb": f["ttfb"],
            "echo_events": f["events"],
            "echo_server_cpu_us_per_stream": round(cpu_few, 1),
            "echo_upstream_cpu_us_per_stream": round(f["up_s"] / f["n"] * 1e6, 1),
            "long_events": m["events"],
            "long_server_cpu_us_per_stream": round(cpu_many, 1),
            "long_upstream_cpu_us_per_stream": round(m["up_s"] / m["n"] * 1e6, 1),
            "long_stream_ms_p50": round(statistics.median(m["total_ms"]), 2),
            "server_cpu_us_per_extra_chunk": round((cpu_many - cpu_few) / max(m["events"] - f["events"], 1), 2),
        }
    return out


# --------------------------------------------------------------------------------------------------
# Cold start, the client alone, py-spy
# --------------------------------------------------------------------------------------------------


def cold_start(ledger: str, upstream: str, folder: Path, placement: Placement) -> dict[str, float]:
    """Seconds from spawn to the first 200 on /health and to the first 200 chat; RSS after that chat."""
    port = free_port()
    sub = Path(tempfile.mkdtemp(prefix=f"cold-{ledger}-", dir=folder))
    argv = [sys.executable, "-m", "openrouter_devtools.cli", "serve", "--port", str(port)]
    headers = {"Authorization": f"Bearer {token()}", "Content-Type": "application/json"}
    env = serve_env(upstream, ledger, sub)
    started = time.perf_counter()
    proc = spawn(argv, env, sub / "stderr.log", placement.server)
    try:
        out: dict[str, float] = {}
        with httpx.Client(timeout=5) as client:
            for _ in range(6000):  # 30 s at most
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        out["health_s"] = time.perf_counter() - started
                        break
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {(sub / 'stderr.log').read_text(errors='replace')[-1000:]}")
                time.sleep(0.005)
            else:
                raise RuntimeError("serve did not answer /health within 30 s")
            answer = client.post(f"http://127.0.0.1:{port}/chat", content=BODY, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"first chat answered {answer.status_code}: {answer.text[:300]}")
            out["chat_s"] = time.perf_counter() - started
            out["rss_after_first_chat_mb"] = rss_mb(proc.pid)
        return out
    finally:
        stop_process(proc)


async def client_alone(fake: FakeServerProcess, quick: bool) -> dict[str, Any]:
    """bench/client_overhead.py's sequential phase on the httpx-aiohttp transport (OpenRouterService's default)."""
    import client_overhead

    ns = argparse.Namespace(
        transport="aiohttp",
        rounds=2 if quick else 8,
        calls=10 if quick else 60,
        warmup=5 if quick else 100,
        quick=quick,
        concurrency=16,
        conc_calls=16,
        stream_calls=3,
    )
    values, cpu = await client_overhead.phase(ns, fake, "sequential")
    ours, bare = values[client_overhead.OURS], values[client_overhead.BARE]
    return {
        "settings": vars(ns),
        "us_per_call": {name: s.as_dict("us/call") for name, s in values.items()},
        "client_cpu_us_per_call": {name: s.as_dict("us/call") for name, s in cpu.items()},
        "ours_over_bare_paired": round(ours.paired_ratio(bare), 3),
        "ours_minus_bare_us_paired": round(
            statistics.median(a - b for a, b in zip(ours.values, bare.values, strict=True)), 1
        ),
    }


def find_py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def profile(system: System, load: LoadGenerator, seconds: int, out: Path) -> dict[str, Any]:
    """py-spy (100 Hz, by function, idle samples dropped) of the server under c=16 wrk load; the raw
    (collapsed-stack) output is kept at ``out`` (flamegraph.pl or speedscope read it)."""
    py_spy = find_py_spy()
    if py_spy is None:
        return {"error": "py-spy not found (.venv/bin/pip install py-spy)"}
    if load.wrk is None:
        return {"error": "profiling needs wrk"}
    out.parent.mkdir(parents=True, exist_ok=True)
    script = load.scripts.get(system.key) or lua_script(load.folder, system.key, BODY, system.auth)
    argv = [load.wrk, "-t1", "-c16", f"-d{seconds + 3}s", "-s", str(script), system.url]
    wrk = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        spy = [py_spy, "record", "-d", str(seconds), "-r", "100", "--function", "--full-filenames", "--format", "raw"]
        done = subprocess.run(
            [*spy, "-o", str(out), "-p", str(system.pid)],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        stop_process(wrk)
    if done.returncode != 0 or not out.is_file():
        return {"error": f"py-spy failed ({done.returncode}): {(done.stderr or done.stdout)[-500:]}"}
    own, total, samples = Counter[str](), Counter[str](), 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short_frame(frame) for frame in stack.split(";")]
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return {"error": "py-spy recorded no samples"}
    by_package = Counter[str]()
    for frame, n in own.items():
        by_package[frame_package(frame)] += n
    # frames on (nearly) every stack are the trunk: runpy, the CLI, uvicorn's Server.run, the loop
    trunk = {f for f, n in total.items() if n >= 0.98 * samples}

    def share(items: list[tuple[str, int]]) -> list[tuple[str, float]]:
        return [(f, round(n / samples * 100, 1)) for f, n in items]

    ranked = [(f, n) for f, n in total.most_common() if f not in trunk]
    return {
        "samples": samples,
        "seconds": seconds,
        "busy_share": round(samples / (seconds * 100), 2),
        "own": share(own.most_common(PROFILE_KEEP)),
        "total": share(ranked[:PROFILE_KEEP]),
        "total_our_code": share([(f, n) for f, n in ranked if frame_package(f) in OUR_PACKAGES][:PROFILE_KEEP]),
        "own_by_package": share(by_package.most_common(PROFILE_KEEP)),
        "raw": str(out),
        "trunk": sorted(trunk),
    }


PROFILE_KEEP = 50  # entries per list kept in the JSON (--profile-top are printed)
OUR_PACKAGES = ("openrouter_functions", "openrouter_service", "openrouter_devtools", "functions")
_FRAME = re.compile(r"(?P<func>.*) \((?P<path>.*?)(?::(?P<line>\d+))?\)")


def short_frame(frame: str) -> str:
    """``func (path:line)`` with the path relative to the repository, site-packages or the stdlib."""
    match = _FRAME.fullmatch(frame)
    if not match:
        return frame
    path = match["path"]
    root = str(ROOT) + "/"
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    elif path.startswith(root):
        path = path[len(root) :].removeprefix("shared/")
    elif stdlib := re.search(r"/python3\.\d+/(.*)", path):
        path = stdlib.group(1)
    return f"{match['func']} ({path}:{match['line']})" if match["line"] else f"{match['func']} ({path})"


def frame_package(frame: str) -> str:
    """The top-level package (or module) a shortened frame belongs to."""
    match = _FRAME.fullmatch(frame)
    if not match:
        return "?"
    path = match["path"]
    if path.startswith("<"):
        return path
    return path.split("/", 1)[0].removesuffix(".py")


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def summarise(
    args: argparse.Namespace, systems: dict[str, System], points: dict[tuple[str, int], Point]
) -> dict[str, Any]:
    hi, lo = max(args.levels), min(args.levels)
    out: dict[str, Any] = {}
    for key in systems:
        entry: dict[str, Any] = {"label": LABELS[key]}
        for level in args.levels:
            p = points[key, level]
            entry[f"c{level}"] = {
                "rps": p.rps.as_dict("req/s"),
                "p50_ms": p.p50.as_dict("ms"),
                "p99_ms": p.p99.as_dict("ms"),
                "p99_over_p50": round(p.p99.paired_ratio(p.p50), 2),
                "server_cpu_us_per_req": p.cpu.as_dict("us/req"),
                "upstream_cpu_us_per_req": p.upstream_cpu.as_dict("us/req"),
                "db_cpu_us_per_req": p.db_cpu.as_dict("us/req") if systems[key].db_pid else None,
                "runs": p.runs,
            }
        if DIRECT in systems and key != DIRECT:
            entry[f"added_p50_ms_c{lo}"] = round(
                statistics.median(
                    a - b for a, b in zip(points[key, lo].p50.values, points[DIRECT, lo].p50.values, strict=True)
                ),
                3,
            )
        if HTTPX in systems:
            entry[f"c{hi}_rps_over_httpx_floor"] = round(points[key, hi].rps.paired_ratio(points[HTTPX, hi].rps), 3)
            entry[f"c{hi}_cpu_over_httpx_floor"] = round(points[key, hi].cpu.paired_ratio(points[HTTPX, hi].cpu), 3)
        if AIOHTTP in systems:
            entry[f"c{hi}_rps_over_aiohttp_passthrough"] = round(
                points[key, hi].rps.paired_ratio(points[AIOHTTP, hi].rps), 3
            )
        out[key] = entry
    return out


def report(
    args: argparse.Namespace,
    systems: dict[str, System],
    points: dict[tuple[str, int], Point],
    results: dict[str, Any],
) -> None:
    hi, lo = max(args.levels), min(args.levels)
    top = args.profile_top
    table = results["systems"]
    rss = results["rss_mb"]
    print()
    print(
        f"load: {results['load_generator']}, 1 thread, {args.rounds} round(s) x {args.duration} s per point; "
        f"median of rounds; server CPU = the gateway process only (for direct: the fake)"
    )
    rows = []
    for key in systems:
        h, low = points[key, hi], points[key, lo]
        rows.append(
            [
                LABELS[key],
                f"{h.rps.median:,.0f}",
                fmt(h.p50.median, ".2f"),
                fmt(h.p99.median, ".2f"),
                fmt(h.cpu.median),
                fmt(h.upstream_cpu.median),
                fmt(h.db_cpu.median) if systems[key].db_pid else "-",
                f"{low.rps.median:,.0f}",
                fmt(low.p50.median, ".2f"),
                fmt(table[key].get(f"added_p50_ms_c{lo}"), "+.2f"),
                fmt(rss[key]["idle"], ".0f"),
                fmt(rss[key]["after_load"], ".0f"),
            ]
        )
    print_table(
        [
            "system",
            f"c={hi} req/s",
            "p50 ms",
            "p99 ms",
            "server CPU us/req",
            "fake us/req",
            "db us/req",
            f"c={lo} req/s",
            "p50 ms",
            "added p50 ms",
            "RSS idle MB",
            "RSS loaded MB",
        ],
        rows,
    )

    streams = results["streams"]
    print()
    print(
        f"streams (c=1, raw asyncio client): {args.stream_rounds} rounds x {args.streams} echo streams "
        f"(~{streams[next(iter(systems))]['echo_events']:.0f} data events), "
        f"{args.stream_rounds} x {args.long_streams} streams of {args.chunks} words"
    )
    rows = []
    for key in systems:
        s = streams[key]
        added = s.get("ttfb_added_ms")
        rows.append(
            [
                LABELS[key],
                fmt(s["ttfb_ms_p50"], ".2f"),
                fmt(added, "+.2f"),
                fmt(s["echo_server_cpu_us_per_stream"]),
                fmt(s["long_server_cpu_us_per_stream"]),
                fmt(s["long_upstream_cpu_us_per_stream"]),
                fmt(s["server_cpu_us_per_extra_chunk"], ".1f"),
                fmt(s.get("long_total_cpu_over_direct"), ".2f"),
            ]
        )
    print_table(
        [
            "system",
            "TTFB p50 ms",
            "added ms",
            "CPU us/echo stream",
            f"CPU us/{args.chunks}-word stream",
            "fake us/long stream",
            "server CPU us/chunk",
            "long: total CPU / direct",
        ],
        rows,
    )

    print(
        "  (the fake sends a stream's events back to back, so they reach a passthrough in a few TCP reads that it\n"
        "  forwards whole; ours also forwards each read in one write, but looks at every event for usage and errors)"
    )
    print()
    print("ratios (median of per-round ratios)")
    for key in (OFF, SQLITE, POSTGRES):
        if key not in systems:
            continue
        t = table[key]
        parts = []
        if HTTPX in systems:
            parts.append(f"c={hi} throughput / httpx floor {t[f'c{hi}_rps_over_httpx_floor']:.2f}")
            parts.append(f"CPU per request / httpx floor {t[f'c{hi}_cpu_over_httpx_floor']:.2f}")
        if AIOHTTP in systems:
            parts.append(f"throughput / aiohttp passthrough {t[f'c{hi}_rps_over_aiohttp_passthrough']:.2f}")
        parts.append(f"c={hi} p99/p50 {t[f'c{hi}']['p99_over_p50']:.2f}")
        if f"added_p50_ms_c{lo}" in t:
            parts.append(f"added p50 at c={lo} {t[f'added_p50_ms_c{lo}']:+.2f} ms")
        if streams[key].get("ttfb_added_ms") is not None:
            parts.append(f"stream TTFB added {streams[key]['ttfb_added_ms']:+.2f} ms")
        print(f"  {LABELS[key]}:")
        for part in parts:
            print(f"      {part}")
    if HTTPX in systems and AIOHTTP in systems:
        print(
            f"  httpx floor / aiohttp passthrough, c={hi} throughput: "
            f"{table[HTTPX][f'c{hi}_rps_over_aiohttp_passthrough']:.2f}"
        )
    # The tail target (p99 <= 3x p50) read against what the floors themselves show on this machine.
    floors = [f"{LABELS[key]} {table[key][f'c{hi}']['p99_over_p50']:.2f}" for key in (AIOHTTP, HTTPX) if key in systems]
    if floors:
        print(f"  c={hi} p99/p50 of the floors: {', '.join(floors)}")
    for ledger, data in results["cold_start"].items():
        print(
            f"  cold start, serve ledger={ledger}: first /health {data['health_s_median'] * 1e3:.0f} ms, "
            f"first chat {data['chat_s_median'] * 1e3:.0f} ms (median of {len(data['runs'])})"
        )
    for key in OURS:
        if key in rss:
            print(
                f"  idle RSS, {LABELS[key]}: {rss[key]['idle']:.0f} MB "
                f"(after c={hi} load {rss[key]['after_load']:.0f} MB)"
            )
    client = results.get("client_alone")
    if client:
        us = client["us_per_call"]
        print(
            f"  client alone, sequential: OpenRouterService.chat_completion {us['ours']['median']:.0f} us/call, "
            f"bare httpx(+httpx-aiohttp) POST {us['bare httpx']['median']:.0f} us/call: ratio "
            f"{client['ours_over_bare_paired']:.2f}, +{client['ours_minus_bare_us_paired']:.0f} us"
        )
    for key, prof in results.get("profiles", {}).items():
        print()
        if "error" in prof:
            print(f"py-spy, {LABELS[key]}: {prof['error']}")
            continue
        print(f"py-spy, {LABELS[key]} under c=16 load: {prof['samples']} samples (busy {prof['busy_share']:.0%})")
        print("  own time:")
        for frame, pct in prof["own"][:top]:
            print(f"    {pct:5.1f}%  {frame}")
        print("  total time (trunk frames on >= 98% of stacks left out):")
        for frame, pct in prof["total"][:top]:
            print(f"    {pct:5.1f}%  {frame}")
        print("  total time, our code only:")
        for frame, pct in prof["total_our_code"][:top]:
            print(f"    {pct:5.1f}%  {frame}")
        print("  own time by package:")
        print("    " + ", ".join(f"{package} {pct:.1f}%" for package, pct in prof["own_by_package"][:top]))


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16], help="connections (wrk -c)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured point")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each point of round 1")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of load points")
    parser.add_argument("--streams", type=int, default=20, help="echo streams per system per round (TTFB)")
    parser.add_argument("--stream-rounds", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=1000, help="words (= data chunks) of the long streams")
    parser.add_argument("--long-streams", type=int, default=4, help="long streams per system per round")
    parser.add_argument("--starts", type=int, default=5, help="cold starts per ledger")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="serve's LOG_LEVEL: INFO (as deployed: one JSON line per request) or WARNING (no line for a 200)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL row")
    parser.add_argument("--no-client", action="store_true", help="skip the client-alone comparison")
    parser.add_argument("--profile", action="store_true", help="py-spy each serve under load")
    parser.add_argument("--profile-seconds", type=int, default=None, help="default 5 (--quick: 2)")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install wrk when it is missing")
    parser.add_argument("--no-pin", action="store_true", help="do not give the server under test a core of its own")
    parser.add_argument(
        "--db-core",
        choices=("rest", "server"),
        default="rest",
        help="where PostgreSQL runs while the PostgreSQL row is measured (see the module's docstring)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s points, one round, few streams")
    parser.add_argument("--output", default="gateway_compare", help="results file name under bench/results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.rounds = 1, 1, 1
        args.streams, args.stream_rounds, args.chunks, args.long_streams, args.starts = 5, 1, 200, 2, 2
        args.profile_seconds = args.profile_seconds or 2
    args.profile_seconds = args.profile_seconds or 5
    for name in ("duration", "rounds", "streams", "stream_rounds", "chunks", "long_streams", "starts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or any(level < 1 for level in args.levels):
        parser.error("--warmup must be >= 0 and --levels >= 1")
    args.levels = sorted(set(args.levels))
    return args


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    global DB_ON_SERVER_CORE, SERVE_LOG_LEVEL
    DB_ON_SERVER_CORE = args.db_core == "server"
    SERVE_LOG_LEVEL = args.log_level.upper()
    name = f"{args.output}.quick" if args.quick else args.output
    # SIGTERM unwinds like Ctrl+C does: every server, wrk and the PostgreSQL cluster are stopped on the way out
    signal.signal(signal.SIGTERM, _terminated)
    started = time.perf_counter()
    placement = Placement()
    client_cpu, server_cpu = pin_cpus(not args.no_pin)
    if server_cpu is not None:
        placement = Placement(server={server_cpu}, rest=set(os.sched_getaffinity(0)))
        print(f"server under test on CPU {server_cpu}; wrk, the fake, this script and PostgreSQL on CPU {client_cpu}")
    print(f"serve logs at LOG_LEVEL={SERVE_LOG_LEVEL} (--log-level)", flush=True)

    wrk = None if args.load_generator == "python" else ensure_wrk(not args.no_install)
    if wrk is None and args.load_generator == "wrk":
        raise SystemExit("wrk is not available")
    if wrk is None:
        print("NOTE: wrk unavailable: falling back to an asyncio + httpx-aiohttp load loop in this process", flush=True)

    results: dict[str, Any] = {"benchmark": "gateway_compare", "db_core": args.db_core, "log_level": SERVE_LOG_LEVEL}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-compare-")))
        fake = stack.enter_context(FakeServerProcess())
        print(f"fake OpenRouter (pid {fake.pid}) at {fake.url}", flush=True)
        load = LoadGenerator(wrk, folder, placement)
        results["load_generator"] = load.name

        with contextlib.ExitStack() as servers:
            systems: dict[str, System] = {}

            def keep(system: System) -> None:
                if system.proc is not None:
                    servers.callback(stop_process, system.proc)
                systems[system.key] = system

            keep(start_passthrough(AIOHTTP, fake.url, folder, placement))
            keep(start_passthrough(HTTPX, fake.url, folder, placement))
            keep(start_serve(SQLITE, "sqlite", fake.url, folder, placement))
            keep(start_serve(OFF, "off", fake.url, folder, placement))
            if args.no_postgres:
                results["postgres"] = "skipped (--no-postgres)"
            else:
                dsn, db_pid, message = start_postgres(servers)
                results["postgres"] = message
                if dsn is None:
                    print(f"SKIPPING the PostgreSQL row: {message}", flush=True)
                else:
                    try:
                        system = start_serve(POSTGRES, "postgres", fake.url, folder, placement, dsn)
                    except RuntimeError as exc:
                        results["postgres"] = f"serve with the PostgreSQL ledger failed: {exc}"
                        print(f"SKIPPING the PostgreSQL row: {results['postgres']}", flush=True)
                    else:
                        system.db_pid = db_pid
                        keep(system)
                        print(f"{message}; serve (pid {system.pid}) uses it", flush=True)
            systems[DIRECT] = System(DIRECT, f"{fake.url}/chat/completions", API_KEY, fake.pid)
            systems = {key: systems[key] for key in (AIOHTTP, HTTPX, SQLITE, OFF, POSTGRES, DIRECT) if key in systems}
            time.sleep(0.5)
            rss = {key: {"idle": rss_mb(s.pid)} for key, s in systems.items()}

            print(f"load phase ({load.name}):", flush=True)
            points = load_phase(args, systems, fake, load, placement)
            for key, s in systems.items():
                rss[key]["after_load"] = rss_mb(s.pid)
                rss[key]["threads"] = status_field(s.pid, "Threads") or 0
            results["rss_mb"] = {k: {n: round(v, 1) for n, v in d.items()} for k, d in rss.items()}
            results["systems"] = summarise(args, systems, points)

            print("streams:", flush=True)
            streams = stream_phase(args, systems, fake, placement)
            ttfb: dict[str, Samples] = {key: s.pop("_ttfb") for key, s in streams.items()}
            if DIRECT in streams:
                direct_long = streams[DIRECT]["long_server_cpu_us_per_stream"]  # the fake is the server there
                for key, s in streams.items():
                    if key == DIRECT:
                        continue
                    s["ttfb_added_ms"] = round(
                        statistics.median(a - b for a, b in zip(ttfb[key].values, ttfb[DIRECT].values, strict=True)),
                        3,
                    )
                    total = s["long_server_cpu_us_per_stream"] + s["long_upstream_cpu_us_per_stream"]
                    s["long_total_cpu_over_direct"] = round(total / direct_long, 2) if direct_long else None
            results["streams"] = streams

            if args.profile:
                results["profiles"] = {}
                for key in (k for k in (OFF, SQLITE, POSTGRES) if k in systems):
                    print(f"py-spy: {LABELS[key]} ...", flush=True)
                    results["profiles"][key] = profile(
                        systems[key], load, args.profile_seconds, RESULTS_DIR / f"{name}.py-spy.{key}.txt"
                    )

        print("cold starts:", flush=True)
        cold: dict[str, list[dict[str, float]]] = {OFF: [], SQLITE: []}
        for i in range(args.starts):
            for ledger in (OFF, SQLITE) if i % 2 == 0 else (SQLITE, OFF):
                cold[ledger].append(cold_start(ledger, fake.url, folder, placement))
        results["cold_start"] = {
            ledger: {
                "health_s_median": round(statistics.median(r["health_s"] for r in runs), 3),
                "chat_s_median": round(statistics.median(r["chat_s"] for r in runs), 3),
                "runs": [{k: round(v, 3) for k, v in r.items()} for r in runs],
            }
            for ledger, runs in cold.items()
        }

        if not args.no_client:
            print("client alone (bench/client_overhead.py, sequential phase):", flush=True)
            results["client_alone"] = asyncio.run(client_alone(fake, args.quick))

    report(args, systems, points, results)
    settings = {k: v for k, v in vars(args).items() if k != "output"}
    results = {
        "benchmark": results.pop("benchmark"),
        "settings": settings,
        "environment": environment(
            client_cpu=client_cpu,
            server_cpu=server_cpu,
            wrk=subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
            if wrk
            else None,
            seconds=round(time.perf_counter() - started, 1),
        ),
        **results,
    }
    path = write_results(name, results)
    print(f"\nresults written to {path} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

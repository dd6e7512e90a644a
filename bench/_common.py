"""Shared plumbing for the hand-run benchmarks in this folder (not a test module).

* :class:`FakeServerProcess` runs the fake OpenRouter in a *separate process*, so its work neither
  shares the client's event loop nor its GIL.
* :func:`pin_cpus` puts the client and the server on different cores when there are at least two.
* :class:`RawHttpClient` is the floor: pre-built HTTP/1.1 bytes over one asyncio stream per in-flight
  request; whatever a real client costs above it is client overhead.
* Timing helpers (sequential and semaphore-bounded concurrent), statistics and the JSON writer.

Everything talks to 127.0.0.1 only, and every loop is bounded by an explicit call count.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from openrouter_service.transport import pool_limits

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
API_KEY = "sk-or-v1-bench-0000000000000000"
MODEL = "openai/gpt-4o"
USER_MESSAGE = "Say hello to the benchmark in a few short words."
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": USER_MESSAGE}]
PAYLOAD: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
STREAM_PAYLOAD: dict[str, Any] = {**PAYLOAD, "stream": True}
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json", "Accept": "application/json"}

# The pool OpenRouterService builds for itself (transport.pool_limits: OPENROUTER_MAX_CONNECTIONS); every
# pooled client in the benchmarks gets the same limits so that only the transport differs.
SERVICE_LIMITS = pool_limits()
SERVICE_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

AsyncCall = Callable[[], Awaitable[Any]]


# --------------------------------------------------------------------------------------------------
# The fake server, in its own process
# --------------------------------------------------------------------------------------------------


class FakeServerProcess:
    """``with FakeServerProcess() as server:`` runs ``openrouter_devtools.cli fake-upstream --port 0``.

    The URL is read from the line the server prints, then ``GET /api/v1/models`` is polled until it
    answers 200.  ``cpu`` pins the server process to that core (Linux only; ignored elsewhere).
    """

    def __init__(self, *, cpu: int | None = None, startup_timeout: float = 15.0) -> None:
        self.cpu = cpu
        self.startup_timeout = startup_timeout
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._control: httpx.Client | None = None

    def __enter__(self) -> FakeServerProcess:
        cmd = [sys.executable, "-m", "openrouter_devtools.cli", "fake-upstream", "--host", "127.0.0.1", "--port", "0"]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            if self.cpu is not None and hasattr(os, "sched_setaffinity"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(self._proc.pid, {self.cpu})
            self.url = self._read_url()
            self._control = httpx.Client(base_url=self.url, timeout=5.0)
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def _read_url(self) -> str:
        assert self._proc is not None
        assert self._proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"fake server exited with code {self._proc.returncode}")
            ready, _, _ = select.select([self._proc.stdout], [], [], 0.1)
            if ready:
                line = self._proc.stdout.readline()
                if "listening on " in line:
                    return line.rsplit("listening on ", 1)[1].strip()
        raise RuntimeError("fake server did not print its URL in time")

    def _wait_ready(self) -> None:
        assert self._control is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self._control.get("/models").status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("fake server did not answer GET /api/v1/models in time")

    def reset(self) -> None:
        """Drop the requests the fake recorded (it keeps every one; call between rounds)."""
        assert self._control is not None
        self._control.post("/_fake/reset").raise_for_status()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _stop(self) -> None:
        if self._control is not None:
            self._control.close()
            self._control = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it is still running after 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def pin_cpus(enabled: bool = True) -> tuple[int | None, int | None]:
    """Pin this process to one core and return ``(client_cpu, server_cpu)``; ``(None, None)`` if not pinned."""
    if not enabled or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    client_cpu, server_cpu = cpus[0], cpus[1]
    os.sched_setaffinity(0, {client_cpu})
    return client_cpu, server_cpu


# --------------------------------------------------------------------------------------------------
# The floor: raw HTTP/1.1 over asyncio streams
# --------------------------------------------------------------------------------------------------


class RawHttpClient:
    """Pre-serialised ``POST /chat/completions`` over keep-alive asyncio streams; parses the JSON answer.

    A tiny pool: a connection is taken per call and returned after the body is read, so concurrent
    calls open at most as many connections as are in flight.  Only handles the fake's
    ``Content-Length`` answers (the non-streaming path).
    """

    def __init__(self, url: str, payload: dict[str, Any]) -> None:
        parsed = httpx.URL(url)
        self.host = parsed.host
        self.port = parsed.port or 80
        body = json.dumps(payload, separators=(",", ":")).encode()
        path = parsed.raw_path.decode().rstrip("/") + "/chat/completions"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.request = head.encode() + body
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self) -> dict[str, Any]:
        conn = self._idle.pop() if self._idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data: dict[str, Any] = json.loads(await reader.readexactly(length))
        self._idle.append(conn)
        return data

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


async def time_sequential(call: AsyncCall, n: int) -> tuple[float, float]:
    """``(wall seconds, client CPU seconds)`` for ``n`` calls, one in flight at a time."""
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return time.perf_counter() - start, time.process_time() - cpu


async def time_concurrent(call: AsyncCall, n: int, concurrency: int) -> tuple[float, float]:
    """``(wall, CPU)`` seconds for ``n`` calls, at most ``concurrency`` in flight (gather over a semaphore)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await call()

    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - start, time.process_time() - cpu


@dataclass
class Samples:
    """Per-round measurements of one client in one scenario."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds, a rough noise indicator."""
        med = self.median
        return (max(self.values) - min(self.values)) / med if med else 0.0

    def paired_ratio(self, other: Samples) -> float:
        """Median over rounds of ``self[i] / other[i]``: robust to the machine speeding up or slowing down."""
        return statistics.median(a / b for a, b in zip(self.values, other.values, strict=True) if b)

    def as_dict(self, unit: str) -> dict[str, Any]:
        return {
            "unit": unit,
            "median": round(self.median, 2),
            "min": round(min(self.values), 2),
            "max": round(max(self.values), 2),
            "rounds": [round(v, 2) for v in self.values],
        }


def round_orders(names: list[str], rounds: int) -> Iterator[list[str]]:
    """Client order per round: forwards, backwards, rotated, ... so no client always runs first."""
    for r in range(rounds):
        shift = (r // 2) % len(names)
        order = names[shift:] + names[:shift]
        yield order if r % 2 == 0 else order[::-1]


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def environment(**extra: Any) -> dict[str, Any]:
    """Machine and package versions, stored next to the numbers."""
    versions = {}
    for name in ("httpx", "httpcore", "httpx-aiohttp", "aiohttp", "openai", "httpx2", "h11", "anyio"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))

"""1,000 streams at once through ``openrouter-functions serve``: time to first byte, outcome, memory.

The audit found 1,000 concurrent streams queueing silently behind 200 upstream connections (first byte
after up to 41 s). This runs the same load against a ``serve`` process (embedded SQLite ledger, the fake
OpenRouter in its own process streaming each reply over ~3 s) in three set-ups:

* ``default``: ``OPENROUTER_MAX_CONNECTIONS`` and ``MAX_IN_FLIGHT`` at their defaults (1000): all served.
* ``old pool (200), no shedding``: 200 connections and ``MAX_IN_FLIGHT=1000`` — the queueing the audit saw.
* ``200 connections, shedding``: ``MAX_IN_FLIGHT=200`` — the rest answered 503 ``overloaded`` at once.

Reported per set-up: answers by status, time to first byte (p50/p99/max) of the streams served and of
the refusals, the slowest stream, and the server's peak RSS (``VmHWM``). The client is raw asyncio
sockets (one per stream, so its own cost stays small). Only 127.0.0.1; every loop is bounded.

    .venv/bin/python bench/concurrent_streams.py [--streams 1000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from _common import API_KEY, FakeServerProcess, environment, free_port, print_table, stop_process, write_results

JWT_SECRET = "bench-secret-with-at-least-thirty-two-characters"
WORDS = 14  # chunks per stream
CHUNK_DELAY = 0.2  # so each stream lasts ~3 s and all of them overlap
READ_LIMIT = 1 << 20  # bytes read per stream at most


def _token() -> str:
    """A token of a user of its own (per-user rate limits and quotas are on by default)."""
    from openrouter_devtools.serve import mint_dev_token

    return mint_dev_token(JWT_SECRET, user_id=str(uuid.uuid4()))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Serve:
    """``openrouter-functions serve`` on a free port, with ``env`` on top of a clean environment."""

    def __init__(self, upstream_url: str, ledger_dir: Path, **env: str) -> None:
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "SUPABASE_", "LEDGER_"))}
        base.update(DEFAULT_RPM="unlimited", DEFAULT_DAILY_COST_USD="unlimited")  # one user, many calls: no limits
        base.update(
            OPENROUTER_API_KEY=API_KEY,
            OPENROUTER_BASE_URL=upstream_url,
            SUPABASE_JWT_SECRET=JWT_SECRET,
            LEDGER_SQLITE_PATH=str(ledger_dir / "ledger.sqlite3"),
            LOG_LEVEL="ERROR",
            **env,
        )
        argv = [sys.executable, "-m", "openrouter_devtools.cli", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(argv, env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        stop_process(self.proc)
        raise RuntimeError("serve did not come up")

    def stop(self) -> None:
        stop_process(self.proc)


async def _stream(port: int, request: bytes, started: float, timeout: float) -> dict[str, Any]:
    """One streamed chat call over a raw socket: status, first-byte time, end time."""
    result: dict[str, Any] = {"status": None, "first_byte": None, "done": None, "type": None}
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            result["status"] = int(head.split(b" ", 2)[1])
            data = b""
            while len(data) < READ_LIMIT:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if result["first_byte"] is None:
                    result["first_byte"] = time.monotonic() - started
                data += chunk
                if b"data: [DONE]" in data:
                    break
            result["done"] = time.monotonic() - started
            if result["status"] != 200 and b'"type":"' in data:
                result["type"] = data.split(b'"type":"', 1)[1].split(b'"', 1)[0].decode()
            writer.close()
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        result["type"] = exc.__class__.__name__
    return result


async def _load(port: int, streams: int, timeout: float, path: str = "/chat") -> list[dict[str, Any]]:
    body = json.dumps({"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {_token()}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()
        for _ in range(streams)
    ]
    started = time.monotonic()
    return await asyncio.gather(*(_stream(port, request, started, timeout) for request in requests))


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "max": round(ordered[-1], 3),
    }


def _script(upstream: FakeServerProcess, streams: int) -> None:
    httpx.post(
        f"{upstream.url}/_fake/script",
        json=[{"fault": "reply", "content": " ".join(["word"] * WORDS), "chunk_delay": CHUNK_DELAY, "repeat": streams}],
    ).raise_for_status()


def _unscript(upstream: FakeServerProcess) -> None:
    upstream.reset()
    httpx.post(f"{upstream.url}/_fake/script", json=[]).raise_for_status()


def run_direct(upstream: FakeServerProcess, streams: int, timeout: float) -> dict[str, Any]:
    """The same burst straight at the fake: upstream's own first byte under this load, on this machine (the
    yardstick of "every stream's first byte within 1 s of upstream's")."""
    _script(upstream, streams)
    try:
        port = httpx.URL(upstream.url).port or 80
        results = asyncio.run(_load(port, streams, timeout, path=httpx.URL(upstream.url).path + "/chat/completions"))
    finally:
        _unscript(upstream)
    served = [r for r in results if r["status"] == 200]
    return {
        "setup": "direct (the fake alone)",
        "streams": streams,
        "answers": {"200": len(served)},
        "first_byte_served_s": _quantiles([r["first_byte"] for r in served if r["first_byte"] is not None]),
        "first_byte_refused_s": _quantiles([]),
        "slowest_stream_s": round(max((r["done"] or 0.0) for r in results), 3),
        "serve_peak_rss_mb": float("nan"),
    }


def run_setup(name: str, upstream: FakeServerProcess, streams: int, timeout: float, **env: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = Serve(upstream.url, Path(tmp), **env)
        try:
            # One streamed call first: what the first call of a process loads (the token library, the guard's
            # patterns) is a cold start's cost, measured by cold_start.py, not the burst's.
            asyncio.run(_load(server.port, 1, timeout))
            _script(upstream, streams)
            cpu0 = _cpu_seconds(server.proc.pid)
            results = asyncio.run(_load(server.port, streams, timeout))
            cpu = _cpu_seconds(server.proc.pid) - cpu0
            rss = _rss_peak_mb(server.proc.pid)
        finally:
            server.stop()
    _unscript(upstream)
    by_status: dict[str, int] = {}
    for r in results:
        key = str(r["status"]) + (f" {r['type']}" if r["type"] else "")
        by_status[key] = by_status.get(key, 0) + 1
    served = [r for r in results if r["status"] == 200]
    refused = [r for r in results if r["status"] == 503]
    return {
        "setup": name,
        "env": env,
        "streams": streams,
        "answers": by_status,
        "first_byte_served_s": _quantiles([r["first_byte"] for r in served if r["first_byte"] is not None]),
        "first_byte_refused_s": _quantiles([r["first_byte"] for r in refused if r["first_byte"] is not None]),
        "slowest_stream_s": round(max((r["done"] or 0.0) for r in results), 3),
        "serve_peak_rss_mb": round(rss, 1),
        "serve_cpu_ms_per_stream": round(cpu / streams * 1e3, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one stream may take at most")
    parser.add_argument("--quick", action="store_true", help="100 streams: a smoke run")
    args = parser.parse_args()
    streams = 100 if args.quick else args.streams
    setups = [
        ("default", {}),
        ("old pool (200), no shedding", {"OPENROUTER_MAX_CONNECTIONS": "200", "MAX_IN_FLIGHT": str(streams)}),
        ("200 connections, shedding", {"OPENROUTER_MAX_CONNECTIONS": "200", "MAX_IN_FLIGHT": "200"}),
    ]
    rows = []
    with FakeServerProcess() as upstream:
        direct = run_direct(upstream, streams, args.timeout)
        print("direct: done", flush=True)
        for name, env in setups:
            rows.append(run_setup(name, upstream, streams, args.timeout, **env))
            print(f"{name}: done", flush=True)
        # the fake alone once more, after: the machine's state moves between set-ups
        after = run_direct(upstream, streams, args.timeout)
        print("direct: done", flush=True)
    rows = [direct, *rows, after]
    table = []
    for r in rows:
        served, refused = r["first_byte_served_s"], r["first_byte_refused_s"]
        table.append(
            [
                r["setup"],
                ", ".join(f"{k}: {v}" for k, v in sorted(r["answers"].items())),
                f"{served['p50']} / {served['p99']} / {served['max']}",
                f"{refused['p50']} / {refused['p99']}",
                str(r["slowest_stream_s"]),
                str(r["serve_peak_rss_mb"]),
                str(r.get("serve_cpu_ms_per_stream", "-")),
            ]
        )
    print_table(
        [
            "set-up",
            "answers",
            "first byte served p50/p99/max s",
            "refused p50/p99 s",
            "slowest s",
            "peak RSS MB",
            "serve CPU ms/stream",
        ],
        table,
    )
    # The target: every stream's first byte within 1 s of upstream's, upstream's being the fake's own under
    # the same burst (the slower of the two direct runs, so that a busier moment is not counted against us).
    upstream_max = max(direct["first_byte_served_s"]["max"] or 0.0, after["first_byte_served_s"]["max"] or 0.0)
    default = rows[1]["first_byte_served_s"]
    print(
        f"default set-up: last first byte {default['max']} s against the fake alone {upstream_max} s: "
        f"{(default['max'] or 0.0) - upstream_max:+.2f} s (target: within 1 s); "
        f"peak RSS {rows[1]['serve_peak_rss_mb']} MB (target: 150 MB)"
    )
    name = "concurrent_streams.quick" if args.quick else "concurrent_streams"
    path = write_results(name, {"environment": environment(streams=streams), "setups": rows})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

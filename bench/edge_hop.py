"""What the Supabase Edge front door's extra hop costs: direct to ``serve`` vs through the Deno proxy.

Three processes on loopback: the fake OpenRouter (``_common.FakeServerProcess``, no chunk delay), an
``openrouter-functions serve`` on it (embedded SQLite ledger, limits off), and the front door
(``openrouter-functions edge``, Deno) forwarding to that serve. The client (httpx, one keep-alive
connection per target) calls

* ``plain``: a non-streamed chat call, body read to the end;
* ``stream``: a streamed chat call — time to the first body bytes (TTFB) and to ``data: [DONE]``;

directly (``serve /chat``) and through the front door (``edge /functions/v1/chat``), **paired**: each
call to one is followed by the same call to the other, the order alternating (ABBA), so both see the
same machine. Reported: p50/p90 per target, and the added hop as the median of the paired differences.
Locally the hop is loopback: on Supabase it is a real network path from the Edge region to the
Python function's region, which this cannot measure (see docs/edge.md). Only 127.0.0.1; bounded.

    .venv/bin/python bench/edge_hop.py [--rounds 10] [--calls 50] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from _common import API_KEY, FakeServerProcess, environment, free_port, print_table, stop_process, write_results

JWT_SECRET = "bench-secret-with-at-least-thirty-two-characters"
BODY = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "Say hello to the benchmark."}]}
STREAM_BODY = {**BODY, "stream": True}
STARTUP_TIMEOUT = 30.0


def _start(argv: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    """Start ``argv``; return once ``GET ready_url`` answers 200 (stopped and raised after 30 s)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[3]} exited with {proc.returncode}")
        try:
            if httpx.get(ready_url, timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_process(proc)
    raise RuntimeError(f"{argv[3]} did not answer {ready_url} in time")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "SUPABASE_", "LEDGER_"))}
    env.update(extra)
    return env


def _plain(http: httpx.Client, url: str) -> dict[str, float]:
    started = time.perf_counter()
    response = http.post(url, json=BODY)
    response.raise_for_status()
    response.json()
    return {"plain_ms": (time.perf_counter() - started) * 1000}


def _stream(http: httpx.Client, url: str) -> dict[str, float]:
    started = time.perf_counter()
    first: float | None = None
    data = b""
    with http.stream("POST", url, json=STREAM_BODY) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            if first is None:
                first = time.perf_counter()
            data += chunk
    if first is None or b"data: [DONE]" not in data:
        raise RuntimeError("stream ended without [DONE]")
    return {"ttfb_ms": (first - started) * 1000, "stream_ms": (time.perf_counter() - started) * 1000}


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p90": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))], 2),
        "min": round(ordered[0], 2),
        "max": round(ordered[-1], 2),
    }


METRICS = (("plain_ms", "plain chat"), ("ttfb_ms", "stream TTFB"), ("stream_ms", "stream to [DONE]"))


def paired_summary(
    samples: dict[str, dict[str, list[float]]], base: str, other: str
) -> tuple[dict[str, Any], list[list[str]]]:
    """Per metric: quantiles of ``base`` and ``other``, and what ``other`` adds (median of the paired
    differences); the results for the JSON file and the table's rows."""
    results: dict[str, Any] = {}
    rows = []
    for metric, label in METRICS:
        first, second = samples[metric][base], samples[metric][other]
        added = [b - a for a, b in zip(first, second, strict=True)]
        results[metric] = {
            base: _quantiles(first),
            other: _quantiles(second),
            "added_paired_median": round(statistics.median(added), 2),
            "calls": len(first),
        }
        q_first, q_second = results[metric][base], results[metric][other]
        rows.append(
            [
                label,
                f"{q_first['p50']:.2f} / {q_first['p90']:.2f}",
                f"{q_second['p50']:.2f} / {q_second['p90']:.2f}",
                f"{results[metric]['added_paired_median']:+.2f}",
                str(len(first)),
            ]
        )
    return results, rows


def measure(urls: dict[str, str], token: str, rounds: int, calls: int, warmup: int) -> dict[str, Any]:
    """Paired calls, ABBA order; returns the samples per metric and target."""
    samples: dict[str, dict[str, list[float]]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    kinds: list[Callable[[httpx.Client, str], dict[str, float]]] = [_plain, _stream]
    with httpx.Client(headers=headers, timeout=30.0) as direct, httpx.Client(headers=headers, timeout=30.0) as edge:
        clients = {"direct": direct, "edge": edge}
        for _ in range(warmup):
            for name, client in clients.items():
                for kind in kinds:
                    kind(client, urls[name])
        order = ["direct", "edge"]
        for r in range(rounds):
            for i in range(calls):
                for kind in kinds:
                    targets = order if (r * calls + i) % 2 == 0 else order[::-1]
                    for name in targets:
                        for metric, value in kind(clients[name], urls[name]).items():
                            samples.setdefault(metric, {}).setdefault(name, []).append(value)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=50, help="paired calls per round and kind")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    rounds, calls, warmup = (2, 5, 2) if args.quick else (args.rounds, args.calls, args.warmup)

    cli = [sys.executable, "-m", "openrouter_devtools.cli"]
    with FakeServerProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        serve_port, edge_port = free_port(), free_port()
        serve_env = _clean_env(
            OPENROUTER_API_KEY=API_KEY,
            OPENROUTER_BASE_URL=upstream.url,
            SUPABASE_JWT_SECRET=JWT_SECRET,
            LEDGER_SQLITE_PATH=str(Path(tmp) / "ledger.sqlite3"),
            DEFAULT_RPM="unlimited",
            DEFAULT_DAILY_COST_USD="unlimited",
            LOG_LEVEL="ERROR",
        )
        serve_url = f"http://127.0.0.1:{serve_port}"
        edge_url = f"http://127.0.0.1:{edge_port}"
        serve = _start([*cli, "serve", "--port", str(serve_port)], serve_env, f"{serve_url}/health")
        try:
            edge_argv = [*cli, "edge", "--port", str(edge_port), "--functions-url", serve_url]
            edge = _start(edge_argv, _clean_env(), f"{edge_url}/functions/v1/health")
            try:
                from openrouter_devtools.serve import mint_dev_token

                urls = {"direct": f"{serve_url}/chat", "edge": f"{edge_url}/functions/v1/chat"}
                samples = measure(urls, mint_dev_token(JWT_SECRET), rounds, calls, warmup)
            finally:
                stop_process(edge)
        finally:
            stop_process(serve)

    results, rows = paired_summary(samples, "direct", "edge")
    print_table(["ms", "direct p50 / p90", "edge p50 / p90", "added (paired median)", "calls"], rows)
    from openrouter_devtools.edge import find_deno

    version = subprocess.run([find_deno(), "--version"], capture_output=True, text=True, check=False).stdout
    version = version.split("\n", 1)[0]
    name = "edge_hop.quick" if args.quick else "edge_hop"
    settings = {"rounds": rounds, "calls": calls, "warmup": warmup, "deno": version}
    path = write_results(name, {"environment": environment(**settings), "results": results})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

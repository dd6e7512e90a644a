"""What a stored thread costs a chat call: the same call with and without ``thread_id`` (docs/threads.md).

Two processes on loopback: the fake OpenRouter (``_common.FakeServerProcess``, no chunk delay) and an
``openrouter-functions serve`` on it (embedded SQLite ledger and thread store, limits off; with
``--database-url`` the PostgreSQL ledger and thread store instead). The client (httpx, one keep-alive
connection) calls, **paired** (each plain call followed by the threaded one, the order alternating):

* ``plain``: a non-streamed chat call, body read to the end;
* ``stream``: a streamed chat call — time to the first body bytes (TTFB) and to ``data: [DONE]``;

once without a thread and once as the next turn of a thread (a new thread every ``--turns`` calls, so the
history sent upstream grows from 1 to ``2 * turns - 1`` messages). Reported: p50/p90 of each, and the
added cost as the median of the paired differences. Only 127.0.0.1; bounded by ``--rounds``/``--calls``.

    .venv/bin/python bench/thread_turns.py [--rounds 6] [--calls 40] [--turns 10] [--database-url DSN] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import API_KEY, FakeServerProcess, environment, free_port, print_table, stop_process, write_results
from edge_hop import JWT_SECRET, _clean_env, _start, paired_summary

MESSAGE = {"role": "user", "content": "Say hello to the benchmark."}


class Caller:
    """One kind of call, plain or threaded; a threaded caller starts a new thread every ``turns`` calls."""

    def __init__(self, http: httpx.Client, url: str, threaded: bool, turns: int) -> None:
        self.http, self.url, self.threaded, self.turns = http, url, threaded, turns
        self.thread: str | None = None
        self.count = 0

    def body(self, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "openai/gpt-4o", "messages": [MESSAGE], "stream": stream}
        if self.threaded:
            if self.count % self.turns == 0:
                self.thread = None
            body["thread_id"] = self.thread or "new"
        self.count += 1
        return body

    def note(self, response: httpx.Response) -> None:
        response.raise_for_status()
        if self.threaded:
            self.thread = response.headers["x-thread-id"]

    def plain(self) -> dict[str, float]:
        body = self.body(False)
        started = time.perf_counter()
        response = self.http.post(self.url, json=body)
        response.json()
        elapsed = time.perf_counter() - started
        self.note(response)
        return {"plain_ms": elapsed * 1000}

    def stream(self) -> dict[str, float]:
        body = self.body(True)
        started = time.perf_counter()
        first: float | None = None
        data = b""
        with self.http.stream("POST", self.url, json=body) as response:
            self.note(response)
            for chunk in response.iter_raw():
                if first is None:
                    first = time.perf_counter()
                data += chunk
        if first is None or b"data: [DONE]" not in data:
            raise RuntimeError("stream ended without [DONE]")
        return {"ttfb_ms": (first - started) * 1000, "stream_ms": (time.perf_counter() - started) * 1000}


def measure(
    url: str, token: str, rounds: int, calls: int, warmup: int, turns: int
) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http:
        callers = {"plain": Caller(http, url, False, turns), "thread": Caller(http, url, True, turns)}
        for _ in range(warmup):
            for caller in callers.values():
                caller.plain()
                caller.stream()
        order = ["plain", "thread"]
        for r in range(rounds):
            for i in range(calls):
                for kind in ("plain", "stream"):
                    for name in order if (r * calls + i) % 2 == 0 else order[::-1]:
                        caller = callers[name]
                        for metric, value in (caller.plain() if kind == "plain" else caller.stream()).items():
                            samples.setdefault(metric, {}).setdefault(name, []).append(value)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=40, help="paired calls per round and kind")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--turns", type=int, default=10, help="turns per thread before a new one")
    parser.add_argument("--database-url", default=None, help="PostgreSQL with the migrations applied")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    rounds, calls, warmup = (2, 5, 2) if args.quick else (args.rounds, args.calls, args.warmup)

    cli = [sys.executable, "-m", "openrouter_devtools.cli"]
    with FakeServerProcess() as upstream, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = _clean_env(
            OPENROUTER_API_KEY=API_KEY,
            OPENROUTER_BASE_URL=upstream.url,
            SUPABASE_JWT_SECRET=JWT_SECRET,
            LEDGER_SQLITE_PATH=str(Path(tmp) / "ledger.sqlite3"),
            DEFAULT_RPM="unlimited",
            DEFAULT_DAILY_COST_USD="unlimited",
            LOG_LEVEL="ERROR",
        )
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        base = f"http://127.0.0.1:{port}"
        serve = _start([*cli, "serve", "--port", str(port)], env, f"{base}/health")
        try:
            from openrouter_devtools.serve import mint_dev_token

            samples = measure(f"{base}/chat", mint_dev_token(JWT_SECRET), rounds, calls, warmup, args.turns)
        finally:
            stop_process(serve)

    store = "postgres" if args.database_url else "sqlite"
    results, rows = paired_summary(samples, "plain", "thread")
    print(f"store: {store}; a new thread every {args.turns} turns")
    print_table(["ms", "no thread p50 / p90", "thread p50 / p90", "added (paired median)", "calls"], rows)
    name = f"thread_turns.{store}" + (".quick" if args.quick else "")
    settings = {"rounds": rounds, "calls": calls, "warmup": warmup, "turns": args.turns, "store": store}
    path = write_results(name, {"environment": environment(**settings), "results": results})
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

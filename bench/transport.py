"""Which transport should sit under ``OpenRouterService``'s pooled ``httpx.AsyncClient``?

Run by hand from the repository root::

    .venv/bin/python bench/transport.py          # ~1 min
    .venv/bin/python bench/transport.py --quick  # a few seconds, smoke run

Each contender sends the request ``OpenRouterService`` sends (pre-serialised JSON body, the same
headers, ``POST /api/v1/chat/completions``) and parses the JSON answer, against the fake OpenRouter
running in its own process.  Contenders (both httpx ones get the limits OpenRouterService uses):

``httpx``            ``httpx.AsyncClient`` on its own ``AsyncHTTPTransport`` (httpcore + anyio)
``httpx-aiohttp``    ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(limits=...))``
``aiohttp (ref)``    a bare ``aiohttp.ClientSession``: what the aiohttp transport costs without httpx on top
``raw socket (ref)`` pre-built bytes over asyncio streams: the server + kernel floor

For each concurrency level (1, 4, 16, 64 in flight; ``asyncio.gather`` over a semaphore) the
contenders run interleaved, in alternating order, for several rounds; the table shows the median of
rounds.  Results go to ``bench/results/transport.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from _common import (
    HEADERS,
    PAYLOAD,
    SERVICE_LIMITS,
    SERVICE_TIMEOUT,
    AsyncCall,
    FakeServerProcess,
    RawHttpClient,
    Samples,
    environment,
    pin_cpus,
    print_table,
    round_orders,
    time_concurrent,
    write_results,
)

HTTPX = "httpx"
AIOHTTP = "httpx-aiohttp"
AIOHTTP_REF = "aiohttp (ref)"
RAW = "raw socket (ref)"
BODY = json.dumps(PAYLOAD, separators=(",", ":"), ensure_ascii=False).encode()


class Contenders:
    def __init__(self, url: str) -> None:
        self.chat_url = f"{url}/chat/completions"
        self.httpx = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(limits=SERVICE_LIMITS), timeout=SERVICE_TIMEOUT, limits=SERVICE_LIMITS
        )
        self.aiohttp = httpx.AsyncClient(
            transport=AiohttpTransport(limits=SERVICE_LIMITS), timeout=SERVICE_TIMEOUT, limits=SERVICE_LIMITS
        )
        connector = aiohttp.TCPConnector(
            limit=SERVICE_LIMITS.max_connections or 0, keepalive_timeout=SERVICE_LIMITS.keepalive_expiry
        )
        self.session = aiohttp.ClientSession(connector=connector)
        self.raw = RawHttpClient(url, PAYLOAD)

    def calls(self) -> dict[str, AsyncCall]:
        return {
            HTTPX: self._httpx_call(self.httpx),
            AIOHTTP: self._httpx_call(self.aiohttp),
            AIOHTTP_REF: self._session_call,
            RAW: self.raw.call,
        }

    def _httpx_call(self, client: httpx.AsyncClient) -> AsyncCall:
        url = self.chat_url

        async def call() -> Any:
            response = await client.post(url, content=BODY, headers=HEADERS)
            if response.status_code != 200:
                raise RuntimeError(f"fake answered {response.status_code}")
            return json.loads(response.content)

        return call

    async def _session_call(self) -> Any:
        async with self.session.post(self.chat_url, data=BODY, headers=HEADERS) as response:
            if response.status != 200:
                raise RuntimeError(f"fake answered {response.status}")
            return json.loads(await response.read())

    async def aclose(self) -> None:
        await self.httpx.aclose()
        await self.aiohttp.aclose()
        await self.session.close()
        await self.raw.aclose()


@dataclass(frozen=True)
class Scenario:
    label: str
    level: int  # calls in flight while timed
    burst: int = 0  # before each timed run, an untimed burst at this concurrency fills the pool


async def run_scenario(
    args: argparse.Namespace, server: FakeServerProcess, scenario: Scenario
) -> dict[str, tuple[Samples, Samples]]:
    """``{contender: (calls/s per round, client CPU us/call per round)}`` on fresh clients."""
    contenders = Contenders(server.url)
    calls = contenders.calls()
    level = scenario.level
    n = max(args.calls_per_level.get(level, args.calls), level)
    per: dict[str, tuple[Samples, Samples]] = {name: (Samples(), Samples()) for name in calls}
    try:
        for call in calls.values():  # warm-up at this level: connections opened, code paths hot
            await time_concurrent(call, max(args.warmup, level * 2), level)
        server.reset()
        for r, order in enumerate(round_orders(list(calls), args.rounds), 1):
            for name in order:
                if scenario.burst:
                    await time_concurrent(calls[name], scenario.burst, scenario.burst)
                wall, cpu = await time_concurrent(calls[name], n, level)
                per[name][0].add(n / wall)
                per[name][1].add(cpu / n * 1e6)
            if r % 5 == 0:
                server.reset()
    finally:
        await contenders.aclose()
    print(f"  {scenario.label}: {args.rounds} rounds x {n} calls done", file=sys.stderr, flush=True)
    return per


async def run(args: argparse.Namespace, server: FakeServerProcess) -> dict[str, dict[str, tuple[Samples, Samples]]]:
    """``{scenario label: {contender: (calls/s samples, client CPU us/call samples)}}``."""
    scenarios = [Scenario(str(level), level) for level in args.levels]
    if args.burst:
        scenarios.append(Scenario(f"1 after {args.burst}-burst", 1, burst=args.burst))
    return {s.label: await run_scenario(args, server, s) for s in scenarios}


def report(args: argparse.Namespace, results: dict[str, dict[str, tuple[Samples, Samples]]]) -> dict[str, Any]:
    print()
    print(f"median of {args.rounds} rounds (best round in brackets); limits {SERVICE_LIMITS}")
    headers = ["in flight", "contender", "calls/s", "best", "us/call", "client CPU us/call"]
    rows = []
    out: dict[str, Any] = {}
    for label, per in results.items():
        level_out: dict[str, Any] = {}
        for name, (rps, cpu) in per.items():
            rows.append(
                [
                    label,
                    name,
                    f"{rps.median:,.0f}",
                    f"{max(rps.values):,.0f}",
                    f"{1e6 / rps.median:,.0f}",
                    f"{cpu.median:,.0f}",
                ]
            )
            level_out[name] = {
                "calls_per_s": rps.as_dict("calls/s"),
                "us_per_call": round(1e6 / rps.median, 1),
                "client_cpu_us_per_call": cpu.as_dict("us/call"),
            }
        level_out["httpx_aiohttp_speedup_over_httpx"] = round(per[AIOHTTP][0].paired_ratio(per[HTTPX][0]), 3)
        out[label] = level_out
    print_table(headers, rows)
    print()
    print("throughput ratio to httpx (median of per-round ratios; > 1 means faster than httpx's own transport):")
    for label, per in results.items():
        speedup = per[AIOHTTP][0].paired_ratio(per[HTTPX][0])
        ref = per[AIOHTTP_REF][0].paired_ratio(per[HTTPX][0])
        print(f"  {label:>16} in flight: httpx-aiohttp {speedup:4.2f}x   (bare aiohttp session {ref:4.2f}x)")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64], help="calls in flight")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per scenario")
    parser.add_argument(
        "--burst", type=int, default=64, help="also time 1 in flight right after a burst this wide (0 = skip)"
    )
    parser.add_argument("--calls", type=int, default=0, help="calls per contender per round (0 = per-level default)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up calls per contender per level")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of few calls")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to separate cores")
    parser.add_argument("--output", default="transport", help="results file name under bench/results/")
    args = parser.parse_args(argv)
    defaults = {1: 80, 4: 96, 16: 128, 64: 128}
    if args.quick:
        # httpx needs ~15 ms a call at 64 in flight here, so the smoke run stops at 16.
        args.rounds, args.warmup, args.levels, args.burst = 2, 20, [1, 4, 16], min(args.burst, 16)
        defaults = {1: 20, 4: 32, 16: 48}
    if args.calls:
        defaults = {}
    else:
        args.calls = 256
    args.calls_per_level = defaults
    if args.rounds < 1 or args.calls < 1 or any(level < 1 for level in args.levels):
        parser.error("--rounds, --calls and --levels must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client_cpu, server_cpu = pin_cpus(not args.no_pin)
    if client_cpu is not None:
        print(f"client pinned to CPU {client_cpu}, fake server to CPU {server_cpu}")
    with FakeServerProcess(cpu=server_cpu) as server:
        print(f"fake OpenRouter (pid {server.pid}) at {server.url}", flush=True)
        results = asyncio.run(run(args, server))
    out = report(args, results)
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "calls_per_level")}
    settings["calls_per_level"] = {str(k): v for k, v in args.calls_per_level.items()}
    path = write_results(
        args.output if not args.quick else f"{args.output}.quick",
        {
            "benchmark": "transport",
            "settings": settings,
            "environment": environment(client_cpu=client_cpu, server_cpu=server_cpu),
            "by_concurrency": out,
        },
    )
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-call cost of ``OpenRouterService`` against a bare httpx client and the official ``openai`` SDK.

Run by hand from the repository root::

    .venv/bin/python bench/client_overhead.py                      # ~1 min, pooled httpx transport
    .venv/bin/python bench/client_overhead.py --transport aiohttp  # our client on httpx-aiohttp
    .venv/bin/python bench/client_overhead.py --quick              # a few seconds, smoke run
    .venv/bin/python bench/client_overhead.py --profile            # + cProfile of our call path

The fake OpenRouter runs in its own process (pinned to another core when there are two), so server
work shares neither the client's event loop nor its GIL.  Every client answers the same request:
one short user message, non-streaming unless stated.  Rows:

``ours``          ``OpenRouterService.chat_completion`` on ``http_client=httpx.AsyncClient(transport=T)``
``bare httpx``    ``httpx.AsyncClient.post(json=...)`` + ``.json()`` on the same transport ``T`` and limits
``bare httpx (default)``  ``httpx.AsyncClient()`` as it comes (always shown)
``openai SDK``    ``AsyncOpenAI(max_retries=0).chat.completions.create``
``raw socket``    the floor: pre-built request bytes over asyncio streams (server + kernel + ~nothing)

Targets: ours / bare httpx (same transport) <= 1.3 and ours / openai < 1, checked on the median of
per-round ratios for sequential calls, 16 in flight and streams.  Results also go to
``bench/results/client_overhead.json`` (``client_overhead.aiohttp.json`` for ``--transport aiohttp``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from openai import AsyncOpenAI

from _common import (
    API_KEY,
    HEADERS,
    MESSAGES,
    MODEL,
    PAYLOAD,
    SERVICE_LIMITS,
    SERVICE_TIMEOUT,
    STREAM_PAYLOAD,
    AsyncCall,
    FakeServerProcess,
    RawHttpClient,
    Samples,
    environment,
    pin_cpus,
    print_table,
    round_orders,
    time_concurrent,
    time_sequential,
    write_results,
)
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_service import OpenRouterService
from openrouter_service.transport import default_transport

OURS = "ours"
BARE = "bare httpx"
BARE_DEFAULT = "bare httpx (default)"
OPENAI = "openai SDK"
RAW = "raw socket (floor)"
BARE_CLOSE_AT_DONE = "bare httpx, close at [DONE]"

SSE_HEADERS = {**HEADERS, "Accept": "text/event-stream"}


def make_transport(kind: str) -> httpx.AsyncBaseTransport:
    """The transport under test, with the limits OpenRouterService gives its own pool."""
    if kind == "aiohttp":
        # AiohttpTransport maps max_connections -> TCPConnector(limit=...) and keepalive_expiry ->
        # keepalive_timeout; aiohttp has no cap on idle connections (httpx keeps 64 here).
        return AiohttpTransport(limits=SERVICE_LIMITS)
    return httpx.AsyncHTTPTransport(limits=SERVICE_LIMITS)


def make_http_client(kind: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=make_transport(kind), timeout=SERVICE_TIMEOUT, limits=SERVICE_LIMITS)


@dataclass
class Contender:
    name: str
    call: AsyncCall | None
    stream: AsyncCall | None


class Contenders:
    """All clients, built inside the running loop and closed together."""

    def __init__(self, url: str, transport: str) -> None:
        self.url = url
        self.chat_url = f"{url}/chat/completions"
        self.ours_http = make_http_client(transport)
        self.service = OpenRouterService(API_KEY, base_url=url, http_client=self.ours_http)
        self.bare = make_http_client(transport)
        self.bare_default = httpx.AsyncClient()
        self.openai = AsyncOpenAI(base_url=url, api_key=API_KEY, max_retries=0)
        self.raw = RawHttpClient(url, PAYLOAD)

    def all(self) -> list[Contender]:
        return [
            Contender(OURS, self.ours_call, self.ours_stream),
            Contender(BARE, self._bare_call(self.bare), self._bare_stream(self.bare)),
            Contender(BARE_DEFAULT, self._bare_call(self.bare_default), self._bare_stream(self.bare_default)),
            Contender(OPENAI, self.openai_call, self.openai_stream),
            Contender(RAW, self.raw.call, None),
            # Diagnostic: what closing the response right after [DONE] (before the chunked body's
            # terminator is read) costs - httpcore then drops the connection instead of pooling it.
            Contender(BARE_CLOSE_AT_DONE, None, self._bare_stream(self.bare, stop_at_done=True)),
        ]

    async def ours_call(self) -> Any:
        return await self.service.chat_completion(MESSAGES)

    async def ours_stream(self) -> int:
        n = 0
        async for _ in self.service.stream_chat_completion(MESSAGES):
            n += 1
        return n

    def _bare_call(self, client: httpx.AsyncClient) -> AsyncCall:
        url = self.chat_url

        async def call() -> Any:
            response = await client.post(url, json=PAYLOAD, headers=HEADERS)
            response.raise_for_status()
            return response.json()

        return call

    def _bare_stream(self, client: httpx.AsyncClient, *, stop_at_done: bool = False) -> AsyncCall:
        url = self.chat_url

        async def stream() -> int:
            n = 0
            async with client.stream("POST", url, json=STREAM_PAYLOAD, headers=SSE_HEADERS) as response:
                response.raise_for_status()
                # Normally read to the end (no `break` at [DONE]) so the connection goes back to the pool.
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        if stop_at_done:
                            break
                    elif line.startswith("data: "):
                        json.loads(line[6:])
                        n += 1
            return n

        return stream

    async def openai_call(self) -> Any:
        return await self.openai.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    async def openai_stream(self) -> int:
        n = 0
        stream = await self.openai.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        async for _ in stream:
            n += 1
        return n

    async def aclose(self) -> None:
        await self.service.aclose()
        await self.ours_http.aclose()
        await self.bare.aclose()
        await self.bare_default.aclose()
        await self.openai.close()
        await self.raw.aclose()


# --------------------------------------------------------------------------------------------------
# Diagnostics outside the timed runs
# --------------------------------------------------------------------------------------------------


async def connection_reuse(transport: str, streams: int = 20) -> dict[str, int]:
    """TCP connections the fake accepted for ``streams`` sequential streams / calls (1 = pooled reuse)."""
    counts: dict[str, int] = {}
    async with FakeOpenRouter() as fake:
        contenders = Contenders(fake.url, transport)
        try:
            for c in contenders.all():
                for kind, fn in (("stream", c.stream), ("call", c.call)):
                    if fn is None:
                        continue
                    before = fake.connections
                    for _ in range(streams):
                        await fn()
                    counts[f"{c.name} / {kind}"] = fake.connections - before
        finally:
            await contenders.aclose()
    return counts


async def profile_ours(url: str, transport: str, calls: int, stream: bool) -> str:
    """cProfile of ``calls`` sequential calls of our client; returns the printed stats."""
    contenders = Contenders(url, transport)
    fn = contenders.ours_stream if stream else contenders.ours_call
    try:
        for _ in range(50):
            await fn()
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(calls):
            await fn()
        profiler.disable()
    finally:
        await contenders.aclose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats("openrouter_service|httpx/_client|_transports|httpx_aiohttp", 30)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------
# The timed runs
# --------------------------------------------------------------------------------------------------


async def phase(args: argparse.Namespace, server: FakeServerProcess, kind: str) -> tuple[dict[str, Samples], ...]:
    """One scenario on fresh clients: ``(per-round values, per-round client CPU us/call)`` by client.

    Fresh clients per scenario keep the pools comparable: httpx's pool scans every pooled connection
    on each request, so a pool left with 16 idle connections by the concurrent scenario would slow
    the sequential one down (see bench/transport.py, "1 after burst").
    """
    started = time.perf_counter()
    contenders = Contenders(server.url, args.transport)
    fns: dict[str, AsyncCall] = {}
    for c in contenders.all():
        fn = c.stream if kind == "stream" else c.call
        if fn is not None:
            fns[c.name] = fn
    values: dict[str, Samples] = {n: Samples() for n in fns}
    cpu_us: dict[str, Samples] = {n: Samples() for n in fns}
    try:
        for fn in fns.values():  # warm-up: connections opened, code paths hot, lazy imports done
            if kind == "concurrent":
                await time_concurrent(fn, args.concurrency * (1 if args.quick else 4), args.concurrency)
            else:
                for _ in range(args.warmup if kind == "sequential" else max(3, args.warmup // 10)):
                    await fn()
        server.reset()
        for r, order in enumerate(round_orders(list(fns), args.rounds), 1):
            for name in order:
                if kind == "concurrent":
                    n = args.conc_calls
                    wall, cpu = await time_concurrent(fns[name], n, args.concurrency)
                    values[name].add(n / wall)
                else:
                    n = args.stream_calls if kind == "stream" else args.calls
                    wall, cpu = await time_sequential(fns[name], n)
                    values[name].add(wall / n * 1e6)
                cpu_us[name].add(cpu / n * 1e6)
            if r % 5 == 0:
                server.reset()
        took = time.perf_counter() - started
        print(f"  {kind}: {args.rounds} rounds done in {took:.1f} s", file=sys.stderr, flush=True)
    finally:
        await contenders.aclose()
    return values, cpu_us


async def in_memory(args: argparse.Namespace) -> dict[str, Samples]:
    """Ours vs bare httpx on ``httpx.MockTransport`` (no socket, no server, no pool): the client layers alone.

    The difference between the two rows is what OpenRouterService itself adds per call (validation,
    payload, JSON, response checks, logging guard), without network noise.
    """
    completion = {
        "id": "gen-0-bench",
        "provider": "FakeProvider",
        "model": MODEL,
        "object": "chat.completion",
        "created": 0,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Echo: " + MESSAGES[0]["content"]},
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23, "cost": 3.4e-05},
    }
    canned = json.dumps(completion).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=canned, headers={"content-type": "application/json"})

    url = "http://127.0.0.1:9/api/v1"  # never dialled: MockTransport answers
    ours_http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    service = OpenRouterService(API_KEY, base_url=url, http_client=ours_http)
    bare = httpx.AsyncClient(transport=httpx.MockTransport(handler))

    async def ours() -> Any:
        return await service.chat_completion(MESSAGES)

    async def plain() -> Any:
        response = await bare.post(f"{url}/chat/completions", json=PAYLOAD, headers=HEADERS)
        response.raise_for_status()
        return response.json()

    fns = {OURS: ours, BARE: plain}
    values = {n: Samples() for n in fns}
    n = args.calls * 2
    try:
        for fn in fns.values():
            for _ in range(args.warmup):
                await fn()
        for order in round_orders(list(fns), args.rounds):
            for name in order:
                wall, _ = await time_sequential(fns[name], n)
                values[name].add(wall / n * 1e6)
    finally:
        await ours_http.aclose()
        await bare.aclose()
    return values


async def run(args: argparse.Namespace, server: FakeServerProcess) -> dict[str, Any]:
    seq_us, seq_cpu_us = await phase(args, server, "sequential")
    conc_rps, conc_cpu_us = await phase(args, server, "concurrent")
    stream_us, _ = await phase(args, server, "stream")
    mem_us = await in_memory(args)
    c = args.concurrency
    return {
        "in_memory_us_per_call": {n: s.as_dict("us/call") for n, s in mem_us.items()},
        "sequential_us_per_call": {n: s.as_dict("us/call") for n, s in seq_us.items()},
        "sequential_client_cpu_us_per_call": {n: s.as_dict("us/call") for n, s in seq_cpu_us.items()},
        f"concurrent{c}_calls_per_s": {n: s.as_dict("calls/s") for n, s in conc_rps.items()},
        f"concurrent{c}_client_cpu_us_per_call": {n: s.as_dict("us/call") for n, s in conc_cpu_us.items()},
        "stream_us_per_stream": {n: s.as_dict("us/stream") for n, s in stream_us.items()},
        "_samples": {"seq": seq_us, "conc": conc_rps, "stream": stream_us, "seq_cpu": seq_cpu_us, "mem": mem_us},
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def report(args: argparse.Namespace, results: dict[str, Any]) -> dict[str, Any]:
    samples = results.pop("_samples")
    seq: dict[str, Samples] = samples["seq"]
    seq_cpu: dict[str, Samples] = samples["seq_cpu"]
    conc: dict[str, Samples] = samples["conc"]
    stream: dict[str, Samples] = samples["stream"]
    mem: dict[str, Samples] = samples["mem"]
    floor = seq[RAW].median

    print()
    print(f"transport under test: {args.transport}   (ours and 'bare httpx' share it; limits {SERVICE_LIMITS})")
    print(
        f"sequential: {args.rounds} rounds x {args.calls} calls; concurrent: {args.rounds} x {args.conc_calls} ", end=""
    )
    print(f"calls at {args.concurrency} in flight; streams: {args.rounds} x {args.stream_calls}")
    print("median of rounds, 'best' = best round; 'client CPU' = client process CPU us per sequential call")
    print()
    c = args.concurrency
    headers = [
        "client",
        "seq us/call",
        "best",
        "above floor",
        "client CPU",
        f"c{c} calls/s",
        "best",
        "stream us",
        "best",
    ]
    rows = []
    for name in dict.fromkeys([*seq, *stream]):
        s, st = seq.get(name), stream.get(name)
        cells = ["-"] * 6
        if s is not None:
            cells = [
                f"{s.median:,.0f}",
                f"{min(s.values):,.0f}",
                f"{s.median - floor:,.0f}",
                f"{seq_cpu[name].median:,.0f}",
                f"{conc[name].median:,.0f}",
                f"{max(conc[name].values):,.0f}",
            ]
        rows.append([name, *cells, f"{st.median:,.0f}" if st else "-", f"{min(st.values):,.0f}" if st else "-"])
    print_table(headers, rows)
    print()
    own = mem[OURS].median - mem[BARE].median
    print(
        f"in memory (httpx.MockTransport, no network): ours {mem[OURS].median:,.0f} us/call, bare httpx "
        f"{mem[BARE].median:,.0f} us/call -> OpenRouterService's own layer ~{own:,.0f} us/call "
        f"(paired ratio {mem[OURS].paired_ratio(mem[BARE]):.2f})"
    )

    def check(
        label: str, cost: Samples, base: Samples, op: str, target: float, *, inverse: bool = False
    ) -> dict[str, Any]:
        """``cost / base`` per round (or ``base / cost`` for throughputs), median over rounds, vs the target."""
        paired = base.paired_ratio(cost) if inverse else cost.paired_ratio(base)
        of_medians = ratio(base.median, cost.median) if inverse else ratio(cost.median, base.median)
        ok = paired <= target if op == "<=" else paired < target
        print(f"  {label:<46} {paired:5.2f}  ({of_medians:4.2f})   target {op} {target:<4} {'ok' if ok else 'MISSED'}")
        return {
            "paired_median": round(paired, 3),
            "of_medians": round(of_medians, 3),
            "target": f"{op} {target}",
            "met": ok,
        }

    print()
    print("  ratio (cost; lower is better)                  paired  (of medians)")
    ratios = {
        "seq ours/bare_httpx": check("sequential   ours / bare httpx, same transport", seq[OURS], seq[BARE], "<=", 1.3),
        "seq_cpu ours/bare_httpx": check(
            "sequential   client CPU ours / bare httpx", seq_cpu[OURS], seq_cpu[BARE], "<=", 1.1
        ),
        "seq ours/bare_httpx_default": check(
            "sequential   ours / bare httpx (default)", seq[OURS], seq[BARE_DEFAULT], "<=", 1.3
        ),
        "seq ours/openai": check("sequential   ours / openai SDK", seq[OURS], seq[OPENAI], "<", 1),
        "conc ours/bare_httpx": check(
            f"c{c}          ours / bare httpx, same transport", conc[OURS], conc[BARE], "<=", 1.3, inverse=True
        ),
        "conc ours/bare_httpx_default": check(
            f"c{c}          ours / bare httpx (default)", conc[OURS], conc[BARE_DEFAULT], "<=", 1.3, inverse=True
        ),
        "conc ours/openai": check(f"c{c}          ours / openai SDK", conc[OURS], conc[OPENAI], "<", 1, inverse=True),
        "stream ours/bare_httpx": check("stream       ours / bare httpx lines", stream[OURS], stream[BARE], "<=", 1.3),
        "stream ours/bare_httpx_close_at_done": check(
            "stream       ours / bare httpx, close at [DONE]", stream[OURS], stream[BARE_CLOSE_AT_DONE], "<=", 1.3
        ),
        "stream ours/openai": check("stream       ours / openai SDK", stream[OURS], stream[OPENAI], "<", 1),
    }
    print("  paired = median over rounds of the per-round ratio (robust to this VM's speed drifting);")
    print(f"  c{c} ratios compare throughputs inverted, so they read as cost too.")
    results["ratios"] = ratios
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("httpx", "aiohttp"), default="httpx", help="transport under ours")
    parser.add_argument("--rounds", type=int, default=16, help="interleaved rounds per scenario")
    parser.add_argument("--calls", type=int, default=60, help="sequential calls per client per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--conc-calls", type=int, default=80, help="concurrent calls per client per round")
    parser.add_argument("--stream-calls", type=int, default=10, help="streams per client per round")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up calls per client")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of few calls")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to separate cores")
    parser.add_argument("--profile", action="store_true", help="also cProfile our client (not timed)")
    parser.add_argument("--output", default="client_overhead", help="results file name under bench/results/")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.calls, args.conc_calls, args.stream_calls, args.warmup = 2, 10, 16, 3, 5
    for name in ("rounds", "calls", "concurrency", "conc_calls", "stream_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client_cpu, server_cpu = pin_cpus(not args.no_pin)
    if client_cpu is not None:
        print(f"client pinned to CPU {client_cpu}, fake server to CPU {server_cpu}")

    reuse_n = 5 if args.quick else 20
    reuse = asyncio.run(connection_reuse(args.transport, reuse_n))
    print(f"TCP connections opened for {reuse_n} sequential requests (1 = reuse; in-thread fake, not timed):")
    for key, value in reuse.items():
        print(f"  {key:<36} {value}")

    with FakeServerProcess(cpu=server_cpu) as server:
        print(f"fake OpenRouter (pid {server.pid}) at {server.url}", flush=True)
        results = asyncio.run(run(args, server))
        results = report(args, results)
        profile_text: str | None = None
        if args.profile:
            calls = 100 if args.quick else 1000
            profile_text = asyncio.run(profile_ours(server.url, args.transport, calls, stream=False))
            profile_text += asyncio.run(profile_ours(server.url, args.transport, calls // 4, stream=True))
            print(profile_text)

    default = default_transport()
    results = {
        "benchmark": "client_overhead",
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "profile")},
        "environment": environment(
            client_cpu=client_cpu,
            server_cpu=server_cpu,
            service_default_transport=type(default).__name__ if default is not None else "httpx (None)",
        ),
        f"connections_per_{reuse_n}_requests": reuse,
        **results,
    }
    if profile_text:
        results["profile"] = profile_text
    name = args.output if args.transport == "httpx" else f"{args.output}.{args.transport}"
    path = write_results(f"{name}.quick" if args.quick else name, results)
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What a function costs on top of OpenRouter: cold start and per-call overhead.

* Cold start: a fresh ``functions-framework --target chat`` process (and ``openrouter-functions serve``)
  from spawn to its first answered chat call, ``--starts`` times; plus the import time of the
  function's module in a fresh interpreter.
* Per-call overhead: the same chat request sent (a) straight to the fake OpenRouter and (b) through
  the ``chat`` function in front of it (token verified, body validated, policy, ledger, our client,
  JSON back), sequentially, interleaved over rounds. The paired difference (b - a) is what the
  function adds. Measured with the ledger off and with the embedded SQLite ledger.

Targets (a tenth of LiteLLM's proxy on this class of machine: ~5 s start, ~5 ms per call):
cold start <= 0.5 s, overhead <= 0.5 ms per call. Everything talks to 127.0.0.1; loops are bounded.

    .venv/bin/python bench/function_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt

from _common import (
    API_KEY,
    MESSAGES,
    PAYLOAD,
    FakeServerProcess,
    Samples,
    environment,
    free_port,
    print_table,
    stop_process,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-that-is-at-least-32-characters-long"
USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"


def token() -> str:
    now = int(time.time())
    claims = {"sub": USER, "aud": "authenticated", "role": "authenticated", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def function_env(upstream: str, ledger: str, ledger_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "SUPABASE_", "LEDGER_"))}
    env.update(DEFAULT_RPM="unlimited", DEFAULT_DAILY_COST_USD="unlimited")  # one user, many calls: no limits
    env.update(
        OPENROUTER_API_KEY=API_KEY,
        OPENROUTER_BASE_URL=upstream,
        SUPABASE_JWT_SECRET=SECRET,
        LEDGER_BACKEND=ledger,
        LEDGER_SQLITE_PATH=str(Path(ledger_dir) / "ledger.sqlite3"),
        LOG_LEVEL="WARNING",
    )
    return env


def spawn(kind: str, port: int, env: dict[str, str], target: str = "chat") -> subprocess.Popen[bytes]:
    if kind == "functions-framework":
        folder = ROOT / "bench" / "noop_function" if target == "noop" else ROOT / "functions" / target
        argv = [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            target,
            "--source",
            str(folder / "main.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    else:
        argv = [sys.executable, "-m", "openrouter_devtools.cli", "serve", "--port", str(port)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU of a process and all its descendants (gunicorn master and workers), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
    family = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family:
                family.add(pid)
                grew = True
    return sum(times.get(pid, 0.0) for pid in family)


def cold_start(kind: str, upstream: str, ledger_dir: str) -> float:
    """Seconds from spawn to the first answered chat call."""
    port = free_port()
    path = "/" if kind == "functions-framework" else "/chat"
    headers = {"Authorization": f"Bearer {token()}"}
    started = time.perf_counter()
    process = spawn(kind, port, function_env(upstream, "sqlite", ledger_dir))
    try:
        deadline = started + 30
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() < deadline:
                try:
                    response = client.post(
                        f"http://127.0.0.1:{port}{path}", json={"messages": MESSAGES}, headers=headers
                    )
                except httpx.TransportError:
                    time.sleep(0.005)
                    continue
                if response.status_code != 200:
                    raise SystemExit(f"{kind} answered {response.status_code}: {response.text[:300]}")
                return time.perf_counter() - started
        raise SystemExit(f"{kind} did not answer within 30 s")
    finally:
        stop_process(process)


def import_time() -> float:
    """Seconds to import the chat function's module in a fresh interpreter (median of 5)."""
    code = (
        "import time, importlib.util as u; t = time.perf_counter(); "
        f"s = u.spec_from_file_location('main', {str(ROOT / 'functions/chat/main.py')!r}); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); print(time.perf_counter() - t)"
    )
    samples = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout)
        for _ in range(5)
    ]
    return statistics.median(samples)


async def overhead(upstream: str, target: str, ledger: str, rounds: int, calls: int) -> dict[str, Any]:
    """Wall time per call straight to the fake vs through the function (paired over rounds), and the
    function processes' CPU per call (robust to the noise of three processes sharing two cores)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as ledger_dir:
        process = spawn("functions-framework", port, function_env(upstream, ledger, ledger_dir), target)
        try:
            auth = {"Authorization": f"Bearer {token()}"}
            async with httpx.AsyncClient(timeout=10) as direct, httpx.AsyncClient(timeout=10) as through:
                for _ in range(300):
                    try:
                        await through.options(f"http://127.0.0.1:{port}/")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                upstream_headers = {"Authorization": f"Bearer {API_KEY}"}

                async def call_direct() -> None:
                    r = await direct.post(f"{upstream}/chat/completions", json=PAYLOAD, headers=upstream_headers)
                    r.json()

                async def call_through() -> None:
                    r = await through.post(f"http://127.0.0.1:{port}/", json={"messages": MESSAGES}, headers=auth)
                    assert r.status_code == 200, r.text
                    r.json()

                for _ in range(50):  # warm both paths
                    await call_direct()
                    await call_through()
                a, b = Samples(), Samples()
                cpu = 0.0
                for r in range(rounds):
                    order = [(a, call_direct), (b, call_through)]
                    for samples, call in order if r % 2 == 0 else order[::-1]:
                        before = tree_cpu_seconds(process.pid) if call is call_through else 0.0
                        start = time.perf_counter()
                        for _ in range(calls):
                            await call()
                        samples.add((time.perf_counter() - start) / calls * 1e6)
                        if call is call_through:
                            cpu += tree_cpu_seconds(process.pid) - before
        finally:
            stop_process(process)
    added = statistics.median(y - x for x, y in zip(a.values, b.values, strict=True))
    return {
        "direct_us": a.as_dict("us/call"),
        "through_function_us": b.as_dict("us/call"),
        "added_wall_us_paired_median": round(added, 1),
        "function_cpu_us_per_call": round(cpu / (rounds * calls) * 1e6, 1),
    }


async def in_memory(rounds: int, calls: int) -> dict[str, Any]:
    """The same requests with no sockets at all: the functions over ASGITransport and OpenRouter as an
    httpx.MockTransport. Isolates what our own code costs from the kernel and the HTTP stacks."""
    import json

    from openrouter_devtools.serve import FunctionsRouter, build_app
    from openrouter_functions.config import Settings
    from openrouter_functions.runtime import reset_runtime
    from openrouter_service import OpenRouterService

    reply = json.dumps(
        {
            "id": "gen-1",
            "object": "chat.completion",
            "model": "openai/gpt-4o",
            "provider": "Fake",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello!"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14, "cost": 0.00004},
        }
    ).encode()

    def upstream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=reply, headers={"content-type": "application/json"})

    import functions_framework

    router = build_app(ROOT / "functions")
    router.apps["noop"] = functions_framework.create_app("noop", str(ROOT / "bench" / "noop_function" / "main.py"))
    assert isinstance(router, FunctionsRouter)
    auth = {"Authorization": f"Bearer {token()}"}
    body = {"messages": MESSAGES}
    samples = {name: Samples() for name in ("noop", "client", "chat_off", "chat_sqlite")}
    with tempfile.TemporaryDirectory() as folder:
        runtimes = {}
        for ledger in ("off", "sqlite"):
            runtime = reset_runtime(
                Settings.from_env(
                    {
                        "OPENROUTER_API_KEY": API_KEY,
                        "SUPABASE_JWT_SECRET": SECRET,
                        "LEDGER_BACKEND": ledger,
                        "LEDGER_SQLITE_PATH": str(Path(folder) / "ledger.sqlite3"),
                        "DEFAULT_RPM": "unlimited",  # one user, many calls: no limits
                        "DEFAULT_DAILY_COST_USD": "unlimited",
                    }
                )
            )
            assert runtime is not None
            runtime.use_service(
                OpenRouterService(API_KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(upstream)))
            )
            runtimes[ledger] = runtime
        service = OpenRouterService(API_KEY, http_client=httpx.AsyncClient(transport=httpx.MockTransport(upstream)))

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=router), base_url="http://in.memory") as http:

            async def noop() -> None:
                await http.post("/noop", json=body, headers=auth)

            async def client() -> None:
                await service.chat_completion(MESSAGES)

            def chat(ledger: str) -> Any:
                async def call() -> None:
                    reset_runtime(runtimes[ledger])
                    response = await http.post("/chat", json=body, headers=auth)
                    assert response.status_code == 200, response.text

                return call

            calls_by_name = {"noop": noop, "client": client, "chat_off": chat("off"), "chat_sqlite": chat("sqlite")}
            for call in calls_by_name.values():
                for _ in range(30):
                    await call()
            for r in range(rounds):
                names = list(calls_by_name)
                for name in names if r % 2 == 0 else names[::-1]:
                    start = time.perf_counter()
                    for _ in range(calls):
                        await calls_by_name[name]()
                    samples[name].add((time.perf_counter() - start) / calls * 1e6)
        for runtime in runtimes.values():
            await runtime.aclose()
    reset_runtime()
    ours = {
        ledger: statistics.median(
            c - n - u
            for c, n, u in zip(
                samples[f"chat_{ledger}"].values, samples["noop"].values, samples["client"].values, strict=True
            )
        )
        for ledger in ("off", "sqlite")
    }
    return {
        **{name: s.as_dict("us/call") for name, s in samples.items()},
        "ours_us_ledger_off": round(ours["off"], 1),
        "ours_us_ledger_sqlite": round(ours["sqlite"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--in-memory", action="store_true", help="only the in-memory per-call measurement")
    args = parser.parse_args()
    starts, rounds, calls = (2, 3, 30) if args.quick else (args.starts, args.rounds, args.calls)
    if args.in_memory:
        memory = asyncio.run(in_memory(rounds, calls))
        for name in ("noop", "client", "chat_off", "chat_sqlite"):
            print(f"{name:12} median {memory[name]['median']:8.1f} us/call")
        off, sqlite = memory["ours_us_ledger_off"], memory["ours_us_ledger_sqlite"]
        print(f"ours ledger=off {off:.1f} us   ledger=sqlite {sqlite:.1f} us")
        return

    with FakeServerProcess() as fake, tempfile.TemporaryDirectory() as ledger_dir:
        results: dict[str, Any] = {"benchmark": "function_overhead", "environment": environment()}
        results["import_s"] = round(import_time(), 4)
        for kind in ("functions-framework", "serve"):
            times = [cold_start(kind, fake.url, ledger_dir) for _ in range(starts)]
            results[f"cold_start_s[{kind}]"] = {
                "median": round(statistics.median(times), 3),
                "all": [round(t, 3) for t in times],
            }
        results["in_memory"] = asyncio.run(in_memory(rounds, calls))
        for target, ledger in (("noop", "off"), ("chat", "off"), ("chat", "sqlite")):
            results[f"overhead[{target},ledger={ledger}]"] = asyncio.run(
                overhead(fake.url, target, ledger, rounds, calls)
            )

    rows = [["chat module import (fresh interpreter)", f"{results['import_s'] * 1000:.0f} ms", "-"]]
    for kind in ("functions-framework", "serve"):
        median = results[f"cold_start_s[{kind}]"]["median"]
        rows.append(
            [
                f"cold start to first chat answer, {kind}",
                f"{median * 1000:.0f} ms",
                "ok" if median <= 0.5 else "MISSED (target 500 ms)",
            ]
        )
    floor = results["overhead[noop,ledger=off]"]
    rows.append(
        ["noop function (serving stack floor): wall added", f"{floor['added_wall_us_paired_median']:.0f} us", "-"]
    )
    rows.append(["noop function: function CPU per call", f"{floor['function_cpu_us_per_call']:.0f} us", "-"])
    for ledger in ("off", "sqlite"):
        data = results[f"overhead[chat,ledger={ledger}]"]
        ours = data["function_cpu_us_per_call"] - floor["function_cpu_us_per_call"]
        rows.append(
            [f"chat, ledger={ledger}: wall added vs direct", f"{data['added_wall_us_paired_median']:.0f} us", "-"]
        )
        rows.append(
            [f"chat, ledger={ledger}: function CPU per call", f"{data['function_cpu_us_per_call']:.0f} us", "-"]
        )
        rows.append(
            [
                f"chat, ledger={ledger}: CPU above the noop floor",
                f"{ours:.0f} us",
                "ok" if ours <= 500 else "MISSED (target 500 us)",
            ]
        )
    memory = results["in_memory"]
    for ledger in ("off", "sqlite"):
        ours = memory[f"ours_us_ledger_{ledger}"]
        rows.append(
            [
                f"in memory: our pipeline per chat call, ledger={ledger}",
                f"{ours:.0f} us",
                "ok" if ours <= 500 else "MISSED (target 500 us)",
            ]
        )
    rows.append(
        ["in memory: upstream client call (httpx, mock transport)", f"{memory['client']['median']:.0f} us", "-"]
    )
    rows.append(["in memory: noop function over ASGI", f"{memory['noop']['median']:.0f} us", "-"])
    print_table(["measure", "value", "target"], rows)
    print(f"\nresults: {write_results('function_overhead' + ('.quick' if args.quick else ''), results)}")


if __name__ == "__main__":
    main()

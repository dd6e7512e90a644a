"""Cold start: process start to the first 200, and idle RSS once started (hand-run, loopback only).

Runs each configuration ``--runs`` times (interleaved) against a fake OpenRouter in its own process:

* ``serve-off``: ``openrouter-functions serve`` with ``LEDGER_BACKEND=off``;
* ``serve-sqlite``: the same with the SQLite ledger (in a temporary folder);
* ``ff-health``: a bare ``functions-framework --asgi --target health`` (as deployed).

For each it reports the median seconds from ``Popen`` to the first ``GET /health`` 200, from ``Popen`` to
the first ``POST /chat`` 200 in a fresh process (chat the first request), the CPU used by then (summed
over the process tree: less noisy than wall time on a shared machine), and RSS (VmRSS of the tree's
largest process) when the port first accepts a connection and one second after the first health 200.

    .venv/bin/python bench/cold_start.py --runs 5
    .venv/bin/python bench/cold_start.py --runs 5 --compare /path/to/older/checkout   # interleaved A/B
    .venv/bin/python bench/cold_start.py --instructions [--compare ...]              # ~2 min per tree

``--instructions`` counts instead the CPU instructions (valgrind's callgrind; the Debian ``valgrind``
package) one process spends loading the app and answering its first request in-process (no socket, no
server): serve's app then ``GET /health``; functions-framework's ASGI app of ``health`` then ``GET
/health``; serve's app then ``POST /chat``. The count barely moves between runs however busy the
machine is, so it shows a change of a few per cent that wall and CPU times (varying by tens of per cent
on a shared VM) cannot.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SECRET = "bench-cold-start-secret-0123456789abcdef"
API_KEY = "sk-or-v1-bench-0000000000000000"
CHAT_BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token() -> str:
    now = int(time.time())
    claims = {"role": "authenticated", "sub": "00000000-0000-4000-8000-000000000001", "aud": "authenticated"}
    return jwt.encode(claims | {"iat": now, "exp": now + 3600}, SECRET, algorithm="HS256")


def request(port: int, method: str, path: str, body: bytes | None = None) -> int | None:
    """The status of one request, or None while nothing listens yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token()}"} if body else {}
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
        return None
    finally:
        conn.close()


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (functions-framework --asgi serves from a forked gunicorn worker)."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += tree(int(child))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process tree has used so far (less noisy than wall time on a shared machine)."""
    total = 0
    for each in tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """VmRSS of the largest process in the tree (the one serving)."""
    largest = 0
    for each in tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                largest = max(largest, int(line.split()[1]))
    return largest / 1024


def command(config: str, port: int, root: Path) -> list[str]:
    if config == "ff-health":
        source = str(root / "functions" / "health" / "main.py")
        return [str(VENV_BIN / "functions-framework"), "--asgi", "--target", "health", "--source", source]
    return [str(VENV_BIN / "openrouter-functions"), "serve", "--port", str(port)]


def environment(config: str, port: int, upstream: str, folder: str, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "SUPABASE_", "LEDGER_"))}
    env |= {
        "OPENROUTER_API_KEY": API_KEY,
        "OPENROUTER_BASE_URL": upstream,
        "SUPABASE_JWT_SECRET": SECRET,
        "PORT": str(port),
        "PYTHONPATH": str(root / "shared"),
        "LEDGER_BACKEND": "sqlite" if config == "serve-sqlite" else "off",
        "LEDGER_SQLITE_PATH": os.path.join(folder, "ledger.sqlite3"),
    }
    return env


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def one(config: str, first: str, upstream: str, root: Path) -> tuple[float, float, float, float]:
    """(seconds to the first 200 of ``first``, CPU seconds by then, RSS in MB one second later, and RSS
    when the port first accepted a connection, before any request)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command(config, port, root),
            env=environment(config, port, upstream, folder, root),
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            call: Callable[[], int | None] = (
                (lambda: request(port, "GET", "/health"))
                if first == "health"
                else (lambda: request(port, "POST", "/chat", CHAT_BODY))
            )
            while not listening(port):
                if proc.poll() is not None:
                    raise RuntimeError(f"{config} exited with {proc.returncode}")
                time.sleep(0.002)
            at_listen = rss_mb(proc.pid)
            while (status := call()) is None:
                if proc.poll() is not None:
                    raise RuntimeError(f"{config} exited with {proc.returncode}")
                time.sleep(0.002)
            elapsed = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid)
            if status != 200:
                raise RuntimeError(f"{config} {first}: {status}")
            time.sleep(1.0)
            return elapsed, cpu, rss_mb(proc.pid), at_listen
        finally:
            proc.terminate()
            proc.wait(10)


# One process: load the app as the configuration does, answer one request in-process, exit 0 on a 200.
FIRST_REQUEST = r"""
import asyncio, json, sys

shape, folder, token = sys.argv[1], sys.argv[2], sys.argv[3]


async def main():
    if shape.startswith("serve"):
        from openrouter_devtools.serve import build_app, find_functions_dir

        app = build_app(find_functions_dir(folder))
    else:
        from functions_framework.aio import create_asgi_app

        app = create_asgi_app("health", f"{folder}/health/main.py")
    body, headers = b"", []
    if shape.endswith("chat"):
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode())]
    scope = {
        "type": "http", "method": "POST" if body else "GET", "path": "/chat" if body else "/health",
        "root_path": "", "headers": headers, "query_string": b"", "http_version": "1.1", "scheme": "http",
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
    }
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    from openrouter_functions.runtime import close_runtime

    await close_runtime()
    sys.exit(0 if sent[0]["status"] == 200 else 1)


asyncio.run(main())
"""
INSTRUCTION_SHAPES = ("serve-health", "ff-health", "serve-chat")


def instructions(shape: str, upstream: str, root: Path) -> int:
    """CPU instructions (callgrind) of one process loading the app and answering its first request."""
    env = environment("serve-off", 0, upstream, tempfile.gettempdir(), root)
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    done = subprocess.run(
        [*valgrind, sys.executable, "-c", FIRST_REQUEST, shape, str(root / "functions"), token()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{shape} in {root}: exit {done.returncode}\n{done.stderr[-2000:]}")
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError("no instruction count in valgrind's output")


def count_instructions(roots: dict[str, Path], upstream: str) -> None:
    """Each shape once per tree, the trees side by side (the count is deterministic to a fraction of a %)."""
    for shape in INSTRUCTION_SHAPES:
        counts = {label: instructions(shape, upstream, root) for label, root in roots.items()}
        line = "  ".join(f"{label or 'this:'} {count / 1e9:.3f} G" for label, count in counts.items())
        if len(counts) == 2:
            this, base = counts.values()
            line += f"  ({(this - base) / base:+.1%})"
        print(f"{shape:14s} instructions to the first 200: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--configs", default="serve-off,serve-sqlite,ff-health")
    parser.add_argument("--compare", type=Path, default=None, help="another tree with shared/, functions/")
    parser.add_argument("--instructions", action="store_true", help="count CPU instructions (valgrind) instead")
    args = parser.parse_args()
    roots = {"": ROOT} | ({"base:": args.compare.resolve()} if args.compare else {})
    configs = [label + c for label in roots for c in args.configs.split(",")]
    fake_port = free_port()
    fake = subprocess.Popen(
        [sys.executable, "-m", "openrouter_devtools.fake_upstream", "--port", str(fake_port), "--api-key", API_KEY],
        env={**os.environ, "PYTHONPATH": str(ROOT / "shared")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upstream = f"http://127.0.0.1:{fake_port}/api/v1"
    try:
        while request(fake_port, "GET", "/") is None:
            time.sleep(0.01)
        if args.instructions:
            count_instructions(roots, upstream)
            return 0
        results: dict[str, dict[str, list[float]]] = {
            c: {"health": [], "health_cpu": [], "chat": [], "chat_cpu": [], "rss": [], "rss0": []} for c in configs
        }
        for _ in range(args.runs):
            for labelled in configs:
                label, _, config = labelled.rpartition(":")
                root = roots[label + ":" if label else ""]
                seconds, cpu, rss, rss0 = one(config, "health", upstream, root)
                results[labelled]["rss0"].append(rss0)
                results[labelled]["health"].append(seconds)
                results[labelled]["health_cpu"].append(cpu)
                results[labelled]["rss"].append(rss)
                if config != "ff-health":
                    seconds, cpu, _, _ = one(config, "chat", upstream, root)
                    results[labelled]["chat"].append(seconds)
                    results[labelled]["chat_cpu"].append(cpu)
        for config, series in results.items():
            med = {k: statistics.median(v) for k, v in series.items() if v}
            line = f"{config:18s} first /health 200 {med['health']:.3f}s (cpu {med['health_cpu']:.2f}s)"
            if series["chat"]:
                line += f"  first /chat 200 {med['chat']:.3f}s (cpu {med['chat_cpu']:.2f}s)"
            line += f"  RSS at listen {med['rss0']:.1f} MB, idle after /health {med['rss']:.1f} MB"
            print(line, " runs:", [round(x, 3) for x in series["health"]])
    finally:
        fake.terminate()
        fake.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

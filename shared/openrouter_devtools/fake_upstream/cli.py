"""``openrouter-functions fake-upstream`` and ``python -m openrouter_devtools.fake_upstream``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .server import FakeOpenRouter

__all__ = ["add_arguments", "main", "run"]


async def _serve(fake: FakeOpenRouter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake OpenRouter listening on {fake.url}", flush=True)
        await stop.wait()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's options, shared by ``main`` and ``openrouter-functions fake-upstream``."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787, 0 = any free port)")
    parser.add_argument("--api-key", default=None, help="require this bearer token (default: any non-empty)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE chunks")


def run(args: argparse.Namespace) -> int:
    """Serve with the options of :func:`add_arguments` until SIGINT/SIGTERM; returns the exit code."""
    fake = FakeOpenRouter(args.host, args.port, api_key=args.api_key, chunk_delay=args.chunk_delay)
    try:
        asyncio.run(_serve(fake))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"fake OpenRouter: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the fake OpenRouter server until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="fake-openrouter", description="Fake OpenRouter API server (loopback).")
    add_arguments(parser)
    return run(parser.parse_args(argv))

"""What the Edge front door tests share: the serve's settings and the Deno front door as a process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from e2e_procs import clean_env, cli

from helpers import free_port
from procs import Process

__all__ = ["ALLOWED_ORIGIN", "RPM", "edge_process"]

# The serve behind the front door: one web origin allowed (so CORS answers show the Origin got through)
# and a small per-minute limit (so a 429 with Retry-After is a few calls away; every test is its own user).
ALLOWED_ORIGIN = "http://app.example"
RPM = 5


@contextlib.contextmanager
def edge_process(functions_url: str, name: str = "edge") -> Iterator[Process]:
    """``openrouter-functions edge`` (Deno) on a free port forwarding to ``functions_url``; stopped after.

    Ready once it printed its banner: it answers at once then, whatever the state of ``functions_url``.
    """
    port = free_port()
    argv = cli("edge", "--host", "127.0.0.1", "--port", str(port), "--functions-url", functions_url)
    process = Process(name, argv, clean_env(), port)
    try:
        process.wait_for_output("openrouter-functions edge: serving", timeout=30.0)  # first run compiles
        yield process
    finally:
        process.stop()

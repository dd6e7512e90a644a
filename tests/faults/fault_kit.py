"""What the fault tests share: function servers of both kinds, streams read in threads, ledger checks."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from e2e_procs import BIN, cli

from helpers import HOST, free_port, mint
from procs import Process

__all__ = ["SERVERS", "StreamReader", "ledger_query", "new_user", "server_process", "wait_for"]

SERVERS = ("serve", "functions-framework")


def new_user() -> str:
    """A user of its own per request, so each request's ledger row is found by its user."""
    return str(uuid.uuid4())


@contextlib.contextmanager
def server_process(kind: str, env: Mapping[str, str], *, function: str = "chat") -> Iterator[tuple[Process, str]]:
    """``serve`` (the function at ``/<function>``) or a bare ``functions-framework`` process (at ``/``):
    the process and the function's URL, once it answers."""
    port = free_port()
    if kind == "serve":
        process = Process("serve", cli("serve", "--port", str(port)), env, port)
        url, ready, accept = f"{process.base_url}/{function}", "/health", (200,)
    else:
        argv = [
            str(BIN / "functions-framework"),
            *("--target", function, "--source", f"functions/{function}/main.py"),
            *("--host", HOST, "--port", str(port)),
        ]
        process = Process(f"functions-framework {function}", argv, env, port)
        url, ready, accept = process.base_url, "/", (405,)  # chat refuses GET: it is up
    try:
        process.wait_ready(ready, accept=accept)
        yield process, url
    finally:
        process.stop()


@dataclass
class StreamReader:
    """One streamed chat request read to its end in a thread; ``started`` once the first event arrived."""

    url: str
    user: str
    body: dict[str, Any]
    timeout: float = 30.0
    status: int | None = None
    text: str = ""
    error: BaseException | None = None
    started: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StreamReader:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        pieces: list[str] = []
        try:
            with (
                httpx.Client(timeout=self.timeout) as http,
                http.stream(
                    "POST", self.url, json=self.body, headers={"Authorization": f"Bearer {mint(sub=self.user)}"}
                ) as response,
            ):
                self.status = response.status_code
                for chunk in response.iter_text():
                    pieces.append(chunk)
                    if "data:" in chunk:
                        self.started.set()
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
        finally:
            self.text = "".join(pieces)
            self.started.set()

    def join(self, timeout: float) -> bool:
        """Whether the request ended within ``timeout`` seconds."""
        assert self._thread is not None
        self._thread.join(timeout)
        return not self._thread.is_alive()


def ledger_query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the embedded ledger file (read after the servers wrote it)."""
    with contextlib.closing(sqlite3.connect(path, timeout=5.0)) as db:
        return list(db.execute(sql, args).fetchall())


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())

"""What the end-to-end tests run: a scrubbed environment, ``openrouter-functions`` processes, the fake
upstream's control endpoints, the embedded ledger's rows. The process plumbing is ``procs``."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers import HEALTH_TOKEN, HOST, JWT_SECRET, free_port
from procs import Process

__all__ = [
    "BIN",
    "UPSTREAM_KEY",
    "FakeUpstream",
    "Served",
    "clean_env",
    "cli",
    "fake_upstream_process",
    "functions_env",
    "serving",
]

BIN = Path(sys.executable).parent
UPSTREAM_KEY = "sk-or-v1-e2e"

# Variables the product (or functions-framework) reads; never inherited from the developer's shell.
_SCRUBBED_PREFIXES = (
    "OPENROUTER_",
    "SUPABASE_",
    "FUNCTION_",
    "GUNICORN_",
    "LEDGER_",
    "DEFAULT_",
    "QUOTA_",
    "METRICS_",
    "HEALTH_",
    "PROMETHEUS_",
    "REQUEST_LOG_",
)
_SCRUBBED = frozenset(
    {
        "K_SERVICE",
        "PORT",
        "HOST",
        "DEBUG",
        "DATABASE_URL",
        "ALLOWED_ORIGINS",
        "ALLOWED_MODELS",
        "MAX_BODY_BYTES",
        "MAX_OUTPUT_TOKENS",
        "PROMPT_GUARD",
        "LOG_PROMPTS",
        "HEALTH_CACHE_SECONDS",
        "OFFLINE_MODE",
        "ALLOW_ANONYMOUS_USERS",
        "ENV_FILE",
        "WORKERS",
    }
)


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without any product configuration, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _SCRUBBED and not key.startswith(_SCRUBBED_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def functions_env(upstream_port: int, ledger_dir: Path) -> dict[str, str]:
    """Env for a function process that talks to the fake upstream and accepts ``helpers.mint()`` tokens.

    The embedded SQLite ledger goes to ``ledger_dir`` (never the repository's working copy).
    """
    return clean_env(
        LEDGER_SQLITE_PATH=str(ledger_dir / "ledger.sqlite3"),
        OPENROUTER_API_KEY=UPSTREAM_KEY,
        OPENROUTER_BASE_URL=f"http://{HOST}:{upstream_port}/api/v1",
        SUPABASE_JWT_SECRET=JWT_SECRET,
        HEALTH_CACHE_SECONDS="0",
        HEALTH_TOKEN=HEALTH_TOKEN,
        OPENROUTER_MAX_RETRIES="1",
    )


def cli(*args: str) -> list[str]:
    """``openrouter-functions <args>`` through the interpreter running the tests."""
    return [sys.executable, "-m", "openrouter_devtools.cli", *args]


@contextlib.contextmanager
def serving(name: str, env: Mapping[str, str], *, accept: Sequence[int] = (200,)) -> Iterator[Process]:
    """``openrouter-functions serve`` on a free port, once ``/health`` answers one of ``accept``; stopped after."""
    port = free_port()
    process = Process(name, cli("serve", "--port", str(port)), env, port)
    try:
        process.wait_ready("/health", accept=accept)
        yield process
    finally:
        process.stop()


@dataclass(frozen=True)
class Served:
    """A running function server: its base URL and its embedded SQLite ledger file."""

    url: str
    ledger: Path

    def ledger_rows(self, sql: str, *args: Any, expect: int = 1, timeout: float = 5.0) -> list[sqlite3.Row]:
        """Rows of ``sql`` once there are at least ``expect`` (the ledger is written after the reply)."""
        deadline = time.monotonic() + timeout
        rows: list[sqlite3.Row] = []
        while time.monotonic() < deadline:
            if self.ledger.exists():
                with contextlib.closing(sqlite3.connect(self.ledger, timeout=2.0)) as db:
                    db.row_factory = sqlite3.Row
                    try:
                        rows = db.execute(sql, args).fetchall()
                    except sqlite3.OperationalError:  # tables not created yet
                        rows = []
                if len(rows) >= expect:
                    return rows
            time.sleep(0.05)
        return rows


@dataclass
class FakeUpstream:
    """The fake OpenRouter process and its control endpoints."""

    process: Process

    @property
    def port(self) -> int:
        assert self.process.port is not None
        return self.process.port

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.process.base_url, timeout=5.0)

    def close(self) -> None:
        self.http.close()

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def script(self, *steps: dict[str, Any]) -> None:
        self._control("POST", "/_fake/script", list(steps))

    def requests(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = self._control("GET", "/_fake/requests")
        return records

    def chat_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests() if r["path"].endswith("/chat/completions")]

    def reset(self) -> None:
        self._control("POST", "/_fake/reset")


@contextlib.contextmanager
def fake_upstream_process(name: str = "fake-upstream") -> Iterator[FakeUpstream]:
    """The fake OpenRouter in a process of its own (requiring :data:`UPSTREAM_KEY`), once it answers."""
    port = free_port()
    process = Process(name, cli("fake-upstream", "--port", str(port), "--api-key", UPSTREAM_KEY), clean_env(), port)
    try:
        process.wait_ready("/api/v1/models")
        upstream = FakeUpstream(process)
        try:
            yield upstream
        finally:
            upstream.close()
    finally:
        process.stop()

"""Real processes on loopback for the end-to-end tests: free ports, bounded readiness, sure cleanup."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from helpers import JWT_SECRET, ROOT

BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
UPSTREAM_KEY = "sk-or-v1-e2e"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

# Variables the product (or functions-framework) reads; never inherited from the developer's shell.
_SCRUBBED_PREFIXES = ("OPENROUTER_", "SUPABASE_", "FUNCTION_", "GUNICORN_", "LEDGER_", "DEFAULT_", "QUOTA_")
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
    }
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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
        OPENROUTER_MAX_RETRIES="1",
    )


def cli(*args: str) -> list[str]:
    """``openrouter-functions <args>`` through the interpreter running the tests."""
    return [sys.executable, "-m", "openrouter_devtools.cli", *args]


class Process:
    """A child process whose stdout/stderr go to temporary files (no pipe can fill up and block it)."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], port: int | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self._final: tuple[str, str] | None = None  # the output, kept once the files are closed
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @staticmethod
    def _read(handle: IO[bytes]) -> str:
        handle.seek(0)
        return handle.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        return self._final[0] if self._final else self._read(self._out)

    def stderr(self) -> str:
        return self._final[1] if self._final else self._read(self._err)

    def describe(self) -> str:
        return (
            f"{self.name} ({' '.join(self.argv)}) returncode={self.popen.poll()}\n"
            f"--- stdout ---\n{self.stdout()[-4000:]}\n--- stderr ---\n{self.stderr()[-4000:]}"
        )

    def wait_ready(self, path: str, *, timeout: float = READY_TIMEOUT, accept: Sequence[int] = (200,)) -> None:
        """Poll ``GET path`` until it answers one of ``accept``; fail (with the logs) after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: object = None
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"process exited before it was ready:\n{self.describe()}")
                try:
                    response = http.get(self.base_url + path)
                except httpx.TransportError as exc:
                    last = exc
                else:
                    if response.status_code in accept:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                time.sleep(0.05)
        self.terminate()
        raise TimeoutError(f"not ready after {timeout}s (last: {last!r}):\n{self.describe()}")

    def wait_for_output(self, needle: str, *, timeout: float = READY_TIMEOUT) -> str:
        """Poll stdout until it contains ``needle``; return all of stdout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout()
            if needle in text:
                return text
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise TimeoutError(f"{needle!r} not printed within {timeout}s:\n{self.describe()}")

    def terminate(self) -> None:
        """SIGTERM this process's own group (it was started in a new session), without waiting."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it if it is still there after a bounded wait."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=STOP_TIMEOUT)
        if self._final is None:
            self._final = (self.stdout(), self.stderr())
            self._out.close()
            self._err.close()


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


def stop_all(processes: Sequence[Process]) -> None:
    """Signal every process first, then wait for each (shutdowns overlap)."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.stop()


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

"""What the hostile-input tests use to talk to the served functions and look behind them: loopback
listeners (JWKS, a canary), the :class:`Hostile` handle, and a strict reading of /metrics."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from e2e_procs import FakeUpstream

from helpers import HOST, mint
from jwks_support import JWKS_PATH
from procs import Process

HI = {"messages": [{"role": "user", "content": "Hello there"}]}
ALLOWED_MODELS = "openai/*,anthropic/*"
MAX_OUTPUT_TOKENS = 4096  # the default cap, left as it comes


# -- loopback listeners ------------------------------------------------------------------------------


class Listener(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 in a thread: answers ``JWKS_PATH`` with ``keys`` (if any), 404 otherwise,
    and counts every connection it accepts (a canary listener must end the run with none)."""

    daemon_threads = True

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys = keys
        self.connections = 0
        self.paths: list[str] = []
        super().__init__((HOST, 0), _ListenerHandler)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}"

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5.0)


class _ListenerHandler(BaseHTTPRequestHandler):
    server: Listener

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        found = self.server.keys is not None and self.path == JWKS_PATH
        body = json.dumps({"keys": self.server.keys} if found else {"error": "not found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


# -- the served functions ----------------------------------------------------------------------------


@dataclass
class Hostile:
    """The ``serve`` process under attack and what a test needs to talk to it and look behind it."""

    process: Process
    upstream: FakeUpstream
    ledger: Path
    issuer: str
    canary: Listener
    env: dict[str, str]
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def url(self) -> str:
        return self.process.base_url

    def token(self, user: str | None = None, **claims: Any) -> str:
        """A valid HS256 access token of this project for ``user`` (a fresh user when not given)."""
        return mint(**{"sub": user or str(uuid.uuid4()), "iss": self.issuer, **claims})

    def call(
        self, path: str, body: Any = None, *, raw: bytes | None = None, token: str | None = None
    ) -> httpx.Response:
        """POST ``body`` as JSON (or ``raw`` bytes as written) from a fresh user (or with ``token``)."""
        headers = {"Authorization": f"Bearer {token or self.token()}", "Content-Type": "application/json"}
        content = raw if raw is not None else json.dumps(body).encode()
        return self.http.post(self.url + path, content=content, headers=headers)

    def responsive(self) -> bool:
        """Whether the server is alive and answers ``/health`` within 2 s."""
        if self.process.popen.poll() is not None:
            return False
        try:
            return self.http.get(self.url + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def bystander_served(self) -> bool:
        """Whether another user's ordinary request is answered: no attack may spill over."""
        return self.call("/chat", HI).status_code == 200

    def chat_requests(self) -> list[dict[str, Any]]:
        """What reached the fake OpenRouter's chat endpoint (since the last reset)."""
        return self.upstream.chat_requests()

    def log_models(self) -> list[str | None]:
        """The ``model`` column of every request-log row (the ledger is written after the reply)."""
        time.sleep(0.2)
        with closing(sqlite3.connect(self.ledger, timeout=5.0)) as db:
            return [row[0] for row in db.execute("select model from request_log")]


# -- /metrics, read strictly -------------------------------------------------------------------------

_SAMPLE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? '
    r"(?:[-+]?(?:[0-9.]+(?:[eE][-+]?[0-9]+)?|Inf|NaN))(?: [0-9]+)?$"
)


def exposition_problems(text: str) -> list[str]:
    """Lines of a Prometheus text exposition that a scraper would reject."""
    return [line for line in text.splitlines() if line and not line.startswith("#") and not _SAMPLE.match(line)]

"""The Supabase Edge front door (``supabase/functions``) under real Deno, in front of a real ``serve``.

What a web app sees through it must be what the Python functions answer: bodies, SSE chunk by chunk,
status and headers (``X-Request-Id``, ``Retry-After``, ``WWW-Authenticate``, CORS for the forwarded
``Origin``). A caller hanging up mid-stream must reach the Python side (its request settles as
cancelled). Without a usable ``OPENROUTER_FUNCTIONS_URL`` the front door answers the functions'
envelope itself, with CORS headers, at once.

``@supabase/supabase-js`` itself is driven under Node by ``tests/js/invoke_through_edge.mjs``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from e2e_procs import FakeUpstream, Served, clean_env
from edge_support import ALLOWED_ORIGIN, RPM, edge_process
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from helpers import HOST, ROOT, mint

JS_DIR = ROOT / "tests" / "js"
MESSAGES = [{"role": "user", "content": "hello edge"}]
SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello edge"}]


def user_token() -> str:
    """A token for a user of its own (the per-minute limit is per user)."""
    return mint(sub=str(uuid.uuid4()))


def auth(token: str | None = None, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or user_token()}", **extra}


# --------------------------------------------------------------------------------------------------
# supabase-js under Node
# --------------------------------------------------------------------------------------------------


def _node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if os.environ.get("CI"):
            pytest.fail("node and npm are required on CI for the supabase-js tests (apt-get install nodejs npm)")
        pytest.skip("node/npm not installed: the supabase-js tests need Node 20+")
    return node, npm


def _ensure_node_modules(npm: str) -> None:
    """``npm ci`` in tests/js unless the pinned supabase-js is already installed there."""
    pinned = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["@supabase/supabase-js"]
    installed = JS_DIR / "node_modules" / "@supabase" / "supabase-js" / "package.json"
    if installed.is_file() and json.loads(installed.read_text())["version"] == pinned:
        return
    done = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def _websocket_flag(node: str) -> list[str]:
    """supabase-js builds its Realtime client at once and needs a global WebSocket: Node 22 has one, Node 20
    only with ``--experimental-websocket`` (otherwise it would need the ``ws`` package)."""
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    major = int(version.strip().lstrip("v").split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


def test_supabase_js_invoke_through_edge(edge: str, fake: FakeUpstream) -> None:
    node, npm = _node_tools()
    _ensure_node_modules(npm)
    env = clean_env(
        SUPABASE_URL=edge,
        SUPABASE_ANON_KEY=mint(role="anon", sub=None, email=None, is_anonymous=None, aud=None),
        ACCESS_TOKEN=user_token(),
    )
    done = subprocess.run(
        [node, *_websocket_flag(node), "--test", "--test-reporter=spec", "invoke_through_edge.mjs"],
        cwd=JS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = f"{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    assert "tests 6" in report and "pass 6" in report, report
    assert len(fake.chat_requests()) == 3  # chat, the stream and completion reached OpenRouter; errors did not


# --------------------------------------------------------------------------------------------------
# Through the front door with httpx and the openai SDK
# --------------------------------------------------------------------------------------------------


def test_chat_json_request_id_and_cors_preserved(edge: str, fake: FakeUpstream) -> None:
    request_id = f"edge-{uuid.uuid4().hex[:12]}"
    response = httpx.post(
        f"{edge}/functions/v1/chat",
        json={"messages": MESSAGES},
        headers=auth(**{"X-Request-Id": request_id, "Origin": ALLOWED_ORIGIN}),
        timeout=10.0,
    )

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello edge"
    assert response.headers["x-request-id"] == request_id
    # The Python side judged the forwarded Origin against its ALLOWED_ORIGINS.
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "origin" in response.headers["vary"].lower()


def test_preflight_forwarded_and_answered_exactly(edge: str) -> None:
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    allowed = httpx.options(f"{edge}/functions/v1/chat", headers={"Origin": ALLOWED_ORIGIN, **asked}, timeout=5.0)
    stranger = httpx.options(
        f"{edge}/functions/v1/chat", headers={"Origin": "https://evil.example", **asked}, timeout=5.0
    )

    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert "access-control-allow-origin" not in stranger.headers


def test_openai_sdk_sub_path_and_stream(edge: str, fake: FakeUpstream) -> None:
    """The openai SDK appends /chat/completions to its base URL: /functions/v1/chat/chat/completions."""
    with OpenAI(base_url=f"{edge}/functions/v1/chat", api_key=user_token(), max_retries=0, timeout=10.0) as sdk:
        completion = sdk.chat.completions.create(model="openai/gpt-4o", messages=SDK_MESSAGES)
        stream = sdk.chat.completions.create(model="openai/gpt-4o", messages=SDK_MESSAGES, stream=True)
        pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]

    assert completion.choices[0].message.content == "Echo: hello edge"
    assert "".join(pieces) == "Echo: hello edge"
    assert [r["path"] for r in fake.chat_requests()] == ["/api/v1/chat/completions"] * 2


def test_a_thread_and_its_stop_through_the_front_door(edge: str, fake: FakeUpstream) -> None:
    """docs/threads.md through Edge: the thread's headers come back (readable cross-origin) and
    ``invoke("chat/stop")``'s path, /functions/v1/chat/stop, reaches the chat function's stop."""
    headers = auth(Origin=ALLOWED_ORIGIN)
    body = {"thread_id": "new", "messages": [{"role": "user", "content": "through the door"}]}
    first = httpx.post(f"{edge}/functions/v1/chat", json=body, headers=headers, timeout=10.0)
    assert first.status_code == 200, first.text
    thread_id = first.headers["x-thread-id"]
    assert first.headers["x-message-id"]
    assert "X-Thread-Id" in first.headers["access-control-expose-headers"]
    again = {"thread_id": thread_id, "messages": [{"role": "user", "content": "and again"}]}
    second = httpx.post(f"{edge}/functions/v1/chat", json=again, headers=headers, timeout=10.0)
    assert second.headers["x-thread-id"] == thread_id
    assert [m["content"] for m in fake.chat_requests()[-1]["json"]["messages"]] == [
        "through the door",
        "Echo: through the door",
        "and again",
    ]
    stop = httpx.post(f"{edge}/functions/v1/chat/stop", json={"thread_id": thread_id}, headers=headers, timeout=10.0)
    assert stop.status_code == 200, stop.text
    assert stop.json() == {"thread_id": thread_id, "message_id": second.headers["x-message-id"], "status": "complete"}


def test_completion_and_health(edge: str, fake: FakeUpstream) -> None:
    completion = httpx.post(f"{edge}/functions/v1/completion", json={"prompt": "hi"}, headers=auth(), timeout=10.0)
    health = httpx.get(f"{edge}/functions/v1/health", timeout=10.0)

    assert completion.status_code == 200, completion.text
    assert completion.json()["text"] == "Echo: hi"
    assert health.status_code == 200
    assert health.json()["status"] == "ok"


def test_sse_arrives_incrementally(edge: str, fake: FakeUpstream) -> None:
    """The first content chunk reaches the caller long before the stream ends: nothing is buffered."""
    fake.script({"content": " ".join(["tick"] * 12), "chunk_delay": 0.1})  # ~1.3 s of stream
    arrivals: list[tuple[float, str]] = []
    body = {"messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=10.0) as http,
        http.stream("POST", f"{edge}/functions/v1/chat", json=body, headers=auth()) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))

    assert arrivals[-1][1] == "data: [DONE]"
    first_content = next(at for at, line in arrivals if "tick" in line)
    # Loose on purpose: ~1.2 s separate them when streamed; a buffering proxy would deliver all at once.
    assert arrivals[-1][0] - first_content > 0.5


def test_client_disconnect_mid_stream_cancels_the_python_side(edge: str, served: Served, fake: FakeUpstream) -> None:
    fake.script({"content": " ".join(["word"] * 100), "chunk_delay": 0.05})  # ~5 s if read to the end
    user = str(uuid.uuid4())
    body = {"messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=10.0) as http,
        http.stream("POST", f"{edge}/functions/v1/chat", json=body, headers=auth(mint(sub=user))) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and "word" in line:
                break  # real content arrived; now hang up
    # httpx closes the connection (the body was not read to the end); Deno cancels the body stream, which
    # closes its connection to serve; serve closes its upstream stream and settles the request as
    # cancelled. Read to the end, the stream would have settled as "ok" after ~5 s.
    rows = served.ledger_rows("select status, outcome from request_log where user_id = ?", user, timeout=8.0)
    assert [tuple(row) for row in rows] == [(200, "cancelled")]


def test_unauthorized_keeps_www_authenticate(edge: str) -> None:
    response = httpx.post(
        f"{edge}/functions/v1/chat", json={"messages": MESSAGES}, headers=auth("not-a-token"), timeout=5.0
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "invalid_token"


def test_rate_limit_keeps_retry_after(edge: str, fake: FakeUpstream) -> None:
    token = user_token()
    with httpx.Client(base_url=edge, headers=auth(token), timeout=10.0) as http:
        answers = [http.post("/functions/v1/chat", json={"messages": MESSAGES}) for _ in range(RPM + 1)]

    assert [a.status_code for a in answers] == [200] * RPM + [429]
    refused = answers[-1]
    assert refused.json()["error"]["type"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert len(fake.chat_requests()) == RPM


def test_unknown_path_is_the_envelope(edge: str) -> None:
    response = httpx.post(f"{edge}/functions/v1/nope", json={}, timeout=5.0)

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert response.headers["access-control-allow-origin"] == "*"


# --------------------------------------------------------------------------------------------------
# What exactly crosses the front door (a recording upstream instead of serve)
# --------------------------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    """Records each request; answers with hop-by-hop headers the front door must drop."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []  # one recorder at a time (reset by the fixture)

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        record: dict[str, Any] = {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": body,
        }
        self.seen.append(record)
        payload = b'{"ok": true}'
        self.send_response(207)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "keep-alive, X-Hop")
        self.send_header("X-Hop", "dropped")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("X-Kept", "kept")
        self.send_header("Retry-After", "7")
        self.end_headers()
        self.wfile.write(payload)

    def _read_chunked(self) -> bytes:
        data = b""
        while True:
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    do_GET = do_POST = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer((HOST, 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}", _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_forwarding_is_exact(recorder: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = recorder
    with edge_process(f"{base}/prefix/", "edge (recorder)") as process:
        response = httpx.post(
            f"{process.base_url}/functions/v1/chat/chat/completions?x=1&y=%2F",
            content=b'{"messages": []}',
            headers={
                "Authorization": "Bearer t0k",
                "apikey": "anon-key",
                "Content-Type": "application/json",
                "Accept": "text/event-stream",
                "X-Client-Info": "supabase-js/2",
                "X-Request-Id": "rid-1",
                "Origin": ALLOWED_ORIGIN,
                "Cookie": "session=secret",
                "X-Forwarded-For": "203.0.113.9",
                "X-Other": "not forwarded",
            },
            timeout=10.0,
        )
        health = httpx.get(f"{process.base_url}/functions/v1/health", timeout=10.0)
        # A body without a Content-Length (chunked) is streamed on as it comes.
        chunked = httpx.post(
            f"{process.base_url}/functions/v1/completion", content=iter([b'{"prompt":', b' "hi"}']), timeout=10.0
        )

    assert response.status_code == 207
    assert response.json() == {"ok": True}
    assert response.headers["x-kept"] == "kept"
    assert response.headers["retry-after"] == "7"
    assert "x-hop" not in response.headers
    assert "keep-alive" not in response.headers
    assert health.status_code == 207
    assert chunked.status_code == 207

    first, second, third = seen
    assert (first["method"], first["path"], first["body"]) == (
        "POST",
        "/prefix/chat/chat/completions?x=1&y=%2F",
        b'{"messages": []}',
    )
    headers = {k.lower(): v for k, v in first["headers"].items()}
    expected = {
        "authorization": "Bearer t0k",
        "apikey": "anon-key",
        "content-type": "application/json",
        "accept": "text/event-stream",
        "x-client-info": "supabase-js/2",
        "x-request-id": "rid-1",
        "origin": ALLOWED_ORIGIN,
    }
    assert {k: headers.get(k) for k in expected} == expected
    assert not {"cookie", "x-forwarded-for", "x-other"} & set(headers)
    assert (second["method"], second["path"]) == ("GET", "/prefix/health")
    assert (third["method"], third["path"], third["body"]) == ("POST", "/prefix/completion", b'{"prompt": "hi"}')
    assert {k.lower(): v for k, v in third["headers"].items()}.get("transfer-encoding") == "chunked"
    assert headers.get("content-length") == "16"  # a small body with a length goes on whole, with its length


# --------------------------------------------------------------------------------------------------
# Misconfiguration: the envelope with CORS headers, at once
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("functions_url", "status", "error_type"),
    [
        ("", 502, "front_door_misconfigured"),
        ("ftp://127.0.0.1/functions", 502, "front_door_misconfigured"),
        ("http://functions.example.com", 502, "front_door_misconfigured"),  # plain http beyond loopback
        (None, 503, "functions_unreachable"),  # a bound port nothing listens on: connection refused
    ],
    ids=["unset", "not-http", "plain-http", "unreachable"],
)
def test_misconfigured_or_unreachable_answers_the_envelope(
    functions_url: str | None, status: int, error_type: str
) -> None:
    with contextlib.ExitStack() as stack:
        if functions_url is None:
            closed = stack.enter_context(socket.socket())
            closed.bind((HOST, 0))  # held, never listening: no other process can answer there
            functions_url = f"http://{HOST}:{closed.getsockname()[1]}"
        process = stack.enter_context(edge_process(functions_url, f"edge ({error_type})"))
        started = time.monotonic()
        response = httpx.post(
            f"{process.base_url}/functions/v1/chat?marker=query-marker",
            json={"messages": MESSAGES},
            headers=auth(**{"X-Request-Id": "rid-misconfigured", "Origin": ALLOWED_ORIGIN}),
            timeout=5.0,
        )
        preflight = httpx.options(
            f"{process.base_url}/functions/v1/chat",
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type",
            },
            timeout=5.0,
        )
        elapsed = time.monotonic() - started
        logs = process.stdout() + process.stderr()

    assert response.status_code == status
    envelope = response.json()
    assert set(envelope) == {"error"}
    assert (set(envelope["error"]), envelope["error"]["code"], envelope["error"]["type"]) == (
        {"code", "type", "message"},
        status,
        error_type,
    )
    message = envelope["error"]["message"]
    assert message and "functions.example.com" not in message and "ftp" not in message  # no configured values
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-request-id"] == "rid-misconfigured"
    assert ("retry-after" in response.headers) == (status == 503)
    # A page's preflight succeeds, so the request after it can read the envelope above.
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "authorization, x-client-info, apikey, content-type"
    assert elapsed < 4.0
    # The log says what went wrong, without the caller's token or URL.
    assert ("did not answer" if status == 503 else "not configured") in logs
    assert "Bearer" not in logs and "query-marker" not in logs


# --------------------------------------------------------------------------------------------------
# The front door's own units under `deno test`, and the CLI's command line
# --------------------------------------------------------------------------------------------------


def test_deno_unit_tests() -> None:
    from openrouter_devtools.edge import edge_env, find_deno

    done = subprocess.run(
        [find_deno(), "test", "--no-prompt", "supabase/functions/"],
        cwd=ROOT,
        env=edge_env(None, clean_env()),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"


def test_edge_argv_has_narrow_permissions() -> None:
    from openrouter_devtools.edge import edge_argv

    argv = edge_argv(5999, "127.0.0.1", "https://europe-west1-p.cloudfunctions.net/", deno="deno")

    assert argv[:3] == ["deno", "run", "--no-prompt"]
    assert "--allow-net=127.0.0.1:5999,europe-west1-p.cloudfunctions.net:443" in argv
    assert "--allow-env=OPENROUTER_FUNCTIONS_URL,ALLOW_PLAIN_HTTP" in argv
    assert not any(arg in ("-A", "--allow-all") or arg.startswith(("--allow-read", "--allow-run")) for arg in argv)
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "5999"]

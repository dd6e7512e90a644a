"""``GET /metrics`` from a bare functions-framework process as the container image runs it: several
gunicorn workers (``WORKERS=2``), ``METRICS_ENABLED`` and ``PROMETHEUS_MULTIPROC_DIR`` set. Whichever
worker answers the scrape reports the requests every worker served, a stream that failed after its 200
as an error."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_procs import BIN, FakeUpstream, functions_env

from helpers import HOST, free_port, mint
from procs import Process

TOKEN = "scrape-token-for-the-e2e-test"
MESSAGES = [{"role": "user", "content": "count me"}]
PLAIN = 12


@pytest.fixture(scope="module")
def chat(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The chat function with two workers: its URL and its metrics directory (made by the function)."""
    metrics_dir = tmp_path_factory.mktemp("metrics") / "multiproc"
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("ledger"))
    env.update(WORKERS="2", METRICS_ENABLED="true", METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    port = free_port()
    argv = [
        str(BIN / "functions-framework"),
        *("--target", "chat", "--source", "functions/chat/main.py"),
        *("--host", HOST, "--port", str(port)),
    ]
    process = Process("functions-framework chat (2 workers)", argv, env, port)
    try:
        process.wait_ready("/", accept=(405,))
        yield process.base_url, metrics_dir
    finally:
        process.stop()


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match is None or match.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def test_every_worker_is_counted_and_a_broken_stream_is_an_error(chat: tuple[str, Path], fake: FakeUpstream) -> None:
    url, metrics_dir = chat
    auth = {"Authorization": f"Bearer {mint()}"}
    for _ in range(PLAIN):
        # A new connection each time, so the two workers share the requests.
        response = httpx.post(
            url + "/", headers=auth, json={"model": "openai/gpt-4o", "messages": MESSAGES}, timeout=10
        )
        assert response.status_code == 200, response.text
    fake.script({"fault": "midstream_error", "after": 2, "code": 502})
    broken = httpx.post(url + "/", headers=auth, json={"messages": MESSAGES, "stream": True}, timeout=10)
    assert broken.status_code == 200
    assert '"finish_reason":"error"' in broken.text

    assert httpx.get(url + "/metrics", timeout=10).status_code == 401  # METRICS_TOKEN is set
    writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")}
    for _ in range(6):  # each scrape on a new connection: either worker may answer; all say the same
        scrape = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = scrape.text
        # (the readiness probe's GET / was answered 405: a client_error, counted too)
        assert sample(text, "orf_requests_total", function="chat", status="200") == PLAIN + 1
        assert sample(text, "orf_requests_total", function="chat", outcome="ok") == PLAIN
        assert sample(text, "orf_requests_total", function="chat", outcome="error", status="200") == 1
        plain = sample(text, "orf_requests_total", function="chat") - 1  # all but the stream
        assert sample(text, "orf_request_duration_seconds_count", function="chat", stream="false") == plain
        assert sample(text, "orf_request_duration_seconds_count", function="chat", stream="true") == 1
        assert sample(text, "orf_time_to_first_token_seconds_count", function="chat") == 1
    # One set of files per worker that served a request: in practice both did (the kernel spreads new
    # connections), but the totals above hold either way, so one worker taking them all is no failure.
    assert 1 <= len(writers) <= 2

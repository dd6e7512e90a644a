"""metrics.py and metrics_route.py on their own: bounded labels, what a request's outcome is, the time to
first token, the /metrics route's switch and token, and prometheus_client's multi-process mode."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from starlette.requests import Request

from openrouter_functions.exchange import Exchange
from openrouter_functions.metrics import LABEL_CHARS, MAX_OVERFLOW, MAX_SERIES, OUTCOMES, Metrics
from openrouter_functions.metrics_route import metrics_enabled, metrics_scrape

# -- bounded labels ---------------------------------------------------------------------------------


def requests_lines(metrics: Metrics) -> list[str]:
    return [line for line in metrics.render().splitlines() if line.startswith("orf_requests_total{")]


def test_a_value_is_cut_and_made_encodable() -> None:
    metrics = Metrics()
    metrics.inc("orf_cost_usd_total", 0.25, function="chat", model="m" * 10_000)
    metrics.inc("orf_cost_usd_total", 0.5, function="chat", model="x\ud800\udfff")
    assert metrics.value("orf_cost_usd_total", function="chat", model="m" * LABEL_CHARS) == 0.25
    assert metrics.value("orf_cost_usd_total", function="chat", model="x\\ud800\\udfff") == 0.5
    text = metrics.exposition().decode("utf-8")  # never fails to encode
    assert 'model="x\\\\ud800\\\\udfff"' in text


def test_overflow_keeps_function_and_outcome_so_failures_stay_countable() -> None:
    metrics = Metrics()
    for i in range(MAX_SERIES):
        metrics.inc("orf_requests_total", function="chat", status="200", model=f"m-{i}", outcome="ok")
    for i in range(300):
        metrics.inc("orf_requests_total", function="chat", status="200", model=f"late-{i}", outcome="error")
        metrics.inc("orf_requests_total", function="chat", status="200", model=f"late-ok-{i}", outcome="ok")
    lines = requests_lines(metrics)
    assert len(lines) == MAX_SERIES + 2
    assert 'orf_requests_total{function="chat",model="other",outcome="error",status="other"} 300.0' in lines
    assert metrics.value("orf_requests_total", function="chat", outcome="error") == 300
    assert metrics.value("orf_requests_total", function="chat") == MAX_SERIES + 600


def test_overflow_series_are_capped_too() -> None:
    metrics = Metrics()
    for i in range(MAX_SERIES + MAX_OVERFLOW + 50):
        # a kept label with an open vocabulary (a caller bug): still bounded
        metrics.inc("orf_requests_total", function=f"f-{i}", status="200", model="m", outcome="ok")
    lines = requests_lines(metrics)
    assert len(lines) == MAX_SERIES + MAX_OVERFLOW + 1
    assert any(line.startswith('orf_requests_total{function="other",model="other",outcome="other"') for line in lines)


def test_a_metric_takes_exactly_its_labels() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="takes the labels function, model, outcome, status"):
        metrics.inc("orf_requests_total", function="chat", status="200", model="m")
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.inc("orf_nothing_total", function="chat")


def test_histograms_and_counters_render_as_prometheus_reads_them() -> None:
    metrics = Metrics()
    metrics.observe_latency(4.0, function="chat", stream="false")
    metrics.observe("orf_time_to_first_token_seconds", 0.2, function="chat")
    metrics.inc("orf_requests_total", function="chat", status="200", model="m", outcome="ok")
    text = metrics.render()
    assert "# TYPE orf_time_to_first_token_seconds histogram" in text
    assert 'orf_request_duration_seconds_bucket{function="chat",le="3.0",stream="false"} 0.0' in text
    assert 'orf_request_duration_seconds_bucket{function="chat",le="5.0",stream="false"} 1.0' in text
    assert 'orf_time_to_first_token_seconds_count{function="chat"} 1.0' in text
    assert "_created" not in text


# -- what a request's outcome is ---------------------------------------------------------------------


def exchange(status: int = 200, outcome: str = "ok", error_type: str | None = None, stream: bool = False) -> Exchange:
    ex = Exchange("chat", "r1")
    ex.status, ex.outcome, ex.error_type, ex.stream = status, outcome, error_type, stream
    return ex


@pytest.mark.parametrize(
    ("status", "outcome", "error_type", "expected"),
    [
        (200, "ok", None, "ok"),
        (204, "ok", None, "ok"),
        (400, "error", "invalid_request", "client_error"),
        (429, "error", "rate_limited", "client_error"),
        (502, "error", "upstream_error", "error"),
        (503, "error", "ledger_unavailable", "error"),
        (200, "upstream_error", "upstream_rate_limited", "error"),  # a stream that failed after its 200
        (200, "cancelled", None, "cancelled"),  # the caller hung up mid-stream
        (499, "cancelled", None, "cancelled"),
        (200, "cancelled", "shutting_down", "error"),  # a stream ended by the instance's shutdown
        (503, "cancelled", "shutting_down", "error"),
    ],
)
def test_caller_outcome(status: int, outcome: str, error_type: str | None, expected: str) -> None:
    assert expected in OUTCOMES
    assert exchange(status, outcome, error_type).caller_outcome() == expected


def test_time_to_first_token() -> None:
    plain = exchange()
    assert plain.time_to_first_token(plain.started + 5) is None
    stream = exchange(stream=True)
    stream.first_output = stream.started + 0.25
    assert stream.time_to_first_token(stream.started + 60) == pytest.approx(0.25)
    empty = exchange(stream=True)  # ended well without any output: its whole life
    assert empty.time_to_first_token(empty.started + 2) == pytest.approx(2)
    failed = exchange(outcome="upstream_error", stream=True)  # failed before any output: an error, not a latency
    assert failed.time_to_first_token(failed.started + 2) is None


def test_the_log_line_says_stream_ttft_and_failed(caplog: pytest.LogCaptureFixture) -> None:
    from log_lines import request_lines

    caplog.set_level("INFO", logger="openrouter_functions.request")
    failed = exchange(outcome="upstream_error", stream=True)
    failed.first_output = failed.started + 0.1
    failed.record()
    exchange().record()
    first, second = request_lines(caplog.records)
    assert (first["stream"], first["failed"], first["severity"]) == (True, True, "ERROR")
    assert first["ttft_ms"] == pytest.approx(100.0, abs=0.01)
    assert (second["stream"], second["failed"], second["ttft_ms"], second["severity"]) == (False, False, None, "INFO")


# -- the /metrics route --------------------------------------------------------------------------------


def request(path: str, method: str = "GET", root_path: str = "", token: str | None = None) -> Request:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path, "headers": headers}
    return Request(scope)


@pytest.mark.parametrize(("value", "on"), [("1", True), ("true", True), (" ON ", True), ("yes", True), ("", False)])
def test_metrics_enabled(value: str, on: bool) -> None:
    assert metrics_enabled({"METRICS_ENABLED": value}) is on
    assert metrics_enabled({}) is False


ON = {"METRICS_ENABLED": "true"}


@pytest.mark.parametrize(
    ("path", "root_path", "method", "answered"),
    [
        ("/metrics", "", "GET", True),
        ("/metrics/", "", "HEAD", True),
        ("/chat/metrics", "", "GET", True),  # a URL map that keeps the function's prefix
        ("/chat/metrics", "/chat", "GET", True),  # mounted under /chat (serve)
        ("/metrics", "", "POST", False),  # the function answers it (404)
        ("/completion/metrics", "", "GET", False),  # another function's prefix
        ("/v1/metrics", "", "GET", False),
        ("/", "", "GET", False),
        ("/v1/chat/completions", "", "GET", False),
    ],
)
def test_which_requests_are_scrapes(path: str, root_path: str, method: str, answered: bool) -> None:
    response = metrics_scrape(request(path, method, root_path), "chat", ON)
    assert (response is not None) is answered
    if response is not None:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_off_unless_enabled() -> None:
    assert metrics_scrape(request("/metrics"), "chat", {}) is None
    assert metrics_scrape(request("/metrics"), "chat", {"METRICS_ENABLED": "false"}) is None


def test_the_token_is_required_when_set() -> None:
    env = {**ON, "METRICS_TOKEN": "scrape-secret"}
    refused = metrics_scrape(request("/metrics"), "chat", env)
    assert refused is not None
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert json.loads(bytes(refused.body))["error"]["type"] == "unauthorized"
    wrong = metrics_scrape(request("/metrics", token="nope"), "chat", env)
    assert wrong is not None and wrong.status_code == 401
    good = metrics_scrape(request("/metrics", token="scrape-secret"), "chat", env)
    assert good is not None and good.status_code == 200


# -- several processes (gunicorn WORKERS) ----------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from openrouter_functions.metrics import METRICS, multiprocess_mode
    assert multiprocess_mode()
    for _ in range(int(sys.argv[1])):
        METRICS.inc("orf_requests_total", function="chat", status="200", model="m", outcome=sys.argv[2])
        METRICS.observe_latency(0.1, function="chat", stream="false")
    """
)
_SCRAPER = textwrap.dedent(
    """
    from openrouter_functions.metrics import METRICS
    print(METRICS.render())
    """
)


def test_multiprocess_mode_merges_every_process(tmp_path: Path) -> None:
    directory = tmp_path / "made-on-import"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}

    def run(code: str, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(_WORKER, "3", "ok")
    run(_WORKER, "2", "error")
    text = run(_SCRAPER)
    # a file per kind (counter, histogram) per process that wrote; none by the scraper
    assert len({path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db")}) == 2
    assert 'orf_requests_total{function="chat",model="m",outcome="ok",status="200"} 3.0' in text
    assert 'orf_requests_total{function="chat",model="m",outcome="error",status="200"} 2.0' in text
    assert 'orf_request_duration_seconds_count{function="chat",stream="false"} 5.0' in text

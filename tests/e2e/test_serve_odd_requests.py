"""Through ``serve``, every answer is the error envelope with CORS headers and a request id: odd methods,
framework paths below a function, unknown top-level paths and ``/metrics`` with a method it does not take."""

from __future__ import annotations

import httpx
import pytest

ODD_REQUESTS = [
    ("TRACE", "/chat", 405, "method_not_allowed", "POST, OPTIONS"),
    ("PROPFIND", "/completion", 405, "method_not_allowed", "POST, OPTIONS"),
    ("TRACE", "/health", 405, "method_not_allowed", "GET, POST, OPTIONS"),
    ("POST", "/metrics", 405, "method_not_allowed", "GET, OPTIONS"),
    ("DELETE", "/metrics", 405, "method_not_allowed", "GET, OPTIONS"),
    ("GET", "/chat/robots.txt", 404, "not_found", None),
    ("GET", "/completion/favicon.ico", 404, "not_found", None),
    ("POST", "/chat/no/such/path", 404, "not_found", None),
    ("GET", "/nowhere", 404, "not_found", None),
    ("TRACE", "/", 404, "not_found", None),
    ("PROPFIND", "/functions", 404, "not_found", None),
]


@pytest.mark.parametrize(("method", "path", "status", "kind", "allow"), ODD_REQUESTS)
def test_every_odd_request_gets_the_envelope(
    serve_url: str, method: str, path: str, status: int, kind: str, allow: str | None
) -> None:
    response = httpx.request(method, serve_url + path, headers={"Origin": "https://app.example"}, timeout=10.0)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (status, kind)
    assert response.headers.get("allow") == allow
    assert response.headers["access-control-allow-origin"] == "*"
    assert len(response.headers["x-request-id"]) == 32


def test_metrics_still_answers_get(serve_url: str) -> None:
    response = httpx.get(serve_url + "/metrics", timeout=10.0)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"

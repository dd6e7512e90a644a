"""``GET /metrics`` on a deployed function, where the deployment asks for it.

A function answers a scrape at ``/metrics`` and, behind a load balancer that keeps the prefix, at
``/<name>/metrics`` — its own routes stay as they are (no function has a ``metrics`` path). Only
``GET``/``HEAD`` are taken; any other method reaches the function, which refuses it as an unknown path.

``METRICS_ENABLED`` (``1``/``true``/``yes``/``on``; default off) turns it on: the container image sets it,
Cloud Functions leaves it off, where the endpoint would be public and where the JSON log line feeds
log-based metrics instead. ``METRICS_TOKEN``, when set, must come as ``Authorization: Bearer <token>``
(Prometheus: ``authorization: {credentials_file: ...}``); otherwise 401 in the envelope. ``serve`` answers
its top-level ``/metrics`` always, with the same token check.

A scrape is not a request of the function: no log line, no ledger row, no count in ``orf_requests_total``.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from .envelope import ApiError, error_response
from .metrics import CONTENT_TYPE, METRICS

__all__ = ["METRICS_PATH", "metrics_enabled", "metrics_scrape", "scrape_response"]

METRICS_PATH = "/metrics"
_TRUE = frozenset({"1", "true", "yes", "on"})


def metrics_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this deployment answers ``GET /metrics`` (``METRICS_ENABLED``)."""
    return environ.get("METRICS_ENABLED", "").strip().lower() in _TRUE


def _authorized(request: Request, environ: Mapping[str, str]) -> bool:
    token = environ.get("METRICS_TOKEN", "").strip()
    if not token:
        return True
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode())


def scrape_response(request: Request, environ: Mapping[str, str] = os.environ) -> Response:
    """The exposition, or 401 when ``METRICS_TOKEN`` is set and not presented."""
    if not _authorized(request, environ):
        refusal = ApiError(
            401,
            "unauthorized",
            "Send the metrics token as a bearer token.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
        return error_response(refusal)
    return Response(METRICS.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})


def metrics_scrape(request: Request, function: str, environ: Mapping[str, str] = os.environ) -> Response | None:
    """The answer to a scrape of this function, or ``None`` when the request is not one (the function
    answers it)."""
    path: str = request.scope.get("path", "/")
    if not path.rstrip("/").endswith(METRICS_PATH) or request.method not in ("GET", "HEAD"):
        return None  # the cheap test every request pays
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    path = path.rstrip("/")
    if path not in (METRICS_PATH, f"/{function}{METRICS_PATH}") or not metrics_enabled(environ):
        return None
    return scrape_response(request, environ)

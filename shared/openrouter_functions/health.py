"""``health``: can this instance serve? OpenRouter reachable, the ledger answering, configuration complete."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openrouter_service import __version__ as VERSION

from .envelope import ApiError, json_response
from .exchange import Exchange
from .pipeline import require_method, route
from .runtime import Runtime

__all__ = ["check_health"]


def _auth_mode(runtime: Runtime) -> str:
    settings = runtime.settings
    modes = [name for name, on in (("hs256", settings.supabase_jwt_secret), ("jwks", settings.jwks_url)) if on]
    return "+".join(modes) or "none"


async def _ledger_state(runtime: Runtime) -> dict[str, Any]:
    settings = runtime.settings
    mode = settings.ledger_failure_mode
    if settings.ledger_problem is not None:  # the backend cannot even be built, whatever the failure mode
        return {"ok": False, "backend": settings.resolved_ledger_backend, "failure_mode": mode}
    meter = runtime.meter
    return {"ok": await meter.check(), "backend": meter.name, "failure_mode": mode}


async def check_health(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    """200 when everything works, 503 naming what is down."""
    if route(request, "health"):
        raise ApiError(404, "not_found", "Unknown path; GET the function's URL.")
    require_method(request, "GET", "POST", "HEAD")
    probe, cached = await runtime.probe_upstream()
    problems = runtime.configuration_problems()
    ledger = await _ledger_state(runtime)
    down = [
        name
        for name, ok in (("upstream", probe.ok), ("ledger", ledger["ok"]), ("configuration", not problems))
        if not ok
    ]
    settings = runtime.settings
    body = {
        "status": "ok" if not down else "down",
        "down": down,
        "version": VERSION,
        "offline_mode": settings.offline_mode,
        "uptime_s": round(time.time() - runtime.started_at, 1),
        "checks": {
            "upstream": {
                "ok": probe.ok,
                "latency_ms": round(probe.latency_ms, 1),
                "checked_at": int(probe.checked_at),
                "cached": cached,
                **({"detail": probe.detail} if probe.detail else {}),
            },
            "ledger": ledger,
            "configuration": {
                "ok": not problems,
                "problems": problems,
                "model": settings.openrouter_model,
                "auth": _auth_mode(runtime),
                "prompt_guard": settings.prompt_guard,
            },
        },
    }
    status = 200 if not down else 503
    exchange.status = status
    return json_response(body, status, {"Cache-Control": "no-store"})

"""``health``: can this instance serve? OpenRouter accepts our key, the ledger answers, the configuration is complete.

Anyone may ask (load balancers, uptime checks): they get ``{"status": "ok" | "degraded" | "down"}`` and
the status code (200, 200, 503), nothing about how the instance is configured. The detail (which check
failed and why, the version, the model, the auth and guard modes, configuration problems) goes to a
caller with ``HEALTH_TOKEN`` as its bearer token or a service-role token, and to anyone in offline mode.

``degraded``: it serves, but the OpenRouter key has less than ``HEALTH_LOW_CREDITS_USD`` left under its
limit (calls will soon fail with 503 ``upstream_credits``).
"""

from __future__ import annotations

import hmac
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
    return {"ok": await runtime.check_ledger(), "backend": runtime.meter.name, "failure_mode": mode}


async def _wants_detail(request: Request, runtime: Runtime) -> bool:
    """Whether this caller may see the detail: ``HEALTH_TOKEN``, a service-role token, or offline mode."""
    settings = runtime.settings
    if settings.offline_mode:
        return True
    authorization = request.headers.get("authorization")
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    expected = settings.health_token.get_secret_value() if settings.health_token else None
    if expected and hmac.compare_digest(token.strip().encode(), expected.encode()):
        return True
    try:
        return (await runtime.authenticate(authorization)).is_service
    except Exception:  # any token that does not verify: a stranger, who gets the terse answer
        return False


async def check_health(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    """200 ``ok`` or ``degraded``, 503 ``down``; the detail only for monitors (see the module)."""
    if route(request, "health"):
        raise ApiError(404, "not_found", "Unknown path; GET the function's URL.")
    require_method(request, "GET", "POST", "HEAD")
    probe, cached = await runtime.probe_upstream()
    problems = runtime.configuration_problems()
    ledger = await _ledger_state(runtime)
    settings = runtime.settings
    down = [
        name
        for name, ok in (("upstream", probe.ok), ("ledger", ledger["ok"]), ("configuration", not problems))
        if not ok
    ]
    low = probe.ok and probe.limit_remaining is not None and probe.limit_remaining < settings.health_low_credits_usd
    status = "down" if down else "degraded" if low else "ok"
    code = 503 if down else 200
    exchange.status = code
    headers = {"Cache-Control": "no-store"}
    if not await _wants_detail(request, runtime):
        return json_response({"status": status}, code, headers)
    upstream: dict[str, Any] = {
        "ok": probe.ok,
        "latency_ms": round(probe.latency_ms, 1),
        "checked_at": int(probe.checked_at),
        "cached": cached,
        "credits_remaining_usd": probe.limit_remaining,
        "low_on_credits": low,
    }
    if probe.detail:
        upstream["detail"] = probe.detail
    body = {
        "status": status,
        "down": down,
        "degraded": ["upstream_credits"] if low else [],
        "version": VERSION,
        "offline_mode": settings.offline_mode,
        "uptime_s": round(time.time() - runtime.started_at, 1),
        "checks": {
            "upstream": upstream,
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
    return json_response(body, code, headers)

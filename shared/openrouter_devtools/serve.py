"""``openrouter-functions serve``: the three real functions on one port, plus ``/metrics``.

Each ``functions/<name>/main.py`` is loaded through functions-framework exactly as a deployment loads
it, and mounted at ``/<name>`` — the same paths as ``https://REGION-PROJECT.cloudfunctions.net/<name>``.

It listens with the limits a port open to anyone needs (:mod:`.listener`), and stops within the
functions' shutdown drain (``SHUTDOWN_DRAIN_SECONDS``; ``openrouter_functions.capacity``).
"""

from __future__ import annotations

import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.envelope import ApiError
from openrouter_functions.metrics import METRICS

from .listener import KEEP_ALIVE_TIMEOUT, LIMIT_CONCURRENCY, guarded_protocol

if TYPE_CHECKING:
    from openrouter_functions.config import Settings
    from openrouter_functions.exchange import Exchange
    from openrouter_functions.runtime import Runtime

__all__ = [
    "FUNCTIONS",
    "FunctionsRouter",
    "build_app",
    "find_functions_dir",
    "mint_dev_token",
    "serve",
]

FUNCTIONS = ("chat", "completion", "health")
DEV_USER_ID = "00000000-0000-4000-8000-000000000001"
OFFLINE_API_KEY = "sk-or-v1-offline-development-key"

# Past the drain, how long the server waits for the last settlements before it cancels what is left.
SETTLE_MARGIN = 5

ASGIApp = Callable[..., Any]


async def _answer_error(
    scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any], function: str, error: ApiError
) -> None:
    """``error`` as a function answers it: the envelope, CORS headers, a request id, a log line."""
    from openrouter_functions.pipeline import serve_request

    async def refuse(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
        raise error

    response = await serve_request(Request(scope, receive), function, refuse)
    await response(scope, receive, send)


class FunctionsRouter:
    """Plain ASGI: ``/<name>`` and ``/<name>/...`` go to that function's app, ``/metrics`` to metrics."""

    def __init__(self, apps: Mapping[str, ASGIApp]) -> None:
        self.apps = dict(apps)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "/")
        name = path.split("/", 2)[1] if path.count("/") >= 1 else ""
        if name == "metrics" and scope["type"] == "http":
            if scope.get("method") in ("GET", "HEAD"):
                response = Response(METRICS.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
                await response(scope, receive, send)
            else:
                refusal = ApiError(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, OPTIONS"})
                await _answer_error(scope, receive, send, "metrics", refusal)
            return
        app = self.apps.get(name)
        if app is None:
            known = ", ".join(f"/{n}" for n in self.apps)
            await _answer_error(
                scope, receive, send, "serve", ApiError(404, "not_found", f"No function here; try {known}.")
            )
            return
        prefix = f"/{name}"
        rest = path[len(prefix) :] or "/"
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + prefix
        child["path"] = child["root_path"] + rest
        await app(child, receive, send)

    async def _lifespan(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                from openrouter_functions.runtime import close_runtime

                await close_runtime()
                await send({"type": "lifespan.shutdown.complete"})
                return


def find_functions_dir(explicit: str | None = None) -> Path:
    """The folder holding ``<name>/main.py`` for each function."""
    candidates = (
        [Path(explicit)] if explicit else [Path.cwd() / "functions", Path(__file__).resolve().parents[2] / "functions"]
    )
    for candidate in candidates:
        if all((candidate / name / "main.py").is_file() for name in FUNCTIONS):
            return candidate
    raise SystemExit(f"Could not find functions/<name>/main.py (looked in {', '.join(map(str, candidates))}).")


def build_app(functions_dir: Path) -> FunctionsRouter:
    """Load each function with functions-framework and route to it by name."""
    from functions_framework import create_app

    apps = {
        name: create_app(name, str(functions_dir / name / "main.py"))  # type: ignore[no-untyped-call]
        for name in FUNCTIONS
    }
    return FunctionsRouter(apps)


def mint_dev_token(secret: str, *, user_id: str = DEV_USER_ID, hours: float = 24.0) -> str:
    """An HS256 access token shaped like Supabase's, for local development only."""
    import jwt

    now = int(time.time())
    claims = {
        "sub": user_id,
        "aud": "authenticated",
        "role": "authenticated",
        "email": "developer@localhost",
        "is_anonymous": False,
        "iat": now,
        "exp": now + int(hours * 3600),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


@contextmanager
def _offline_upstream(env: MutableMapping[str, str]) -> Iterator[str]:
    from .fake_upstream import FakeOpenRouter

    with FakeOpenRouter(chunk_delay=0.02).running_in_thread() as fake:
        secret = secrets.token_urlsafe(32)
        env.update(
            OPENROUTER_API_KEY=OFFLINE_API_KEY,
            OPENROUTER_BASE_URL=fake.url,
            SUPABASE_JWT_SECRET=secret,
            OFFLINE_MODE="true",
        )
        env.pop("SUPABASE_URL", None)
        env.pop("SUPABASE_JWKS_URL", None)
        yield secret


def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    functions_dir: str | None = None,
    *,
    limit_concurrency: int | None = None,
) -> int:
    """Run the local server until interrupted (``limit_concurrency``: :data:`LIMIT_CONCURRENCY` by default);
    returns the exit code."""
    from pydantic import ValidationError

    from openrouter_functions.config import Settings, on_cloud_runtime

    env = os.environ
    try:
        settings = Settings.from_env(env)
    except ValidationError as exc:  # names and reasons only: the values may be secrets
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        print(f"invalid configuration: {problems}", file=sys.stderr)
        return 2
    has_key, auth_configured = settings.openrouter_api_key_value() is not None, settings.auth_configured
    offline = not has_key and not auth_configured
    if offline and on_cloud_runtime(env):
        print(
            "refusing to start in offline mode on a cloud runtime (K_SERVICE is set): "
            "set OPENROUTER_API_KEY and SUPABASE_JWT_SECRET or SUPABASE_URL.",
            file=sys.stderr,
        )
        return 2
    if refusals := settings.refusals(env):  # unsafe configuration (config.Settings.refusals)
        print("refusing to start: " + "; ".join(refusals) + ".", file=sys.stderr)
        return 2
    folder = find_functions_dir(functions_dir)
    if offline:
        with _offline_upstream(env) as secret:
            token = mint_dev_token(secret)
            _print_offline_banner(host, port, token)
            return _run(folder, host, port, settings, limit_concurrency)
    if not has_key:
        print("warning: OPENROUTER_API_KEY is not set; chat and completion will answer 500.", file=sys.stderr)
    if not auth_configured:
        print("warning: no SUPABASE_JWT_SECRET/SUPABASE_URL; every token will be refused.", file=sys.stderr)
    print(f"openrouter-functions serving /chat /completion /health /metrics on http://{host}:{port}", flush=True)
    return _run(folder, host, port, settings, limit_concurrency)


def _run(folder: Path, host: str, port: int, settings: Settings, limit_concurrency: int | None) -> int:
    import uvicorn

    from openrouter_functions.runtime import reset_runtime

    reset_runtime()
    app = build_app(folder)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        http=guarded_protocol(limit_concurrency or LIMIT_CONCURRENCY, settings.allowed_origins),
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        # The drain itself is the functions' (capacity.py: SIGTERM refuses new calls, ends the running ones
        # after SHUTDOWN_DRAIN_SECONDS and settles them); this only bounds what is left after it.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_drain_seconds) + SETTLE_MARGIN,
    )
    with suppress(KeyboardInterrupt):  # a forced quit (a second Ctrl+C, or the drain's) re-raises SIGINT
        uvicorn.Server(config).run()
    return 0


def _print_offline_banner(host: str, port: int, token: str) -> None:
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    bar = "=" * 78
    print(
        f"{bar}\n"
        "  OFFLINE MODE — no OPENROUTER_API_KEY and no Supabase auth configured.\n"
        "  Answers come from a built-in FAKE OpenRouter; tokens are signed with a throwaway secret.\n"
        "  Never use this mode in production (it refuses to start on Cloud Run / Cloud Functions).\n"
        f"{bar}\n"
        f"  functions: {base}/chat  {base}/completion  {base}/health  {base}/metrics\n"
        f"  dev access token (24 h):\n    {token}\n"
        "  try:\n"
        f"    curl -s {base}/chat -H 'Authorization: Bearer {token}' \\\n"
        "      -H 'Content-Type: application/json' \\\n"
        '      -d \'{"messages":[{"role":"user","content":"Hello!"}]}\'\n'
        f"{bar}",
        flush=True,
    )

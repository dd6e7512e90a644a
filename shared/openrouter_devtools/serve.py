"""``openrouter-functions serve``: the three real functions on one port, plus ``/metrics``.

Each ``functions/<name>/main.py`` is loaded through functions-framework exactly as a deployment loads
it, and mounted at ``/<name>`` — the same paths as ``https://REGION-PROJECT.cloudfunctions.net/<name>``.

It listens with the limits a port open to anyone needs (:mod:`openrouter_functions.listener`), and stops within the
functions' shutdown drain (``SHUTDOWN_DRAIN_SECONDS``; ``openrouter_functions.capacity``).
"""

from __future__ import annotations

import gc
import math
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.envelope import ApiError
from openrouter_functions.listener import KEEP_ALIVE_TIMEOUT, LIMIT_CONCURRENCY, guarded_protocol
from openrouter_functions.metrics_route import scrape_response

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

# Offline tokens last 30 days and are re-minted when less than a day is left.
OFFLINE_TOKEN_HOURS = 30 * 24
OFFLINE_TOKEN_RENEW_SECONDS = 24 * 3600

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


# Where supabase-js and supabase-py ``functions.invoke(name)`` call: ``${SUPABASE_URL}/functions/v1/<name>``.
SUPABASE_FUNCTIONS_PREFIX = "/functions/v1"


class FunctionsRouter:
    """Plain ASGI: ``/<name>`` and ``/<name>/...`` go to that function's app, ``/metrics`` to metrics.

    ``/functions/v1/<name>/...`` is the same function, at the path Supabase's clients call, so
    ``createClient(LOCAL_URL, key).functions.invoke("chat")`` reaches it with no proxy. ``mounts`` adds
    other top-level names (offline mode's example page), each given the request with its prefix in
    ``root_path``.
    """

    def __init__(self, apps: Mapping[str, ASGIApp], mounts: Mapping[str, ASGIApp] | None = None) -> None:
        self.apps = dict(apps)
        self.mounts = dict(mounts or {})

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope.get("path", "/")
        base = ""
        if path == SUPABASE_FUNCTIONS_PREFIX or path.startswith(SUPABASE_FUNCTIONS_PREFIX + "/"):
            base, path = SUPABASE_FUNCTIONS_PREFIX, path[len(SUPABASE_FUNCTIONS_PREFIX) :] or "/"
        name = path.split("/", 2)[1]
        if not base and name in self.mounts:
            await self._forward(self.mounts[name], scope, receive, send, f"/{name}", path[len(name) + 1 :])
            return
        if name == "metrics" and scope["type"] == "http":
            if scope.get("method") in ("GET", "HEAD"):
                await scrape_response(Request(scope, receive))(scope, receive, send)
            else:
                refusal = ApiError(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, OPTIONS"})
                await _answer_error(scope, receive, send, "metrics", refusal)
            return
        app = self.apps.get(name)
        if app is None:
            known = ", ".join(f"{base}/{n}" for n in self.apps)
            await _answer_error(
                scope, receive, send, "serve", ApiError(404, "not_found", f"No function here; try {known}.")
            )
            return
        await self._forward(app, scope, receive, send, base + f"/{name}", path[len(name) + 1 :])

    @staticmethod
    async def _forward(
        app: ASGIApp,
        scope: dict[str, Any],
        receive: Callable[..., Any],
        send: Callable[..., Any],
        prefix: str,
        rest: str,
    ) -> None:
        """Hand the request to ``app`` as if it were mounted at ``prefix`` (``rest`` is what follows)."""
        child = dict(scope)
        child["root_path"] = scope.get("root_path", "") + prefix
        child["path"] = child["root_path"] + (rest or "/")
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


def build_app(functions_dir: Path, mounts: Mapping[str, ASGIApp] | None = None) -> FunctionsRouter:
    """Load each function with functions-framework and route to it by name."""
    from functions_framework import create_app

    from openrouter_functions.hosting import own_listener

    with own_listener():  # uvicorn with guarded_protocol listens here, never functions-framework's worker
        apps = {
            name: create_app(name, str(functions_dir / name / "main.py"))  # type: ignore[no-untyped-call]
            for name in FUNCTIONS
        }
    return FunctionsRouter(apps, mounts)


def mint_dev_token(secret: str, *, user_id: str = DEV_USER_ID, hours: float = 24.0, role: str = "authenticated") -> str:
    """An HS256 token shaped like Supabase's, for local development only: a signed-in user's access token,
    or with ``role="anon"`` the project's public anon key (no user)."""
    import jwt

    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now, "exp": now + int(hours * 3600)}
    if role == "authenticated":
        claims |= {"sub": user_id, "aud": "authenticated", "email": "developer@localhost", "is_anonymous": False}
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class OfflineCredentials:
    """Offline mode's signing secret, the developer's access token and the anon key, kept across restarts."""

    secret: str
    token: str
    anon_key: str
    folder: Path


def offline_credentials(folder: Path) -> OfflineCredentials:
    """The credentials stored in ``folder`` (created on first use, owner-only), renewing tokens near expiry.

    A token printed once keeps working after a restart, so a page or script set up with it goes on working.
    """
    import jwt

    folder.mkdir(parents=True, exist_ok=True)
    secret_file = folder / "offline-secret"
    secret = _read_private(secret_file)
    if secret is None or len(secret) < 32:
        secret = secrets.token_urlsafe(32)
        _write_private(secret_file, secret)

    def kept(name: str, role: str) -> str:
        path = folder / name
        token = _read_private(path)
        if token is not None:
            try:
                claims = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
            except jwt.PyJWTError:
                claims = {}
            if claims.get("role") == role and claims.get("exp", 0) > time.time() + OFFLINE_TOKEN_RENEW_SECONDS:
                return token
        token = mint_dev_token(secret, hours=OFFLINE_TOKEN_HOURS, role=role)
        _write_private(path, token)
        return token

    return OfflineCredentials(secret, kept("offline-token", "authenticated"), kept("offline-anon-key", "anon"), folder)


def _read_private(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


@contextmanager
def _offline_upstream(env: MutableMapping[str, str], secret: str) -> Iterator[str]:
    from .fake_upstream import FakeOpenRouter

    with FakeOpenRouter(chunk_delay=0.02).running_in_thread() as fake:
        env.update(
            OPENROUTER_API_KEY=OFFLINE_API_KEY,
            OPENROUTER_BASE_URL=fake.url,
            SUPABASE_JWT_SECRET=secret,
            OFFLINE_MODE="true",
        )
        env.pop("SUPABASE_URL", None)
        env.pop("SUPABASE_JWKS_URL", None)
        yield fake.url


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
        credentials = offline_credentials(Path(settings.ledger_sqlite_path).parent)
        with _offline_upstream(env, credentials.secret):
            _print_offline_banner(host, port, credentials)
            from .local_project import example_page_note, local_project_mounts  # the page at /app/, its tables

            print(example_page_note(host, port), flush=True)
            mounts = local_project_mounts(settings, credentials)
            return _run(folder, host, port, settings, limit_concurrency, mounts)
    if not has_key:
        print("warning: OPENROUTER_API_KEY is not set; chat and completion will answer 500.", file=sys.stderr)
    if not auth_configured:
        print("warning: no SUPABASE_JWT_SECRET/SUPABASE_URL; every token will be refused.", file=sys.stderr)
    print(f"openrouter-functions serving /chat /completion /health /metrics on http://{host}:{port}", flush=True)
    return _run(folder, host, port, settings, limit_concurrency)


def _run(
    folder: Path,
    host: str,
    port: int,
    settings: Settings,
    limit_concurrency: int | None,
    mounts: Mapping[str, ASGIApp] | None = None,
) -> int:
    import uvicorn

    from openrouter_functions.hosting import settle_heap
    from openrouter_functions.runtime import reset_runtime

    reset_runtime()
    app = build_app(folder, mounts)
    settle_heap()  # the functions are loaded: out of the collector's sight (see there)
    gc.enable()  # off since the command started (cli.main): nothing for it to free while modules load
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


def _print_offline_banner(host: str, port: int, credentials: OfflineCredentials) -> None:
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    token = credentials.token
    bar = "=" * 78
    print(
        f"{bar}\n"
        "  OFFLINE MODE — no OPENROUTER_API_KEY and no Supabase auth configured.\n"
        "  Answers come from a built-in FAKE OpenRouter; tokens are signed with a local secret.\n"
        "  Never use this mode in production (it refuses to start on Cloud Run / Cloud Functions).\n"
        f"{bar}\n"
        f"  functions: {base}/chat  {base}/completion  {base}/health  {base}/metrics\n"
        f"  supabase-js / supabase-py: createClient({base!r}, anon key) -> functions.invoke('chat')\n"
        f"  dev access token (kept in {credentials.folder / 'offline-token'}, renewed before it expires):\n"
        f"    {token}\n"
        f"  anon key ({credentials.folder / 'offline-anon-key'}):\n    {credentials.anon_key}\n"
        "  try:\n"
        f"    curl -s {base}/chat -H 'Authorization: Bearer {token}' \\\n"
        "      -H 'Content-Type: application/json' \\\n"
        '      -d \'{"messages":[{"role":"user","content":"Hello!"}]}\'\n'
        f"{bar}",
        flush=True,
    )

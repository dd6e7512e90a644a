"""How a function sits in functions-framework: every request reaches the function.

functions-framework 3.x routes an HTTP function for seven methods on every path, except GET (and HEAD)
of ``/robots.txt`` and ``/favicon.ico``, which it answers itself. Any other method (TRACE, PROPFIND, ...)
and those two paths get its plain-text pages: no envelope, no CORS headers, no log line. The app it
builds is out of reach of a function's code (it exists only after the function's module is loaded), so
:func:`adopt_functions_framework` wraps the app factory instead; ``functions/<name>/main.py`` calls it
before the app is built. The wrapped app hands those requests to the function, which answers them like
any other (404 or 405 in the envelope).

Without execution-id logging (``LOG_EXECUTION_ID`` unset, the default) the framework's layers above the
function do nothing a caller or our log can see: its router sends every path and method to the function,
its execution-id middleware only feeds that logging, and the function answers every error itself. So
then every HTTP request goes straight to the function, without building those layers' Request objects,
route matching and middleware per request (a sizeable share of a call's CPU). With execution-id logging
on, requests go through the framework as before (but for the paths above).

A host that listens itself (``openrouter-functions serve``: uvicorn with
:func:`.listener.guarded_protocol`) loads the functions inside :func:`own_listener`; functions-framework's
production worker never runs there, so it is neither imported (gunicorn: ~20 ms of a cold start) nor
guarded. Everything else is as in a deployment.

Once the functions are loaded, :func:`settle_heap` takes what startup built out of the cyclic garbage
collector's sight and makes its youngest collections rarer (see there): the collector's full passes over
every module and class had paused the event loop for 40-60 ms a few times a minute under load, the
largest part of the tail latency.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "YOUNG_COLLECTION_EVERY",
    "EveryRequestToFunction",
    "adopt_functions_framework",
    "own_listener",
    "settle_heap",
]

# What functions-framework's HTTP routes take (functions_framework/aio/__init__.py): other methods, and
# these paths for GET/HEAD, never reach the function through its router.
ROUTED_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"})
FRAMEWORK_PATHS = frozenset({"/robots.txt", "/favicon.ico"})

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Any], Callable[..., Any]], Awaitable[None]]
Function = Callable[[Request], Awaitable[Response]]


def _framework_answers(scope: Scope) -> bool:
    """Whether functions-framework's router would answer this request itself."""
    method: str = scope.get("method", "GET")
    if method not in ROUTED_METHODS:
        return True
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return method in ("GET", "HEAD") and path in FRAMEWORK_PATHS


class EveryRequestToFunction:
    """The framework's app, except that what its router would answer itself goes to the function."""

    def __init__(self, app: ASGIApp, function: Function, *, direct: bool = False) -> None:
        self.app = app
        self.function = function
        self.direct = direct  # every HTTP request straight to the function (no execution-id logging)

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http" and (self.direct or _framework_answers(scope)):
            response = await self.function(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


_host_listens = False
_heap_settled = False

# Net allocations of container objects between two collections of the youngest generation (CPython's
# default: 700). A request's objects die by reference count when it ends (errors included: envelope.let_go),
# so at 700 the collector ran every few dozen requests under load and found nothing to free.
YOUNG_COLLECTION_EVERY = 10_000


def settle_heap() -> None:
    """Once per process, when the functions are loaded: freeze every object alive now (modules, classes,
    functions: kept for the process's life) out of the cyclic collector's sight (:func:`gc.freeze`), and
    collect the youngest generation every :data:`YOUNG_COLLECTION_EVERY` net allocations.

    The collector's full passes walked every object start-up built (some 55,000): 40-60 ms with the event
    loop stopped, a few times a minute under load (the largest part of the p99 latency). Frozen, they are
    never walked again; they are freed by reference count as before, only a cycle among them is never
    collected. What survives a young collection waits for the older generations' (every 10 and 100 young
    ones), so requests must leave no cycles behind (``envelope.let_go``). Later calls do nothing.
    """
    global _heap_settled
    if _heap_settled:
        return
    _heap_settled = True
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, oldest)


@contextmanager
def own_listener() -> Iterator[None]:
    """Functions loaded inside this are served by a listener of the host's own, not functions-framework's
    production server (whose worker :func:`adopt_functions_framework` then leaves alone)."""
    global _host_listens
    before, _host_listens = _host_listens, True
    try:
        yield
    finally:
        _host_listens = before


def adopt_functions_framework() -> None:
    """Make every app functions-framework builds for an HTTP function pass all requests to the function,
    and its production server listen with our limits (:func:`.listener.guard_uvicorn_worker`: heads
    capped at 64 KiB and due within 10 s, idle connections closed after 5 s; not inside
    :func:`own_listener`).

    Not inside :func:`own_listener` either: :func:`settle_heap`, here called from ``main.py`` once the
    function's modules are loaded (a host that listens itself calls it once all its functions are).

    Idempotent. A functions-framework without the factory (another major version) is left as it is; the
    end-to-end tests would show its plain-text pages again.
    """
    import functions_framework.aio as aio

    if not _host_listens:
        from .listener import guard_uvicorn_worker

        guard_uvicorn_worker()
        settle_heap()

    build = getattr(aio, "_create_asgi_app_with_function", None)
    if build is None or getattr(build, "adopted", False):
        return

    def create(function: Function, signature_type: str, *args: Any, **kwargs: Any) -> Any:
        app = build(function, signature_type, *args, **kwargs)
        if signature_type != "http":
            return app
        id_logging = kwargs.get("enable_id_logging", args[0] if args else False)
        return EveryRequestToFunction(app, function, direct=not id_logging)

    create.adopted = True  # type: ignore[attr-defined]
    aio._create_asgi_app_with_function = create

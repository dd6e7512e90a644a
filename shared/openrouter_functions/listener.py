"""The listener: uvicorn's httptools protocol with the limits a port open to anyone needs.

uvicorn's httptools protocol has none of the first two: a request head is at most 64 KiB and must
arrive within 10 s of the connection or of its first byte; an idle keep-alive connection is closed
after 5 s; beyond a number of connections or requests (``--limit-concurrency``) a request is answered
503 ``overloaded``. Every refusal is the error envelope.

Both ways our functions listen use it: ``openrouter-functions serve`` passes it to uvicorn, and a
deployed function's functions-framework (gunicorn with ``uvicorn_worker.UvicornWorker``, Cloud Run's and
the Docker image's entry point) gets it from :func:`guard_uvicorn_worker`, which
``hosting.adopt_functions_framework`` calls when the function's module is loaded (before the server
starts its worker).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from starlette.requests import Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from openrouter_functions.capacity import overloaded
from openrouter_functions.cors import cors_headers
from openrouter_functions.envelope import ApiError, error_body, error_response

__all__ = [
    "HEAD_TIMEOUT",
    "KEEP_ALIVE_TIMEOUT",
    "LIMIT_CONCURRENCY",
    "MAX_HEAD_BYTES",
    "GuardedHttpToolsProtocol",
    "guard_uvicorn_worker",
    "guarded_protocol",
]

# What one connection may cost before it is a request.
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 5
# Connections (or requests) at once; above MAX_IN_FLIGHT (1000 by default), so that limit sheds calls first.
LIMIT_CONCURRENCY = 2048


def _raw_refusal(status: int, type: str, message: str, allowed_origins: Sequence[str]) -> bytes:
    """A whole HTTP/1.1 answer in the envelope, for a connection that never became a request."""
    body = json.dumps(error_body(ApiError(status, type, message)), separators=(",", ":")).encode()
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "connection": "close",
        **cors_headers(None, allowed_origins),
    }
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


class _CoalescingTransport:
    """The connection's transport, writing a response's head and body in one ``send``.

    uvicorn writes a response's status line and headers, then its body, as two writes: two system calls
    and two TCP segments per plain answer. Here a write is held until the next one (joined to it) or the
    end of the current turn of the event loop, whichever comes first, so nothing waits longer than that
    turn, and the order of bytes is unchanged. Everything else is the real transport's.
    """

    __slots__ = ("_flush_handle", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending
        if pending is None:
            if self._transport.is_closing():
                self._transport.write(data)  # asyncio's own handling of a write after close
                return
            self._pending = bytes(data)
            self._loop.call_soon(self._flush)
            return
        self._pending = None
        self._transport.write(pending + data)

    def writelines(self, chunks: Any) -> None:
        self.write(b"".join(chunks))

    def _flush(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._transport.write(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._pending or b"")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a public listener's limits.

    httptools buffers a header of any size before uvicorn sees it (8 connections with 64 MB headers
    took the server to 620 MB), and a connection that never completes a request head is never timed out
    (uvicorn's keep-alive timer starts only after a response). Here the head is counted as it arrives and
    refused past :data:`MAX_HEAD_BYTES` (431), and must be complete :data:`HEAD_TIMEOUT` seconds after
    the connection or its first byte (408; an idle connection is just closed). Beyond ``limit``
    connections or requests, a request is answered 503 ``overloaded`` in the envelope (uvicorn's own
    ``limit_concurrency`` answers in plain text), and so is a request the parser refuses (400).
    """

    limit: int = LIMIT_CONCURRENCY
    # None: the functions' own ALLOWED_ORIGINS, read when a refusal needs them (the deployed worker is
    # set up before any configuration is read).
    allowed_origins: Sequence[str] | None = None
    max_head_bytes: int = MAX_HEAD_BYTES
    head_timeout: float = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override] # as uvicorn's own
        super().connection_made(_CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._head_bytes = 0
        self._in_head = True
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # Counted after parsing: a chunk that completed the head (and began the body) is not the
            # head's. So a head holds at most the limit plus one read in memory.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "headers_too_large", f"Request headers are limited to {self.max_head_bytes} bytes.")
            elif self._head_timer is None:
                # A request head begun in this read and not complete in it: its clock starts now (in
                # the same turn of the loop as the head's first byte). A head that arrives whole, as
                # nearly all do, never needs a timer.
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._stop_head_timer()
        if len(self.connections) > self.limit or len(self.tasks) >= self.limit:
            app, self.app = self.app, _overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes or self.cycle is not None:
            self._refuse(408, "request_timeout", f"The request head must arrive within {self.head_timeout:g} s.")
        else:
            self.transport.close()  # an idle connection that never sent anything

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses (a NUL in the request line, broken framing): the envelope too."""
        self._refuse(400, "bad_request", "The request is not valid HTTP.")

    def _refuse(self, status: int, type: str, message: str) -> None:
        self._stop_head_timer()
        origins = self.allowed_origins if self.allowed_origins is not None else _configured_origins()
        self.transport.write(_raw_refusal(status, type, message, origins))
        self.transport.close()


async def _overloaded(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    from openrouter_functions.runtime import get_runtime

    response = error_response(overloaded())
    response.headers["connection"] = "close"
    origin = Request(scope).headers.get("origin")
    response.headers.update(cors_headers(origin, get_runtime().settings.allowed_origins))
    await response(scope, receive, send)


def _configured_origins() -> Sequence[str]:
    from openrouter_functions.runtime import get_runtime

    try:
        return get_runtime().settings.allowed_origins
    except Exception:  # a configuration that does not load: refuse without CORS headers
        return ()


def guard_uvicorn_worker() -> bool:
    """Give functions-framework's production server (gunicorn's ``uvicorn_worker.UvicornWorker``) this
    listener and keep-alive timeout. Idempotent; False when that worker is not installed (then
    functions-framework serves with plain uvicorn in debug mode only)."""
    try:
        from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]
    except ImportError:
        return False
    http = UvicornWorker.CONFIG_KWARGS.get("http")
    if not (isinstance(http, type) and issubclass(http, GuardedHttpToolsProtocol)):
        UvicornWorker.CONFIG_KWARGS = {
            **UvicornWorker.CONFIG_KWARGS,
            "http": GuardedHttpToolsProtocol,
            "timeout_keep_alive": KEEP_ALIVE_TIMEOUT,
        }
    return True


def guarded_protocol(limit: int, allowed_origins: Sequence[str]) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for one server: its concurrency limit and CORS origins."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limit": limit, "allowed_origins": tuple(allowed_origins)},
    )

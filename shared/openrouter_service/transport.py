"""The HTTP transport under the pooled client, chosen by measurement (bench/transport.py).

httpx's own pool (httpcore) scans every pooled connection on each request start and end; at 16
requests in flight it measured about 5x slower than aiohttp on our 2-core machines, 22x at 64, and its
CPU per call stalls every other request on the event loop. So the default is httpx-aiohttp's
transport; ``OPENROUTER_HTTP_TRANSPORT=httpx`` switches back.

httpx-aiohttp maps every aiohttp connection error to ``httpx.ConnectTimeout``; a refused connection or a
dropped one is not a timeout, so the errors are re-mapped here before the retry rule sees them. Invalid
HTTP (a garbled status line, headers or body framing) it does not map at all; here it becomes
``httpx.RemoteProtocolError``, as httpx's own transport calls it. The aiohttp error's text is never
passed on: it quotes our request headers, our key among them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx

__all__ = ["DEFAULT_MAX_CONNECTIONS", "default_transport", "max_connections", "pool_limits"]

DEFAULT_MAX_CONNECTIONS = 1000


def max_connections() -> int:
    """Upstream connections one process may open (``OPENROUTER_MAX_CONNECTIONS``, default 1000).

    High on purpose: a stream holds its connection for its whole life, and a call that waits for a free
    one waits silently (1,000 streams over 200 connections waited up to 41 s for a first byte). The
    functions refuse calls beyond this at once instead (``MAX_IN_FLIGHT``, capacity.py).
    """
    raw = os.environ.get("OPENROUTER_MAX_CONNECTIONS", "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"OPENROUTER_MAX_CONNECTIONS must be a positive integer, got {raw!r}")
    return value


def pool_limits() -> httpx.Limits:
    """The pooled client's limits: up to :func:`max_connections`, some of them kept alive between calls."""
    limit = max_connections()
    return httpx.Limits(max_connections=limit, max_keepalive_connections=min(limit, 64), keepalive_expiry=60.0)


def _invalid_http(exc: BaseException) -> bool:
    """True for aiohttp's ways of saying that upstream did not speak valid HTTP."""
    import aiohttp
    from aiohttp import http_exceptions

    return isinstance(
        exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError | http_exceptions.HttpProcessingError
    )


def _protocol_error(cause: BaseException) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"invalid HTTP from upstream ({cause.__class__.__name__})")


def _remap(exc: httpx.HTTPError) -> httpx.HTTPError:
    """The httpx error that says what actually happened to the aiohttp connection."""
    import aiohttp

    cause = exc.__cause__
    if isinstance(exc, httpx.ReadError) and isinstance(cause, aiohttp.ClientPayloadError):
        return _protocol_error(cause)  # a body cut short or badly framed: httpx's own transport says so too
    if not isinstance(exc, httpx.ConnectTimeout) or not isinstance(cause, aiohttp.ClientConnectionError):
        return exc
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause) or "server disconnected")
    return httpx.ReadError(str(cause) or cause.__class__.__name__)


class _RemappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.HTTPError as exc:
            raise _remap(exc) from exc.__cause__
        except Exception as exc:
            if _invalid_http(exc):
                raise _protocol_error(exc) from None  # its text quotes our request headers
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport with truthful connection errors."""

    def __init__(self) -> None:
        from httpx_aiohttp import AiohttpTransport

        self._inner = AiohttpTransport(limits=pool_limits())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise _remap(exc) from exc.__cause__
        except Exception as exc:
            if _invalid_http(exc):
                raise _protocol_error(exc) from None  # its text quotes our request headers
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport for a new pooled client (limits are set here: httpx ignores them with a custom one)."""
    if os.environ.get("OPENROUTER_HTTP_TRANSPORT", "aiohttp").lower() == "httpx":
        return httpx.AsyncHTTPTransport(limits=pool_limits())
    return _AiohttpTransport()

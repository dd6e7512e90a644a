"""The HTTP transport under the pooled client, chosen by measurement (bench/transport.py).

httpx's own pool (httpcore) scans every pooled connection on each request start and end; at 16
requests in flight it measured about 5x slower than aiohttp on our 2-core machines, 22x at 64, and its
CPU per call stalls every other request on the event loop. So the default is httpx-aiohttp's
transport; ``OPENROUTER_HTTP_TRANSPORT=httpx`` switches back.

httpx-aiohttp maps every aiohttp connection error to ``httpx.ConnectTimeout``; a refused connection or a
dropped one is not a timeout, so the errors are re-mapped here before the retry rule sees them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx

__all__ = ["default_transport"]

POOL_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=64, keepalive_expiry=60.0)


def _remap(exc: httpx.HTTPError) -> httpx.HTTPError:
    """The httpx error that says what actually happened to the aiohttp connection."""
    import aiohttp

    cause = exc.__cause__
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

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport with truthful connection errors."""

    def __init__(self) -> None:
        from httpx_aiohttp import AiohttpTransport

        self._inner = AiohttpTransport(limits=POOL_LIMITS)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise _remap(exc) from exc.__cause__
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport for a new pooled client (limits are set here: httpx ignores them with a custom one)."""
    if os.environ.get("OPENROUTER_HTTP_TRANSPORT", "aiohttp").lower() == "httpx":
        return httpx.AsyncHTTPTransport(limits=POOL_LIMITS)
    return _AiohttpTransport()

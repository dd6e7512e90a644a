"""The floors for bench/gateway_compare.py: a raw ASGI app that forwards ``POST`` bodies to OpenRouter.

No auth, no checks, no ledger: the request body is read, POSTed to ``<upstream>/chat/completions`` with
the upstream key, and the answer is sent back (streamed chunk by chunk when it is ``text/event-stream``).
Served by uvicorn with uvloop and httptools, one process. ``GET /health`` answers ``ok`` without
calling upstream. Two clients:

``aiohttp``  a bare ``aiohttp.ClientSession`` (the fastest Python client we have)
``httpx``    ``httpx.AsyncClient`` on ``httpx_aiohttp.AiohttpTransport`` (the stack under OpenRouterService)

    python bench/_passthrough_app.py --client aiohttp --upstream http://127.0.0.1:P/api/v1 --port Q
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport

from _common import API_KEY, SERVICE_LIMITS, SERVICE_TIMEOUT

UPSTREAM_HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
Scope = dict[str, Any]


class Passthrough:
    def __init__(self, upstream: str, client: str) -> None:
        self.url = upstream.rstrip("/") + "/chat/completions"
        self.kind = client
        self.session: aiohttp.ClientSession | None = None
        self.httpx: httpx.AsyncClient | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if self.kind == "aiohttp":
            await self._via_aiohttp(body, send)
        else:
            await self._via_httpx(body, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.kind == "aiohttp":
                    connector = aiohttp.TCPConnector(
                        limit=SERVICE_LIMITS.max_connections or 0, keepalive_timeout=SERVICE_LIMITS.keepalive_expiry
                    )
                    self.session = aiohttp.ClientSession(connector=connector)
                else:
                    self.httpx = httpx.AsyncClient(
                        transport=AiohttpTransport(limits=SERVICE_LIMITS),
                        timeout=SERVICE_TIMEOUT,
                        limits=SERVICE_LIMITS,
                    )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                if self.httpx is not None:
                    await self.httpx.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _via_aiohttp(self, body: bytes, send: Any) -> None:
        assert self.session is not None
        async with self.session.post(self.url, data=body, headers=UPSTREAM_HEADERS) as response:
            ctype = response.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                headers = [(b"content-type", ctype.encode())]
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await response.read()
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _via_httpx(self, body: bytes, send: Any) -> None:
        assert self.httpx is not None
        request = self.httpx.build_request("POST", self.url, content=body, headers=UPSTREAM_HEADERS)
        response = await self.httpx.send(request, stream=True)
        try:
            ctype = response.headers.get("content-type", "application/json")
            if ctype.startswith("text/event-stream"):
                headers = [(b"content-type", ctype.encode())]
                await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                return
            data = await response.aread()
        finally:
            await response.aclose()
        headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), required=True)
    parser.add_argument("--upstream", required=True, help="the fake OpenRouter's base URL (…/api/v1)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = Passthrough(args.upstream, args.client)
    uvicorn.run(
        app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning", lifespan="on"
    )


if __name__ == "__main__":
    main()

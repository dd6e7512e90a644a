"""The serving stack's floor for bench/function_overhead.py: reads the body, answers a constant."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response


@functions_framework.aio.http
async def noop(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")

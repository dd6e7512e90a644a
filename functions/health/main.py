"""health: is this function instance able to serve? No token needed; 200 or 503."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.endpoints import health_endpoint
from openrouter_functions.hosting import adopt_functions_framework

adopt_functions_framework()  # odd methods and framework paths reach the function too


@functions_framework.aio.http
async def health(request: Request) -> Response:
    return await health_endpoint(request)

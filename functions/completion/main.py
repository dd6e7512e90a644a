"""completion: one prompt in; text, and JSON validated against a response_format, out."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.endpoints import completion_endpoint
from openrouter_functions.hosting import adopt_functions_framework

adopt_functions_framework()  # odd methods and framework paths reach the function too


@functions_framework.aio.http
async def completion(request: Request) -> Response:
    return await completion_endpoint(request)

"""chat: OpenAI-compatible chat completions (plain or streamed) for signed-in Supabase users."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.endpoints import chat_endpoint
from openrouter_functions.hosting import adopt_functions_framework

adopt_functions_framework()  # odd methods and framework paths reach the function too


@functions_framework.aio.http
async def chat(request: Request) -> Response:
    return await chat_endpoint(request)

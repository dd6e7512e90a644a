"""chat: OpenAI-compatible chat completions (plain or streamed) for signed-in Supabase users."""

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response

from openrouter_functions.endpoints import chat_endpoint


@functions_framework.aio.http
async def chat(request: Request) -> Response:
    return await chat_endpoint(request)

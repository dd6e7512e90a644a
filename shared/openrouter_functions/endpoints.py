"""The three functions: what ``functions/<name>/main.py`` hands each request to.

``chat`` and ``completion`` differ only in their paths, body and answer (their :class:`CallSpec`);
the order of checks is the pipeline's. ``health`` answers on its own.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from openrouter_service.client import Completion
from openrouter_service.messages import last_user_text

from .bodies import parse_chat, parse_completion
from .envelope import ApiError, json_response
from .exchange import Exchange
from .health import check_health
from .pipeline import Call, CallSpec, route, run_call, serve_request, stop_generation
from .runtime import Runtime

__all__ = ["chat_endpoint", "completion_endpoint", "health_endpoint"]


def _chat_call(body: Any) -> Call:
    thread = None
    if isinstance(body, dict) and ("thread_id" in body or "background" in body):
        # Conversations (docs/threads.md) load with the first turn that asks for one: half a megabyte that
        # a function answering only plain calls never holds.
        from .conversation import parse_thread_ask

        thread = parse_thread_ask(body)
    chat = parse_chat(body)
    if thread is not None and chat.response_format is not None:
        raise ApiError(400, "invalid_request", "response_format cannot be combined with thread_id.")
    prompt = last_user_text(chat.messages)
    return Call(chat.messages, chat.params, chat.response_format, chat.stream, prompt, thread)


def _chat_answer(completion: Completion, call: Call) -> Response:
    if completion.body is not None:  # OpenRouter's own JSON text of the same answer: not encoded again
        return Response(completion.body, media_type="application/json")
    return json_response(completion.data)


CHAT = CallSpec(
    name="chat",
    paths=frozenset({"", "/chat/completions", "/v1/chat/completions"}),
    not_found="Unknown path; POST to the function's URL or /v1/chat/completions.",
    parse=_chat_call,
    respond=_chat_answer,
)


def _completion_call(body: Any) -> Call:
    request = parse_completion(body)
    messages: list[Any] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": request.prompt})
    return Call(messages, request.params, request.response_format, prompt=request.prompt)


def _completion_answer(completion: Completion, call: Call) -> Response:
    data = completion.data
    structured = call.response_format is not None and call.response_format.get("type") != "text"
    return json_response(
        {
            "id": data.get("id"),
            "model": data.get("model"),
            "text": completion.content,
            "data": completion.parsed if structured else None,
            "usage": completion.usage,
        }
    )


COMPLETION = CallSpec(
    name="completion",
    paths=frozenset({""}),
    not_found="Unknown path; POST to the function's URL.",
    parse=_completion_call,
    respond=_completion_answer,
)


# The chat function's own paths, and its stop endpoint (docs/threads.md).
STOP_PATH = "/stop"
_CHAT_ROUTES = CHAT.paths | {STOP_PATH}


async def _chat(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    if route(request, CHAT.name, _CHAT_ROUTES) == STOP_PATH:
        return await stop_generation(request, exchange, runtime)
    return await run_call(request, exchange, runtime, CHAT)


async def chat_endpoint(request: Request) -> Response:
    """The ``chat`` function: OpenAI chat completions, plain or streamed, optionally on a stored thread."""
    return await serve_request(request, CHAT.name, _chat)


async def completion_endpoint(request: Request) -> Response:
    """The ``completion`` function: one prompt in, text (and validated JSON) out."""
    return await serve_request(request, COMPLETION.name, COMPLETION.handle)


async def health_endpoint(request: Request) -> Response:
    """The ``health`` function: no token; 200 when everything works, 503 saying what is down."""
    return await serve_request(request, "health", check_health)

"""The request pipeline: the order in which a function checks, admits, calls, settles and answers.

The order is written once, in :func:`run_call`, because it decides when a user's quota is spent:
nothing is admitted (and so nothing counted) before the caller is authenticated, the body parsed, the
operator's policy applied and the request validated; once admitted, the request is settled whatever
happens next. :func:`serve_request` wraps every function (calls and health alike) with what each
answer needs: CORS, a request id, the error envelope, the ledger record and the log line.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openrouter_service.client import Completion, Prepared
from openrouter_service.errors import OpenRouterError
from openrouter_service.redact import preview

from .bodies import header, read_json
from .capacity import IN_FLIGHT
from .cors import cors_headers, preflight_headers
from .envelope import ApiError, error_response, let_go, reply_for
from .exchange import Exchange, new_id
from .ledger import LedgerUnavailable, UsageRecord, ledger_user_id
from .metrics import METRICS
from .metrics_route import metrics_scrape
from .policy import apply_policy
from .relay import relay_stream
from .runtime import Runtime, get_runtime

if TYPE_CHECKING:
    from .conversation import ThreadAsk

__all__ = ["Call", "CallSpec", "run_call", "serve_request", "stop_generation"]

log = logging.getLogger("openrouter_functions")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Handler = Callable[[Request, Exchange, Runtime], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Call:
    """What a caller asked for, parsed from the body: what to send upstream, and the text to preview."""

    messages: list[Any]
    params: dict[str, Any]
    response_format: dict[str, Any] | None = None
    stream: bool = False
    prompt: str = ""
    thread: ThreadAsk | None = None  # a turn on a stored thread (docs/threads.md)


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What differs between the functions that call a model: their paths, body and answer."""

    name: str
    paths: frozenset[str]
    not_found: str
    parse: Callable[[Any], Call]
    respond: Callable[[Completion, Call], Response]

    async def handle(self, request: Request, exchange: Exchange, runtime: Runtime) -> Response:
        """This function's answer to one request (the pipeline's :data:`Handler`)."""
        return await run_call(request, exchange, runtime, self)


def request_id(request: Request) -> str:
    """The caller's ``X-Request-Id`` when it is sane, else a new one."""
    given = header(request, b"x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return new_id()


def route(request: Request, name: str = "", known: frozenset[str] = frozenset({""})) -> str:
    """The path below the function's own URL ('' for the function itself).

    A load balancer that sends ``/<name>/*`` to the function without stripping the prefix (Google's
    URL maps do not strip it) hands over ``/<name>...``: when that prefix is the function's ``name`` and
    what follows it is one of the ``known`` paths, it is that path.
    """
    path: str = request.scope.get("path", "/")
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    path = path.rstrip("/")
    if name and path not in known and (path == f"/{name}" or path.startswith(f"/{name}/")):
        inner = path[len(name) + 1 :]
        if inner in known:
            return inner
    return path


def require_method(request: Request, *allowed: str) -> None:
    """405 with ``Allow`` unless the request uses one of ``allowed``."""
    if request.method not in allowed:
        shown = [m for m in allowed if m != "HEAD"]
        raise ApiError(
            405,
            "method_not_allowed",
            f"Use {' or '.join(shown)}.",
            headers={"Allow": ", ".join([*shown, "OPTIONS"])},
        )


async def run_call(request: Request, exchange: Exchange, runtime: Runtime, spec: CallSpec) -> Response:
    """route -> authenticate -> refuse if unsafe -> parse -> policy -> validate -> admit -> call -> settle."""
    if route(request, spec.name, spec.paths) not in spec.paths:
        raise ApiError(404, "not_found", spec.not_found)
    require_method(request, "POST")
    settings = runtime.settings

    caller = await runtime.authenticate(header(request, b"authorization"))
    # After authentication: a stranger learns nothing about how this server is configured.
    runtime.refuse_if_unsafe()
    exchange.user_id, exchange.is_service = caller.user_id, caller.is_service
    call = spec.parse(await read_json(request, settings.max_body_bytes))
    exchange.stream = call.stream

    service = runtime.service
    decision = apply_policy(settings, call.messages, call.params, service.model_name)
    # OpenRouter's `user`: a stable pseudonym of the signed-in user, so a provider that blocks one abusive
    # end user blocks only them. A caller cannot pick someone else's; a trusted server caller may name its own.
    if not (caller.is_service and isinstance(decision.params.get("user"), str)):
        decision.params["user"] = runtime.end_user_pseudonym(caller.user_id)
    exchange.model = decision.model
    if decision.guard_hits:
        exchange.guard = decision.guard_hits
        for rule in decision.guard_hits:  # "blocked" only for the high-confidence hits that refused it
            METRICS.inc(
                "orf_prompt_guard_total", function=exchange.function, rule=rule, action=decision.guard_action(rule)
            )
    if decision.refusal is not None:
        raise decision.refusal
    if settings.log_prompts:
        exchange.prompt_preview = preview(call.prompt)
    if call.stream and call.response_format is not None:
        raise ApiError(400, "invalid_request", "response_format cannot be combined with stream.")
    # Bad input is refused before admission, so a client bug never spends the user's quota.
    prepared = service.validate_request(
        call.messages, model_params=decision.params, response_format=call.response_format, stream=call.stream
    )

    # A full instance refuses at once (503 overloaded, Retry-After) instead of queueing for an upstream
    # connection, and before admission, so the refusal spends no quota. The slot also lets a shutdown end
    # the call in time (capacity.py).
    with IN_FLIGHT.claim(exchange, settings.in_flight_limit, settings.shutdown_drain_seconds) as slot:
        await _admit(runtime, exchange)
        return await slot.run(lambda: _call(runtime, exchange, spec, call, decision.params, prepared))


async def _call(
    runtime: Runtime, exchange: Exchange, spec: CallSpec, call: Call, params: dict[str, Any], prepared: Prepared | None
) -> Response:
    """The admitted upstream call, plain or streamed (settled whatever happens). ``prepared``: the request
    as validated, sent as it is unless a thread's history replaces the messages."""
    service, settings = runtime.service, runtime.settings
    turn = None
    if call.thread is not None:
        turn = await _start_turn(runtime, exchange, call.thread)
        call = replace(call, messages=turn.turn.history)
        prepared = None
    try:
        if call.stream:
            stream = service.stream_chat_completion(call.messages, model_params=params, prepared=prepared)
            return await relay_stream(
                stream,
                exchange,
                lambda: _finish(runtime, exchange),
                keep_previews=settings.log_prompts,
                turn=turn,
                background_seconds=settings.openrouter_deadline,
            )
        if turn is None:
            completion = await service.complete(
                call.messages, model_params=params, response_format=call.response_format, prepared=prepared
            )
        else:
            completion = await turn.run(
                lambda: service.complete(call.messages, model_params=params, response_format=call.response_format)
            )
            if completion is None:  # stopped (POST .../stop) before the model answered
                stopped = ApiError(409, "generation_stopped", "The answer was stopped before the model finished it.")
                exchange.status, exchange.error_type, exchange.error_message = 409, stopped.type, stopped.message
                exchange.outcome = "stopped"
                return error_response(stopped)
            turn.pieces[:] = [completion.content or ""]
            choices = completion.data.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                reason = choices[0].get("finish_reason")
                turn.finish_reason = reason if isinstance(reason, str) else None
    except OpenRouterError as exc:
        exchange.note_failure(exc)
        raise
    exchange.note_completion(completion, keep_previews=settings.log_prompts)
    return spec.respond(completion, call)


async def _start_turn(runtime: Runtime, exchange: Exchange, ask: ThreadAsk) -> Any:
    """Lock (or create) the thread, store the user message and an empty answer; the running turn."""
    from .conversation import TurnState, begin_turn
    from .threads import TurnRequest

    store = runtime.threads
    if store is None:
        raise ApiError(400, "threads_unavailable", "Conversations need a ledger store; LEDGER_BACKEND is off.")
    settings = runtime.settings
    assert exchange.user_id is not None
    assert exchange.model is not None
    request = TurnRequest(
        user_id=ledger_user_id(exchange.user_id),
        thread_id=ask.thread_id,
        user_text=ask.user_text,
        model=exchange.model,
        request_id=exchange.ledger_id,
        max_messages=settings.thread_history_messages,
        max_tokens=settings.thread_history_tokens,
        stale_seconds=runtime.thread_stale_seconds,
        system=ask.system,
    )
    turn = await begin_turn(store, request)
    state = TurnState(
        store,
        turn,
        flush_seconds=settings.thread_flush_seconds,
        background=ask.background,
        settle_seconds=settings.ledger_settle_seconds,
    )
    exchange.turn = state
    state.start()
    return state


async def stop_generation(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    """``POST <chat>/stop {"thread_id", "message_id"?}``: stop the thread's running answer (docs/threads.md)."""
    from .conversation import stop_answer
    from .envelope import json_response
    from .threads import parse_thread_id

    require_method(request, "POST")
    exchange.metered = False  # nothing is called upstream: no ledger record, no quota spent
    caller = await runtime.authenticate(header(request, b"authorization"))
    runtime.refuse_if_unsafe()
    exchange.user_id, exchange.is_service = caller.user_id, caller.is_service
    body = await read_json(request, runtime.settings.max_body_bytes)
    if not isinstance(body, dict) or set(body) - {"thread_id", "message_id"} or not body:
        raise ApiError(400, "invalid_request", 'Send {"thread_id": "<uuid>"} or {"message_id": "<uuid>"}.')
    given = {key: body[key] for key in ("thread_id", "message_id") if body.get(key) is not None}
    ids = {key: parse_thread_id(value) for key, value in given.items()}
    if not ids or None in ids.values():
        raise ApiError(400, "invalid_request", "thread_id and message_id must be uuids (one of them at least).")
    thread_id, message_id = ids.get("thread_id"), ids.get("message_id")
    store = runtime.threads
    if store is None:
        raise ApiError(400, "threads_unavailable", "Conversations need a ledger store; LEDGER_BACKEND is off.")
    answer = await stop_answer(
        store,
        ledger_user_id(caller.user_id),
        thread_id,
        message_id,
        stale_seconds=runtime.thread_stale_seconds,
        flush_seconds=runtime.settings.thread_flush_seconds,
    )
    return json_response(answer)


async def _admit(runtime: Runtime, exchange: Exchange) -> None:
    assert exchange.user_id is not None
    try:
        ticket = await runtime.meter.admit(
            exchange.ledger_id,
            exchange.user_id,
            exchange.function,
            request_id=exchange.request_id,
            unlimited=exchange.is_service,
        )
    except (LedgerUnavailable, ApiError) as exc:
        # Refused by the ledger's limits (429): the refusal is logged in the ledger. Refused because the
        # ledger is down or misconfigured: nothing ran and there is nowhere to record it.
        exchange.ledger_refused = not (isinstance(exc, ApiError) and exc.status == 429)
        raise
    exchange.admitted = ticket.admitted
    exchange.unmetered = ticket.unmetered
    exchange.reserved_usd = ticket.reserved_usd


async def _finish(runtime: Runtime | None, exchange: Exchange) -> None:
    """The thread's message, the ledger record (retried, never lost silently) and the log line, once per
    request."""
    record: UsageRecord | None = None
    meter = None
    if runtime is not None and exchange.user_id is not None and not exchange.ledger_refused and exchange.metered:
        try:
            meter = runtime.meter
        except ApiError:
            meter = None
        if (meter is not None and meter.backend is not None) or exchange.turn is not None:
            record = exchange.usage_record(keep_previews=runtime.settings.log_prompts)
    settling = None
    if record is not None and meter is not None and meter.backend is not None:  # metering off: no record
        settling = meter.settle(record, request_id=exchange.request_id)
    if exchange.turn is not None:
        # The answer's final text, status, usage and cost (what is settled), written while the ledger
        # settles: the two stores' round trips at once, not one after the other.
        ending = exchange.turn.end(exchange, record)
        await (ending if settling is None else asyncio.gather(ending, settling))
    elif settling is not None:
        await settling
    exchange.record()


def set_headers(response: Response, headers: dict[str, str]) -> None:
    """``response.headers.update(headers)``: each header set, replacing one of the same name. When the
    response has none of them (nearly always), they are appended in one step."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    present = {name for name, _ in response.raw_headers}
    if present.isdisjoint([name for name, _ in raw]):
        response.raw_headers.extend(raw)
    else:
        response.headers.update(headers)


async def serve_request(request: Request, function: str, handler: Handler) -> Response:
    """Run ``handler`` for one request with CORS, a request id, the error envelope, settlement and log."""
    scrape = metrics_scrape(request, function)  # GET /metrics, when this deployment exposes it
    if scrape is not None:
        return scrape
    exchange = Exchange(function, request_id(request))
    origin = header(request, b"origin")
    runtime: Runtime | None = None
    allowed: tuple[str, ...] = ("*",)
    streaming = False
    try:
        runtime = get_runtime()
        allowed = runtime.settings.allowed_origins
        if request.method == "OPTIONS":
            response: Response = Response(status_code=204, headers=preflight_headers(origin, allowed))
            exchange.status = 204
        else:
            response = await handler(request, exchange, runtime)
            streaming = isinstance(response, StreamingResponse)
    except Exception as exc:
        error = reply_for(exc)
        if error.type == "internal":
            log.exception("unhandled error in %s", function)
        exchange.fail(error)
        response = error_response(error)
        # Answered and logged: the tracebacks, which hold this frame (and so the error, ``exc`` itself or a
        # reply never raised) and every frame of the failed call (its body, its upstream request), go now,
        # not when the cyclic collector runs.
        let_go(exc)
    except BaseException:
        # Cancelled (the server is shutting down, or the caller left): the reservation is still settled
        # and the request still logged.
        exchange.status, exchange.outcome = 499, "cancelled"
        with anyio.CancelScope(shield=True):
            await _finish(runtime, exchange)
        raise
    added = cors_headers(origin, allowed)
    added["X-Request-Id"] = exchange.request_id
    if exchange.turn is not None:
        added["X-Thread-Id"] = exchange.turn.turn.thread_id
        added["X-Message-Id"] = exchange.turn.message_id
    set_headers(response, added)
    if not streaming:  # a stream settles when it ends (relay)
        await _finish(runtime, exchange)
    return response

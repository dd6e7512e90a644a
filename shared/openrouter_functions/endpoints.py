"""The three functions' request handling: parse -> authenticate -> admit -> call -> record -> respond.

``functions/<name>/main.py`` hand each request to one of :func:`chat_endpoint`,
:func:`completion_endpoint` and :func:`health_endpoint`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from openrouter_service import __version__ as VERSION
from openrouter_service.client import ChatStream, Completion
from openrouter_service.errors import OpenRouterError
from openrouter_service.messages import normalize_model
from openrouter_service.redact import preview
from openrouter_service.sse import SSEComment

from .bodies import parse_chat, parse_completion, read_json
from .cors import cors_headers, preflight_headers
from .envelope import ApiError, error_from_exception, error_response, json_response
from .guard import scan_messages
from .ledger import Admission, Ledger, LedgerUnavailable, Limits, UsageRecord, ledger_user_id
from .metrics import METRICS
from .runtime import Runtime, get_runtime

__all__ = ["chat_endpoint", "completion_endpoint", "health_endpoint"]

log = logging.getLogger("openrouter_functions.request")
ledger_log = logging.getLogger("openrouter_functions.ledger")
FINISH_ATTEMPTS = 3
LEDGER_TIMEOUT = 5.0

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_CHAT_PATHS = frozenset({"", "/", "/chat/completions", "/v1/chat/completions"})


@dataclass(slots=True)
class Exchange:
    """What one request did, for its log line and metrics."""

    function: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    # The ledger's idempotency key is ours, never the caller's X-Request-Id: a reused id must not be
    # able to turn a finish into a "duplicate" and so escape metering.
    ledger_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    user_id: str | None = None
    is_service: bool = False
    admitted: bool = False  # the ledger admitted it and holds a reservation
    reserved_usd: float = 0.0
    unmetered: bool = False  # served while the ledger was down (LEDGER_FAILURE_MODE=open)
    ledger_refused: bool = False  # refused because the ledger was down: nothing ran, nothing to record
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    attempts: int = 0
    usage: dict[str, Any] | None = None
    generation_id: str | None = None
    guard: list[str] = field(default_factory=list)
    prompt_preview: str | None = None
    response_preview: str | None = None
    outcome: str = "ok"

    def fail(self, error: ApiError) -> None:
        self.status, self.error_type = error.status, error.type
        self.outcome = "error"

    def record(self) -> None:
        """Metrics and the request's one JSON log line."""
        elapsed = time.perf_counter() - self.started
        model = self.model or "none"
        METRICS.inc("orf_requests_total", function=self.function, status=str(self.status), model=model)
        METRICS.observe_latency(elapsed, function=self.function)
        if self.attempts:
            METRICS.inc("orf_upstream_attempts_total", self.attempts, function=self.function)
            if self.attempts > 1:
                METRICS.inc("orf_upstream_retries_total", self.attempts - 1, function=self.function)
        usage = self.usage or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        cost = usage.get("cost")
        if isinstance(prompt_tokens, int):
            METRICS.inc("orf_tokens_total", prompt_tokens, function=self.function, model=model, kind="prompt")
        if isinstance(completion_tokens, int):
            METRICS.inc("orf_tokens_total", completion_tokens, function=self.function, model=model, kind="completion")
        if isinstance(cost, int | float):
            METRICS.inc("orf_cost_usd_total", float(cost), function=self.function, model=model)
        if not log.isEnabledFor(logging.INFO):
            return
        severity = "ERROR" if self.status >= 500 else "WARNING" if self.status >= 400 else "INFO"
        line = {
            "severity": severity,
            "message": f"{self.function} {self.status} {self.outcome}",
            "request_id": self.request_id,
            "function": self.function,
            "user_id": self.user_id,
            "model": self.model,
            "status": self.status,
            "error_type": self.error_type,
            "outcome": self.outcome,
            "latency_ms": round(elapsed * 1000.0, 2),
            "attempts": self.attempts,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": cost,
            "generation_id": self.generation_id,
            "prompt_guard": self.guard or None,
            "prompt_preview": self.prompt_preview,
            "response_preview": self.response_preview,
        }
        log.info(json.dumps(line, ensure_ascii=False, default=str))


Handler = Callable[[Request, Exchange, Runtime], Awaitable[Response]]


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def _route(request: Request) -> str:
    path: str = request.scope.get("path", "/")
    root: str = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/")


async def _serve(request: Request, function: str, handler: Handler) -> Response:
    exchange = Exchange(function, _request_id(request))
    origin = request.headers.get("origin")
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
        error = error_from_exception(exc)
        if error.type == "internal":
            logging.getLogger("openrouter_functions").exception("unhandled error in %s", function)
        exchange.fail(error)
        allowed = _allowed_origins_or_default()
        response = error_response(error)
    except BaseException:
        # Cancelled (the server is shutting down, or the caller left): the reservation is still settled
        # and the request still logged.
        exchange.status, exchange.outcome = 499, "cancelled"
        with anyio.CancelScope(shield=True):
            await _settle(exchange)
            exchange.record()
        raise
    response.headers.update(cors_headers(origin, allowed))
    response.headers["X-Request-Id"] = exchange.request_id
    if not streaming:
        await _settle(exchange)
        exchange.record()
    return response


def _allowed_origins_or_default() -> tuple[str, ...]:
    try:
        return get_runtime().settings.allowed_origins
    except Exception:
        return ("*",)


def _require_post(request: Request) -> None:
    if request.method != "POST":
        raise ApiError(405, "method_not_allowed", "Use POST.", headers={"Allow": "POST, OPTIONS"})


async def _authenticate(request: Request, exchange: Exchange, runtime: Runtime) -> None:
    caller = await runtime.verifier.verify(request.headers.get("authorization"))
    exchange.user_id = caller.user_id
    exchange.is_service = caller.is_service


async def _ledger_call(runtime: Runtime, call: Awaitable[Any], *, respect_breaker: bool = True) -> Any:
    """One ledger round trip, bounded in time; any failure is LedgerUnavailable and opens the breaker."""
    if respect_breaker and runtime.ledger_suspended():
        close = getattr(call, "close", None)
        if close is not None:
            close()  # never awaited: the coroutine must not warn
        raise LedgerUnavailable("the ledger failed moments ago; not retried yet")
    try:
        async with asyncio.timeout(LEDGER_TIMEOUT):
            return await call
    except Exception as exc:
        runtime.note_ledger_failure()
        if isinstance(exc, LedgerUnavailable):
            raise
        detail = "timed out" if isinstance(exc, TimeoutError) else f"{exc.__class__.__name__}: {exc}"
        raise LedgerUnavailable(detail) from exc


async def _begin(runtime: Runtime, exchange: Exchange) -> None:
    """Ledger admission: rate window, daily quotas and a cost reservation, in one round trip."""
    try:
        ledger = runtime.ledger
    except ApiError:
        ledger = None
        if runtime.settings.ledger_failure_mode != "open":
            exchange.ledger_refused = True
            raise
    if ledger is None or exchange.user_id is None:
        return
    # Trusted server callers (service role) are logged but not limited.
    limits = Limits() if exchange.is_service else runtime.default_limits
    try:
        admission: Admission = await _ledger_call(
            runtime,
            ledger.begin(
                exchange.ledger_id,
                ledger_user_id(exchange.user_id),
                exchange.function,
                exchange.model,
                runtime.settings.quota_reserve_usd,
                limits,
            ),
        )
    except LedgerUnavailable as exc:
        METRICS.inc("orf_ledger_errors_total", function=exchange.function, op="begin")
        ledger_log.warning(
            json.dumps(
                {
                    "severity": "WARNING",
                    "message": "ledger_begin_failed",
                    "request_id": exchange.request_id,
                    "error": str(exc),
                }
            )
        )
        if runtime.settings.ledger_failure_mode == "open":
            exchange.unmetered = True
            return
        exchange.ledger_refused = True
        raise ApiError(
            503, "ledger_unavailable", "Usage accounting is unavailable; try again shortly.", retry_after=5
        ) from None
    if not admission.admitted:
        if admission.reason == "rate_limited":
            message = "Too many requests; slow down."
            kind = "rate_limited"
        else:
            what = {"daily_cost_usd": "daily spending", "daily_requests": "daily request"}.get(
                admission.limit or "", "daily"
            )
            message = f"The {what} limit for your account is reached; it resets at midnight UTC."
            kind = "quota_exceeded"
        raise ApiError(429, kind, message, retry_after=admission.retry_after, details={"limit": admission.limit})
    exchange.admitted = True
    exchange.reserved_usd = admission.reserved_usd


async def _settle(exchange: Exchange) -> None:
    """Ledger finish: the log row and the usage, retried; never lost silently."""
    if exchange.user_id is None or exchange.ledger_refused:
        return
    try:
        runtime = get_runtime()
        ledger = runtime.ledger
    except Exception:
        return
    if ledger is None:
        return
    usage = exchange.usage or {}
    log_prompts = runtime.settings.log_prompts

    def number(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    cost = usage.get("cost")
    cost_usd = float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None
    if cost_usd is None and exchange.outcome == "cancelled" and exchange.admitted:
        # The caller hung up before the provider's usage arrived; OpenRouter still bills what was
        # generated. Charging the reservation keeps hanging up from being a way around the budget.
        cost_usd = exchange.reserved_usd
    record = UsageRecord(
        request_id=exchange.ledger_id,
        user_id=ledger_user_id(exchange.user_id),
        function=exchange.function,
        model=exchange.model,
        status=exchange.status,
        error_type=exchange.error_type,
        outcome=exchange.outcome,
        latency_ms=round((time.perf_counter() - exchange.started) * 1000.0, 2),
        attempts=exchange.attempts,
        prompt_tokens=number("prompt_tokens"),
        completion_tokens=number("completion_tokens"),
        total_tokens=number("total_tokens"),
        cost_usd=cost_usd,
        generation_id=exchange.generation_id,
        prompt_preview=exchange.prompt_preview if log_prompts else None,
        response_preview=exchange.response_preview if log_prompts else None,
        admitted=exchange.admitted or exchange.unmetered,
    )
    error: Exception | None = None
    # With the breaker open (the ledger failed moments ago) the row goes straight to the log line
    # below instead of holding the caller; otherwise a finish gets its retries.
    attempts = 1 if runtime.ledger_suspended() else FINISH_ATTEMPTS
    for attempt in range(attempts):
        try:
            await _ledger_call(runtime, ledger.finish(record), respect_breaker=attempts == 1)
            return
        except LedgerUnavailable as exc:
            error = exc
            METRICS.inc("orf_ledger_errors_total", function=exchange.function, op="finish")
            if attempt + 1 < attempts:
                await runtime.sleep(0.1 * 3**attempt)
    METRICS.inc("orf_usage_unrecorded_total", function=exchange.function)
    # One line carrying the whole row, so it can be replayed into ledger_finish later.
    ledger_log.error(
        json.dumps(
            {
                "severity": "ERROR",
                "message": "usage_unrecorded",
                "request_id": exchange.request_id,
                "error": str(error),
                "record": {"p_request_id": record.request_id, "p_user_id": record.user_id, "p_row": record.row()},
            },
            ensure_ascii=False,
            default=str,
        )
    )


def _admit(
    runtime: Runtime, exchange: Exchange, messages: list[Any], params: dict[str, Any], default_model: str
) -> None:
    """Policy: allowed models, the output-token cap, the prompt guard."""
    settings = runtime.settings
    model = params.get("model")
    model = normalize_model(model) if isinstance(model, str) and model.strip() else default_model
    exchange.model = model
    allowed = settings.allowed_models
    if allowed and not any(model == m or (m.endswith("*") and model.startswith(m[:-1])) for m in allowed):
        raise ApiError(400, "model_not_allowed", f"The model {model!r} is not available here.")
    fallbacks = params.get("models")
    if allowed and isinstance(fallbacks, list):
        for extra in fallbacks:
            name = normalize_model(extra) if isinstance(extra, str) else str(extra)
            if not any(name == m or (m.endswith("*") and name.startswith(m[:-1])) for m in allowed):
                raise ApiError(400, "model_not_allowed", f"The model {name!r} is not available here.")
    cap = settings.max_output_tokens
    if cap is not None:
        for key in ("max_tokens", "max_completion_tokens"):
            value = params.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap:
                raise ApiError(400, "max_tokens_exceeded", f"{key} may be at most {cap}.")
        if "max_tokens" not in params and "max_completion_tokens" not in params:
            params["max_tokens"] = cap  # unset would mean the model's own (often much larger) limit
    if settings.prompt_guard != "off":
        hits = scan_messages(m for m in messages if isinstance(m, dict))
        if hits:
            exchange.guard = hits
            action = "blocked" if settings.prompt_guard == "block" else "flagged"
            for rule in hits:
                METRICS.inc("orf_prompt_guard_total", function=exchange.function, rule=rule, action=action)
            if settings.prompt_guard == "block":
                raise ApiError(400, "prompt_rejected", "The request looks like a prompt-injection attempt.")


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content)
    return ""


def _note_completion(exchange: Exchange, runtime: Runtime, completion: Completion) -> None:
    exchange.attempts = completion.attempts
    exchange.usage = completion.usage
    data = completion.data
    exchange.generation_id = data.get("id") if isinstance(data.get("id"), str) else None
    if isinstance(data.get("model"), str):
        exchange.model = data["model"]
    if runtime.settings.log_prompts:
        exchange.response_preview = preview(completion.content or "")


def _note_error(exchange: Exchange, exc: BaseException) -> None:
    if isinstance(exc, OpenRouterError):
        exchange.attempts = exc.attempts
        usage = getattr(exc, "usage", None)
        if isinstance(usage, dict):
            exchange.usage = usage


# -- chat ---------------------------------------------------------------------------------------------


async def _chat(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    if _route(request) not in _CHAT_PATHS:
        raise ApiError(404, "not_found", "Unknown path; POST to the function's URL or /v1/chat/completions.")
    _require_post(request)
    await _authenticate(request, exchange, runtime)
    chat = parse_chat(await read_json(request, runtime.settings.max_body_bytes))
    service = runtime.service
    _admit(runtime, exchange, chat.messages, chat.params, service.model_name)
    if runtime.settings.log_prompts:
        exchange.prompt_preview = preview(_last_user_text(chat.messages))
    if chat.stream and chat.response_format is not None:
        raise ApiError(400, "invalid_request", "response_format cannot be combined with stream.")
    # Bad input is refused before admission, so a client bug never spends the user's quota.
    service.validate_request(
        chat.messages, model_params=chat.params, response_format=chat.response_format, stream=chat.stream
    )
    await _begin(runtime, exchange)
    try:
        if chat.stream:
            stream = service.stream_chat_completion(chat.messages, model_params=chat.params)
            return await _stream_response(stream, exchange, runtime)
        completion = await service.complete(
            chat.messages, model_params=chat.params, response_format=chat.response_format
        )
    except OpenRouterError as exc:
        _note_error(exchange, exc)
        raise
    _note_completion(exchange, runtime, completion)
    return json_response(completion.data)


def _encode_event(item: dict[str, Any] | SSEComment) -> bytes:
    if isinstance(item, SSEComment):
        return f": {item.text}\n\n".encode()
    return b"data: " + json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _error_event(stream: ChatStream, error: OpenRouterError, exchange: Exchange) -> bytes:
    event = {
        "id": stream.generation_id or exchange.request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": stream.model or exchange.model,
        "error": {
            "code": error.upstream_status or error.status_code,
            "message": error.message,
            "metadata": {
                "type": error.type,
                **({"error_type": error.metadata["error_type"]} if "error_type" in error.metadata else {}),
            },
        },
        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
    }
    return _encode_event(event)


async def _stream_response(stream: ChatStream, exchange: Exchange, runtime: Runtime) -> Response:
    events = stream.events()
    # Wait for the first event so that a failure before the stream starts (bad model, upstream down
    # after retries) is an ordinary HTTP error, not a 200 whose body is an error.
    try:
        first: dict[str, Any] | SSEComment | None = await events.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await stream.aclose()
        exchange.attempts = stream.attempts
        raise

    async def body() -> AsyncIterator[bytes]:
        pieces: list[str] = []
        try:
            if first is not None:
                if isinstance(first, dict):
                    _collect(first, pieces)
                yield _encode_event(first)
            async for item in events:
                if isinstance(item, dict):
                    _collect(item, pieces)
                yield _encode_event(item)
            yield b"data: [DONE]\n\n"
        except OpenRouterError as exc:
            exchange.fail(error_from_exception(exc))
            exchange.status = 200  # the HTTP status already went out
            exchange.outcome = "upstream_error"
            yield _error_event(stream, exc, exchange)
            yield b"data: [DONE]\n\n"
        except BaseException:
            exchange.outcome = "cancelled"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await stream.aclose()
                exchange.attempts = stream.attempts
                exchange.usage = stream.usage
                exchange.generation_id = stream.generation_id
                if stream.model:
                    exchange.model = stream.model
                if runtime.settings.log_prompts:
                    exchange.response_preview = preview("".join(pieces))
                await _settle(exchange)
                exchange.record()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _collect(chunk: dict[str, Any], pieces: list[str]) -> None:
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str) and sum(map(len, pieces)) < 600:
            pieces.append(delta["content"])


async def chat_endpoint(request: Request) -> Response:
    """The ``chat`` function: OpenAI chat completions, plain or streamed."""
    return await _serve(request, "chat", _chat)


# -- completion ---------------------------------------------------------------------------------------


async def _completion(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    if _route(request) not in ("", "/"):
        raise ApiError(404, "not_found", "Unknown path; POST to the function's URL.")
    _require_post(request)
    await _authenticate(request, exchange, runtime)
    call = parse_completion(await read_json(request, runtime.settings.max_body_bytes))
    service = runtime.service
    messages: list[Any] = []
    if call.system:
        messages.append({"role": "system", "content": call.system})
    messages.append({"role": "user", "content": call.prompt})
    _admit(runtime, exchange, messages, call.params, service.model_name)
    if runtime.settings.log_prompts:
        exchange.prompt_preview = preview(call.prompt)
    service.validate_request(messages, model_params=call.params, response_format=call.response_format)
    await _begin(runtime, exchange)
    try:
        completion = await service.complete(messages, model_params=call.params, response_format=call.response_format)
    except OpenRouterError as exc:
        _note_error(exchange, exc)
        raise
    _note_completion(exchange, runtime, completion)
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


async def completion_endpoint(request: Request) -> Response:
    """The ``completion`` function: one prompt in, text (and validated JSON) out."""
    return await _serve(request, "completion", _completion)


# -- health -------------------------------------------------------------------------------------------


async def _health(request: Request, exchange: Exchange, runtime: Runtime) -> Response:
    if request.method not in ("GET", "POST", "HEAD"):
        raise ApiError(405, "method_not_allowed", "Use GET or POST.", headers={"Allow": "GET, POST, OPTIONS"})
    probe, cached = await runtime.probe_upstream()
    problems = runtime.configuration_problems()
    ledger_state: dict[str, Any]
    try:
        ledger = runtime.ledger
    except ApiError as exc:
        problems.append(exc.message)
        ledger_state = {"ok": False, "backend": runtime.settings.resolved_ledger_backend}
    else:
        ledger_ok = True if ledger is None else await _ledger_answers(ledger)
        ledger_state = {
            "ok": ledger_ok,
            "backend": ledger.name if ledger is not None else "off",
            "failure_mode": runtime.settings.ledger_failure_mode,
        }
    down = []
    if not probe.ok:
        down.append("upstream")
    if not ledger_state["ok"]:
        down.append("ledger")
    if problems:
        down.append("configuration")
    settings = runtime.settings
    body = {
        "status": "ok" if not down else "down",
        "down": down,
        "version": VERSION,
        "offline_mode": settings.offline_mode,
        "uptime_s": round(time.time() - runtime.started_at, 1),
        "checks": {
            "upstream": {
                "ok": probe.ok,
                "latency_ms": round(probe.latency_ms, 1),
                "checked_at": int(probe.checked_at),
                "cached": cached,
                **({"detail": probe.detail} if probe.detail else {}),
            },
            "ledger": ledger_state,
            "configuration": {
                "ok": not problems,
                "problems": problems,
                "model": settings.openrouter_model,
                "auth": "hs256+jwks"
                if settings.supabase_jwt_secret and settings.jwks_url
                else "hs256"
                if settings.supabase_jwt_secret
                else "jwks"
                if settings.jwks_url
                else "none",
                "prompt_guard": settings.prompt_guard,
            },
        },
    }
    status = 200 if not down else 503
    exchange.status = status
    return json_response(body, status, {"Cache-Control": "no-store"})


async def _ledger_answers(ledger: Ledger, within: float = 3.0) -> bool:
    try:
        return await asyncio.wait_for(ledger.check(), within)
    except TimeoutError:
        return False


async def health_endpoint(request: Request) -> Response:
    """The ``health`` function: no token; 200 when everything works, 503 saying what is down."""
    return await _serve(request, "health", _health)

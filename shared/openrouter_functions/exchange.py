"""What one request did: filled in as the pipeline runs, then written once to metrics and the log,
and turned into the ledger's usage record."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from openrouter_service.client import Completion
from openrouter_service.errors import OpenRouterError, OpenRouterSchemaError
from openrouter_service.messages import MODEL_ID_CHARS
from openrouter_service.redact import preview

from .envelope import ApiError
from .ledger import UsageRecord, ledger_user_id, storable
from .logs import log_fields
from .metrics import METRICS

__all__ = ["Exchange", "new_id"]

log = logging.getLogger("openrouter_functions.request")


# Upstream usage beyond these is not believed (and no store column need hold it): no request uses a
# billion tokens or costs a thousand dollars. Such a value, a negative one or a non-number is dropped.
MAX_TOKENS = 10**9
MAX_COST_USD = 1000.0


def new_id() -> str:
    """A random UUID4 as 32 hex digits: what ``uuid.uuid4().hex`` gives (from ``os.urandom`` too, with the
    same version and variant bits), without building a UUID object on every request."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return raw.hex()


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _cost(usage: dict[str, Any]) -> float | None:
    value = usage.get("cost")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= MAX_COST_USD:
        return float(value)  # NaN fails the comparison; inf is beyond the bound
    return None


@dataclass(slots=True)
class Exchange:
    """One request through a function, from arrival to its log line."""

    function: str
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    # The ledger's idempotency key is ours, never the caller's X-Request-Id: a reused id must not be
    # able to turn a finish into a "duplicate" and so escape metering.
    ledger_id: str = field(default_factory=new_id)
    user_id: str | None = None
    is_service: bool = False
    admitted: bool = False  # the ledger admitted it and holds a reservation
    reserved_usd: float = 0.0
    unmetered: bool = False  # served while the ledger was down (LEDGER_FAILURE_MODE=open)
    ledger_refused: bool = False  # refused because the ledger is down: nothing ran, nothing to record
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0
    usage: dict[str, Any] | None = None
    generation_id: str | None = None
    guard: tuple[str, ...] = ()
    prompt_preview: str | None = None
    response_preview: str | None = None
    outcome: str = "ok"
    stream: bool = False  # the caller asked for a stream
    first_output: float | None = None  # perf_counter when a stream's first chunk with model output went out
    metered: bool = True  # False for answers that call no model (a stop request): no ledger record
    turn: Any = None  # the threaded turn (conversation.TurnState) whose message this request writes

    def fail(self, error: ApiError) -> None:
        self.status, self.error_type, self.error_message = error.status, error.type, error.message
        self.outcome = "error"

    def note_completion(self, completion: Completion, *, keep_previews: bool) -> None:
        """What a finished upstream call tells the log and the ledger."""
        self.attempts = completion.attempts
        self.usage = completion.usage
        data = completion.data
        self.generation_id = data.get("id") if isinstance(data.get("id"), str) else None
        if isinstance(data.get("model"), str):
            self.model = data["model"]
        if keep_previews:
            self.response_preview = preview(completion.content or "")

    def note_failure(self, exc: OpenRouterError) -> None:
        """What a failed upstream call tells: attempts, and usage that was still billed (schema re-asks)."""
        self.attempts = exc.attempts
        if isinstance(exc, OpenRouterSchemaError) and isinstance(exc.usage, dict):
            self.usage = exc.usage

    def usage_record(self, *, keep_previews: bool) -> UsageRecord:
        """The ledger row for this request."""
        assert self.user_id is not None
        usage = self.usage or {}
        cost_usd = _cost(usage)
        if cost_usd is None and self.outcome in ("cancelled", "stopped", "upstream_error") and self.admitted:
            # The caller hung up or stopped the answer, or the stream failed upstream after it started,
            # before the provider's usage arrived; OpenRouter still bills what was generated. Charging the
            # reservation keeps each from being a way around the budget.
            cost_usd = self.reserved_usd
        return UsageRecord(
            request_id=self.ledger_id,
            user_id=ledger_user_id(self.user_id),
            function=self.function,
            # Caller text was checked at the edge; what upstream said was not, so it is made storable.
            model=storable(self.model, MODEL_ID_CHARS),
            status=self.status,
            error_type=self.error_type,
            outcome=self.outcome,
            latency_ms=round((time.perf_counter() - self.started) * 1000.0, 2),
            attempts=self.attempts,
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"),
            total_tokens=_count(usage, "total_tokens"),
            cost_usd=cost_usd,
            generation_id=storable(self.generation_id, MODEL_ID_CHARS),
            prompt_preview=self.prompt_preview if keep_previews else None,
            response_preview=storable(self.response_preview) if keep_previews else None,
            admitted=self.admitted or self.unmetered,
        )

    def caller_outcome(self) -> str:
        """What the caller got, one of :data:`~.metrics.OUTCOMES`: ``error`` for a 5xx, and for a stream
        that failed after its 200 went out (an upstream error event, upstream cut, a deadline, or the
        instance shutting down); ``cancelled`` when the caller left; ``client_error`` for another 4xx."""
        if self.status >= 500 or self.outcome == "upstream_error" or self.error_type == "shutting_down":
            return "error"
        if self.outcome in ("cancelled", "stopped"):
            return "cancelled"
        return "client_error" if self.status >= 400 else "ok"

    def time_to_first_token(self, now: float) -> float | None:
        """Seconds from arrival to a stream's first output chunk; a stream that ended well without any
        output counts its whole life. ``None`` for plain calls and streams that failed before output."""
        if not self.stream:
            return None
        if self.first_output is not None:
            return self.first_output - self.started
        return now - self.started if self.caller_outcome() == "ok" else None

    def record(self) -> None:
        """Metrics and the request's one log line, at the level its status deserves."""
        now = time.perf_counter()
        elapsed = now - self.started
        outcome = self.caller_outcome()
        ttft = self.time_to_first_token(now)
        # A label only for a model upstream served (it answered with a generation): a caller's refused
        # or unknown model names would each become a series, held for the life of the process.
        model = "none" if self.model is None else self.model if self.generation_id is not None else "other"
        METRICS.inc("orf_requests_total", function=self.function, status=str(self.status), model=model, outcome=outcome)
        METRICS.observe_latency(elapsed, function=self.function, stream="true" if self.stream else "false")
        if ttft is not None:
            METRICS.observe("orf_time_to_first_token_seconds", ttft, function=self.function)
        if self.attempts:
            METRICS.inc("orf_upstream_attempts_total", self.attempts, function=self.function)
            if self.attempts > 1:
                METRICS.inc("orf_upstream_retries_total", self.attempts - 1, function=self.function)
        usage = self.usage or {}
        prompt_tokens, completion_tokens = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
        cost = _cost(usage)
        if prompt_tokens is not None:
            METRICS.inc("orf_tokens_total", prompt_tokens, function=self.function, model=model, kind="prompt")
        if completion_tokens is not None:
            METRICS.inc("orf_tokens_total", completion_tokens, function=self.function, model=model, kind="completion")
        if cost is not None:
            METRICS.inc("orf_cost_usd_total", cost, function=self.function, model=model)
        # A stream that failed after its 200 went out is a failure too, whatever its status says.
        failed = outcome == "error"
        level = logging.ERROR if failed else logging.WARNING if self.status >= 400 else logging.INFO
        if not log.isEnabledFor(level):
            return
        fields = {
            "request_id": self.request_id,
            "function": self.function,
            "user_id": self.user_id,
            "model": self.model[:MODEL_ID_CHARS] if self.model is not None else None,
            "status": self.status,
            "error_type": self.error_type,
            "outcome": self.outcome,
            "latency_ms": round(elapsed * 1000.0, 2),
            "stream": self.stream,
            "ttft_ms": round(ttft * 1000.0, 2) if ttft is not None else None,
            "failed": failed,
            "attempts": self.attempts,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost": cost,
            "generation_id": self.generation_id,
            "prompt_guard": list(self.guard) or None,
            "prompt_preview": self.prompt_preview,
            "response_preview": self.response_preview,
        }
        # The record, if one is built, names this method, which is where every request's line comes from.
        message = f"{self.function} {self.status} {self.outcome}"
        log_fields(log, level, fields, message, (__file__, _RECORD_LINE, "record"))


# Where the request line is logged from (a record made for it skips the stack walk that would find it).
_RECORD_LINE = Exchange.record.__code__.co_firstlineno

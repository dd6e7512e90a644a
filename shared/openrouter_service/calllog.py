"""One log line per upstream call, with every secret masked.

Standard logging with the fields passed as ``extra={"json_fields": {...}}`` (the convention
google-cloud-logging's structured handler reads); the message is the event name. Whoever installs the
handler decides how a line is rendered (the functions layer writes one JSON object per line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .errors import OpenRouterError
from .messages import last_user_text
from .redact import PREVIEW_CHARS, mask_secrets, mask_value

__all__ = ["CALL_EVENT", "ERROR_EVENT", "CallLog", "logger"]

logger = logging.getLogger("openrouter_service")

CALL_EVENT = "openrouter.call"
ERROR_EVENT = "openrouter.error"


class CallLog:
    """Writes a call's line: INFO when it succeeded, WARNING when it failed; previews masked and cut."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def mask(self, text: str) -> str:
        """``text`` without our API key, bearer tokens or JWTs."""
        return mask_secrets(text, self._secret)

    def success(self, payload: Mapping[str, Any], data: Mapping[str, Any], latency_ms: float, attempts: int) -> None:
        """The line for a call that got its answer ``data`` (OpenAI-shaped: ``id``, ``model``, ``usage``,
        ``choices[0].message.content``)."""
        if not logger.isEnabledFor(logging.INFO):
            return
        usage = data.get("usage") or {}
        message = (data.get("choices") or [{}])[0].get("message") or {}
        fields = {
            "model": payload.get("model"),
            "served_by": data.get("model"),
            "status": 200,
            "latency_ms": round(latency_ms, 1),
            "attempts": attempts,
            "generation_id": data.get("id"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "cost": usage.get("cost"),
            "prompt_preview": self._prompt_preview(payload),
            "response_preview": self._preview(str(message.get("content") or "")),
        }
        logger.info(CALL_EVENT, extra={"json_fields": fields})

    def failure(self, payload: Mapping[str, Any], error: OpenRouterError, latency_ms: float) -> None:
        """The line for a call that failed, naming the error by its class."""
        if not logger.isEnabledFor(logging.WARNING):
            return
        fields = {
            "model": payload.get("model"),
            "error": type(error).__name__,
            "upstream_status": error.upstream_status,
            "upstream_code": error.upstream_code,
            "latency_ms": round(latency_ms, 1),
            "attempts": error.attempts,
            "error_message": self._preview(error.message),
            "metadata": mask_value(error.metadata, self._secret) if error.metadata else None,
            "prompt_preview": self._prompt_preview(payload),
        }
        logger.warning(ERROR_EVENT, extra={"json_fields": fields})

    def _prompt_preview(self, payload: Mapping[str, Any]) -> str:
        return self._preview(last_user_text(payload.get("messages") or []))

    def _preview(self, text: str) -> str:
        """``redact.preview`` of :meth:`mask`: masked once (the patterns find nothing new in masked text)."""
        masked = mask_secrets(text, self._secret)
        return masked if len(masked) <= PREVIEW_CHARS else masked[: PREVIEW_CHARS - 1] + "…"

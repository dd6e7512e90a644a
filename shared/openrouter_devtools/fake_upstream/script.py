"""The script: a FIFO queue of steps, each chat request consuming one; an empty queue means the echo reply.

Fault kinds (``{"fault": kind, ...}``; any step may carry ``"repeat": k``, ``"content"``, ``"model"``
and ``"chunk_delay"``):

``reply``          normal reply; optional ``content``, ``usage`` (override), ``finish_reason``, ``model``.
``status``         HTTP ``status`` with the error envelope (+ ``headers``, ``message``, ``metadata``).
``error_200``      HTTP 200 whose body is only ``{"error": {...}}`` (also when streaming was asked).
``finish_error``   HTTP 200 JSON completion, ``finish_reason: "error"``, ``choices[0].error``, partial content.
``empty_choices``  HTTP 200 completion with ``"choices": []`` (stream: only the usage chunk + ``[DONE]``).
``malformed``      HTTP 200 ``application/json`` with truncated JSON.
``midstream_error`` stream ``after`` words then an error chunk (``[DONE]`` only if ``done``).
``cut``            stream ``after`` words then close the socket without the final 0-chunk
                   (non-stream: Content-Length larger than the bytes sent, then close).
``slow``           sleep ``delay`` seconds then answer normally.
``hang``           never answer; returns when the client disconnects or the server stops.
``reset``          abort the connection with a TCP RST, no response.
``garbage``        answer with bytes that are not HTTP (``bytes``: the text to send), then close.
``keepalive``      stream starts with ``count`` ``: OPENROUTER PROCESSING`` comments (``delay`` between).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["FAULTS", "Script", "validate_step"]

FAULTS = frozenset(
    {
        "reply",
        "status",
        "error_200",
        "finish_error",
        "empty_choices",
        "malformed",
        "midstream_error",
        "cut",
        "slow",
        "hang",
        "reset",
        "garbage",
        "keepalive",
    }
)


def validate_step(step: Any) -> dict[str, Any]:
    """A copy of ``step`` once it is a well-formed step; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(step, dict):
        raise ValueError(f"script step must be a dict, got {type(step).__name__}")
    fault = step.get("fault", "reply")
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
    repeat = step.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError("'repeat' must be a positive integer")
    if fault == "status":
        status = step.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise ValueError("'status' must be an integer HTTP status in 200..599")
    headers = step.get("headers", {})
    if not isinstance(headers, dict):
        raise ValueError("'headers' must be a dict")
    for key in ("after", "count"):
        value = step.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key!r} must be a non-negative integer")
    for key in ("delay", "chunk_delay"):
        value = step.get(key, 0)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key!r} must be a non-negative number")
    return dict(step)


class Script:
    """The queue of steps; thread-safe, since tests script from another thread than the server's loop."""

    def __init__(self) -> None:
        self._queue: deque[list[Any]] = deque()  # [step, remaining]
        self._lock = threading.Lock()

    def extend(self, steps: tuple[dict[str, Any], ...]) -> None:
        """Validate every step, then append them all (none are queued if one is malformed)."""
        validated = [validate_step(step) for step in steps]
        with self._lock:
            for step in validated:
                self._queue.append([step, step.get("repeat", 1)])

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def next_step(self) -> dict[str, Any] | None:
        """The step for the next chat request (counting down its ``repeat``), or ``None`` when empty."""
        with self._lock:
            if not self._queue:
                return None
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._queue.popleft()
            step: dict[str, Any] = entry[0]
            return step

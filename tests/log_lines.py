"""Reading log records the way they reach stdout: through the product's one JSON formatter."""

from __future__ import annotations

import json
import logging
from typing import Any

from openrouter_functions.logs import JsonFormatter, MaskSecrets

_FORMATTER = JsonFormatter()
_MASK = MaskSecrets()


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    """The JSON object this record becomes on stdout (secrets masked, as the handler does)."""
    _MASK.filter(record)
    line: dict[str, Any] = json.loads(_FORMATTER.format(record))
    return line


def request_lines(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    """The per-request log lines among ``records``, oldest first."""
    return [as_json(r) for r in records if r.name == "openrouter_functions.request"]

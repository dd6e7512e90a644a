"""Every log line is one JSON object on stdout, in one shape, written by one formatter.

Code logs with the standard library and passes its fields as ``extra={"json_fields": {...}}`` (the
convention google-cloud-logging's structured handler reads too). The formatter turns the record into
``{"severity", "message", "logger", ...fields}``: ``severity`` is the record's level, so
``LOG_LEVEL=WARNING`` hides exactly the lines that say INFO. Secrets are masked by a filter on the
handler, so no line reaches stdout with an API key, bearer token or JWT in it, whoever wrote it.

A line can always be written: it is ASCII (non-ASCII text, a caller's lone surrogate included, is
written as JSON escapes, so no stream encoding can refuse it) and strict JSON (a NaN or infinity is
written as a string).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from typing import Any, TextIO

from openrouter_service.redact import mask_secrets, mask_value

__all__ = ["JsonFormatter", "MaskSecrets", "configure_logging", "log_fields"]

# Cloud Logging's severity names; Python's CRITICAL is theirs too.
_SEVERITY = {"WARN": "WARNING", "FATAL": "CRITICAL"}
_LOGGERS = ("openrouter_functions", "openrouter_service")


class MaskSecrets(logging.Filter):
    """Masks keys, bearer tokens and JWTs in a record's message and structured fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict):
            record.json_fields = mask_value(fields)
        return True


# Built once: json.dumps with options builds an encoder for every line.
_STRICT_ENCODER = json.JSONEncoder(default=str, allow_nan=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: severity from the level, the message, the logger, the fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "json_fields", None)
        exception = None
        if record.exc_info:
            # A traceback can quote a header or a URL with a key in it; it is masked like everything else.
            exception = mask_secrets(self.formatException(record.exc_info))
        return _json_line(
            record.levelname, record.getMessage(), record.name, fields if isinstance(fields, dict) else None, exception
        )


def _json_line(
    level_name: str, message: str, logger: str, fields: dict[str, Any] | None, exception: str | None = None
) -> str:
    """The line :class:`JsonFormatter` writes for a record with these parts."""
    line: dict[str, Any] = {"severity": _SEVERITY.get(level_name, level_name), "message": message, "logger": logger}
    if fields:
        # A field never replaces the three keys every line is read by.
        if fields.keys().isdisjoint(line):
            line.update(fields)
        else:
            line.update((k, v) for k, v in fields.items() if k not in line)
    if exception is not None:
        line["exception"] = exception
    try:
        return _STRICT_ENCODER.encode(line)  # json.dumps(line, default=str, allow_nan=False)
    except ValueError:  # a NaN or infinity somewhere in the fields: rare, so only then walked
        return json.dumps(_strict(line), default=str)


class _JsonLines(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs: JSON lines on stdout, secrets masked."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.mask = MaskSecrets()
        self.setFormatter(JsonFormatter())
        self.addFilter(self.mask)


def _own_handler(logger: logging.Logger, level: int) -> _JsonLines | None:
    """Our handler, when it is the only thing a record of ``logger`` at ``level`` would meet on its way out
    (no other handler or filter, nothing disabled, nothing changed since :func:`configure_logging`)."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        handlers = current.handlers
        if handlers:
            handler = handlers[0]
            if (
                len(handlers) == 1
                and not current.propagate
                and type(handler) is _JsonLines
                and handler.filters == [handler.mask]
                and type(handler.formatter) is JsonFormatter
                and level >= handler.level
            ):
                return handler
            return None
        if not current.propagate:
            return None
        current = current.parent
    return None


def log_fields(
    logger: logging.Logger, level: int, fields: dict[str, Any], message: str, where: tuple[str, int, str]
) -> None:
    """``logger.log(level, message, extra={"json_fields": fields})``, from ``where`` (file, line, function).

    When the record would only meet our own handler (as deployed), the line it would write is written
    straight away: the same bytes, without building a record and passing it through the logging
    machinery, which is most of what a line costs (once per request). A failed write is reported as the
    handler reports one (``handleError``). Otherwise, or if making the line fails, the record goes the
    standard way. The caller has checked ``logger.isEnabledFor(level)``.
    """
    handler = _own_handler(logger, level)
    line = _direct_line(logger, level, fields, message) if handler is not None else None
    if handler is not None and line is not None:
        handler.acquire()
        try:
            handler.stream.write(line + handler.terminator)
            handler.stream.flush()
        except RecursionError:
            raise
        except Exception:  # part of the line may be out: reported as the handler would, never written twice
            handler.handleError(_record(logger, level, fields, message, where))
        finally:
            handler.release()
        return
    logger.handle(_record(logger, level, fields, message, where))


def _direct_line(logger: logging.Logger, level: int, fields: dict[str, Any], message: str) -> str | None:
    """The line our handler would write for this record; None if making it fails (the standard way then
    formats the record again and reports the failure as the handler does)."""
    try:
        return _json_line(logging.getLevelName(level), mask_secrets(message), logger.name, mask_value(fields))
    except RecursionError:
        raise
    except Exception:
        return None


def _record(
    logger: logging.Logger, level: int, fields: dict[str, Any], message: str, where: tuple[str, int, str]
) -> logging.LogRecord:
    path, line_number, function = where
    return logger.makeRecord(
        logger.name, level, path, line_number, message, (), None, function, {"json_fields": fields}
    )


def _strict(value: Any) -> Any:
    """``value`` with every non-finite float written as a string, which strict JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def configure_logging(level: str | None = None) -> None:
    """Install the JSON handler on the product's loggers once (what Cloud Run and DigitalOcean collect).

    The functions log every request at its own level; the client logs its calls too, but only its
    problems are worth a line next to the request's own (WARNING and up).
    """
    chosen = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            continue
        logger.addHandler(_JsonLines())
        logger.setLevel(chosen if name == "openrouter_functions" else max(logging.WARNING, _level(chosen)))
        logger.propagate = False


def _level(name: str) -> int:
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else logging.INFO

"""The request's log line written straight to stdout is the line the logging machinery would write."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from openrouter_functions.logs import configure_logging, log_fields

NAMES = ("openrouter_functions", "openrouter_service")
WHERE = (__file__, 1, "test")


@pytest.fixture
def stdout_at_info(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The product's loggers as deployed (configure_logging at INFO), writing into a buffer."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in NAMES
    }
    for name in NAMES:
        logging.getLogger(name).handlers.clear()
    configure_logging("INFO")
    yield out
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def our_handler() -> logging.Handler:
    """The handler configure_logging installed on the product's logger."""
    (handler,) = [h for h in logging.getLogger("openrouter_functions").handlers if type(h).__name__ == "_JsonLines"]
    return handler


@contextmanager
def as_deployed() -> Iterator[None]:
    """Only our handler on the product's logger: pytest's log capture, which it attaches to every logger
    that does not propagate, taken off for the block (as no such thing is there when deployed)."""
    logger = logging.getLogger("openrouter_functions")
    saved = logger.handlers[:]
    logger.handlers[:] = [our_handler()]
    try:
        yield
    finally:
        logger.handlers[:] = saved


KEY = "sk-or-v1-" + "b" * 40
FIELD_SETS = [
    {"request_id": "r1", "status": 200, "cost": 4e-05, "stream": False, "ttft_ms": None, "prompt_guard": ["persona"]},
    {"prompt_preview": f"my key is {KEY}", "nested": [{"k": KEY}], "error_type": None},
    {"response_preview": "zażółć \ud800 ✓", "latency_ms": float("nan"), "cost": float("inf")},  # non-ASCII, NaN
    {"message": "never replaces the message", "severity": "nor the severity", "status": 502},
    {},
]


@pytest.mark.parametrize("fields", FIELD_SETS)
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
def test_the_direct_line_is_the_standard_line(
    stdout_at_info: io.StringIO, fields: dict[str, object], level: int
) -> None:
    request = logging.getLogger("openrouter_functions.request")
    handler = our_handler()
    emitted: list[logging.LogRecord] = []
    emit = handler.emit

    def counted(record: logging.LogRecord) -> None:
        emitted.append(record)
        emit(record)

    with as_deployed(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(handler, "emit", counted)
        log_fields(request, level, dict(fields), "chat 200 ok", WHERE)
        assert emitted == [] and stdout_at_info.getvalue().count("\n") == 1  # written directly, no record
        request.log(level, "%s %s %s", "chat", 200, "ok", extra={"json_fields": dict(fields)})
        assert len(emitted) == 1
    direct, standard = stdout_at_info.getvalue().splitlines()
    assert direct == standard
    assert KEY not in direct
    json.loads(direct)  # strict JSON (NaN written as a string)


def test_another_handler_gets_the_record_the_standard_way(
    stdout_at_info: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    request = logging.getLogger("openrouter_functions.request")
    with as_deployed():
        request.addHandler(caplog.handler)
        try:
            log_fields(request, logging.INFO, {"status": 200, "detail": KEY}, "chat 200 ok", WHERE)
        finally:
            request.removeHandler(caplog.handler)
    (record,) = caplog.records
    assert record.getMessage() == "chat 200 ok"
    assert (record.pathname, record.lineno, record.funcName) == WHERE
    assert record.json_fields["status"] == 200
    # and our handler still wrote its line, masked
    (line,) = stdout_at_info.getvalue().splitlines()
    assert json.loads(line)["detail"] == "***"


def test_a_filter_on_the_logger_is_honoured(stdout_at_info: io.StringIO) -> None:
    class DropAll(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return False

    request = logging.getLogger("openrouter_functions.request")
    drop = DropAll()
    request.addFilter(drop)
    try:
        with as_deployed():
            log_fields(request, logging.INFO, {"a": 1}, "chat 200 ok", WHERE)
    finally:
        request.removeFilter(drop)
    assert stdout_at_info.getvalue() == ""


def test_a_failing_stdout_is_reported_as_logging_does_and_the_request_goes_on(
    stdout_at_info: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[logging.LogRecord] = []
    handler = our_handler()
    monkeypatch.setattr(handler, "handleError", reported.append)

    def broken(text: str) -> int:
        raise OSError("stdout is gone")

    monkeypatch.setattr(stdout_at_info, "write", broken)
    with as_deployed():
        log_fields(logging.getLogger("openrouter_functions.request"), logging.INFO, {"a": 1}, "chat 200 ok", WHERE)
    assert [r.getMessage() for r in reported] == ["chat 200 ok"]  # the standard path tried, and reported it


def test_a_flush_failing_after_the_write_reports_once_and_never_writes_the_line_twice(
    stdout_at_info: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    reported: list[logging.LogRecord] = []
    handler = our_handler()
    monkeypatch.setattr(handler, "handleError", reported.append)

    def full_pipe() -> None:
        raise BlockingIOError("the pipe is full")

    monkeypatch.setattr(stdout_at_info, "flush", full_pipe)
    with as_deployed():
        log_fields(logging.getLogger("openrouter_functions.request"), logging.INFO, {"a": 1}, "chat 200 ok", WHERE)
    assert stdout_at_info.getvalue().count("chat 200 ok") == 1
    assert [r.getMessage() for r in reported] == ["chat 200 ok"]

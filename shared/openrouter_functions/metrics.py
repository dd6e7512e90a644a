"""Prometheus metrics without a client library: a few counters and one histogram, text format 0.0.4.

Label values are escaped as the format says and bounded: each is cut to :data:`LABEL_CHARS`, made
encodable, and a metric keeps at most :data:`MAX_SERIES` label sets, later ones adding to one
``other`` series, so no caller can grow the process or break a scrape through a label.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from typing import TypeVar

__all__ = ["METRICS", "Metrics"]

T = TypeVar("T")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

LABEL_CHARS = 128
MAX_SERIES = 500
OTHER = "other"

Labels = tuple[tuple[str, str], ...]


def _value(value: str) -> str:
    value = value[:LABEL_CHARS]
    if value.isascii():
        return value
    # A lone surrogate cannot be written as UTF-8: it would fail every scrape from then on.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _labels(**labels: str) -> Labels:
    return tuple(sorted((name, _value(value)) for name, value in labels.items()))


def _escape(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _bounded(series: dict[Labels, T], key: Labels) -> Labels:
    """``key``, or the metric's one overflow key once it holds :data:`MAX_SERIES` label sets."""
    if key in series or len(series) < MAX_SERIES:
        return key
    return tuple((name, OTHER) for name, _ in key)


class Metrics:
    """Process-wide metrics; cheap to update on the request path."""

    _HELP = {
        "orf_requests_total": ("counter", "Requests answered, by function, HTTP status and model."),
        "orf_request_duration_seconds": ("histogram", "Time to answer a request (to the last byte for streams)."),
        "orf_upstream_attempts_total": ("counter", "Calls made to OpenRouter, retries included."),
        "orf_upstream_retries_total": ("counter", "Calls to OpenRouter that were retries."),
        "orf_tokens_total": ("counter", "Tokens reported by the provider, by kind (prompt/completion)."),
        "orf_cost_usd_total": ("counter", "Cost in USD reported by the provider."),
        "orf_prompt_guard_total": ("counter", "Requests the prompt guard flagged or blocked, by rule."),
        "orf_usage_unrecorded_total": ("counter", "Usage records that could not be written to the ledger."),
        "orf_ledger_errors_total": ("counter", "Failed ledger calls, by operation (begin/finish)."),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._hist: dict[Labels, list[float]] = {}
        self._hist_sum: dict[Labels, float] = defaultdict(float)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to a counter."""
        key = _labels(**labels)
        with self._lock:
            series = self._counters[name]
            series[_bounded(series, key)] += value

    def observe_latency(self, seconds: float, **labels: str) -> None:
        """Record one request duration."""
        key = _labels(**labels)
        with self._lock:
            key = _bounded(self._hist, key)
            counts = self._hist.get(key)
            if counts is None:
                counts = self._hist[key] = [0.0] * (len(LATENCY_BUCKETS) + 1)
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._hist_sum[key] += seconds

    def value(self, name: str, **labels: str) -> float:
        """A counter's current value (tests and health)."""
        with self._lock:
            return self._counters.get(name, {}).get(_labels(**labels), 0.0)

    def render(self) -> str:
        """Everything in Prometheus' text exposition format."""
        lines: list[str] = []
        with self._lock:
            for name, (kind, text) in self._HELP.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                if kind == "counter":
                    for labels, value in sorted(self._counters.get(name, {}).items()):
                        lines.append(f"{name}{_render_labels(labels)} {value:g}")
                    continue
                for labels, counts in sorted(self._hist.items()):
                    running = 0.0
                    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                        running += count
                        le = "+Inf" if bound == float("inf") else f"{bound:g}"
                        lines.append(f"{name}_bucket{_render_labels(labels, (('le', le),))} {running:g}")
                    lines.append(f"{name}_sum{_render_labels(labels)} {self._hist_sum[labels]:.6f}")
                    lines.append(f"{name}_count{_render_labels(labels)} {running:g}")
        return "\n".join(lines) + "\n"


METRICS = Metrics()

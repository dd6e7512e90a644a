"""Prometheus metrics through ``prometheus_client``, with the bounds a public endpoint needs.

Every metric is declared once in :data:`SPECS` (name, help, label names). Callers go through
:data:`METRICS`: ``inc`` a counter, ``observe`` a histogram, ``render``/``exposition`` for a scrape.

*Bounded labels.* A label value is cut to :data:`LABEL_CHARS` and made encodable (a lone surrogate is
written as its backslash escape, so no value can make a scrape fail to encode), and a metric keeps at
most :data:`MAX_SERIES` label sets. Later ones fold into an overflow series that keeps the metric's
*kept* labels (those with a small fixed vocabulary, such as ``function`` and ``outcome``) and says
``other`` for the rest, so no caller can grow the process through a label and the error ratio still
counts what the overflow holds. (The overflow series themselves are capped too: past
:data:`MAX_OVERFLOW` more, everything goes to one all-``other`` series.)

*Several processes.* When ``PROMETHEUS_MULTIPROC_DIR`` is set before the process starts,
prometheus_client keeps each value in per-process files in that directory, and :meth:`Metrics.exposition`
merges the files of every process: whichever gunicorn worker (``WORKERS``) answers the scrape reports the
counts of all of them. The directory is created when missing and must start empty with the server (a
container's fresh ``/tmp``): files left from an earlier run would be counted again. Without the variable,
values live in this process only.

A metric that cannot be written (the directory became unwritable) never fails the request: the first
such error is logged and the value dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest, values

__all__ = [
    "CONTENT_TYPE",
    "LABEL_CHARS",
    "LATENCY_BUCKETS",
    "MAX_SERIES",
    "METRICS",
    "OUTCOMES",
    "SPECS",
    "Metrics",
    "multiprocess_mode",
]

log = logging.getLogger("openrouter_functions.metrics")

# The text format every Prometheus reads (prometheus_client writes it; a newer server also accepts it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. 3 is a bound of its own: the latency alerts ask whether the 95th percentile is above 3 s,
# which a bucket edge there answers exactly. Streams run for minutes, hence 120 and 300.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

LABEL_CHARS = 128
MAX_SERIES = 500
MAX_OVERFLOW = 64
OTHER = "other"

# What a request's caller got (the ``outcome`` label of orf_requests_total; Exchange.caller_outcome):
# ``error`` is a 5xx or a stream that failed after its 200 went out, which the error-ratio alerts count.
OUTCOMES = ("ok", "client_error", "error", "cancelled")

# No *_created series: they double a scrape for nothing the alerts use (and multi-process mode has none).
disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: its kind, help text, label names, and the labels an overflow series keeps."""

    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...]
    kept: tuple[str, ...] = ("function",)


# Label names are declared in alphabetical order, which is the order a scrape shows them in.
SPECS: dict[str, Spec] = {
    "orf_requests_total": Spec(
        "counter",
        "Requests answered, by function, HTTP status, model and outcome (ok, client_error, error = 5xx or a "
        "stream that failed after its 200, cancelled = the caller left).",
        ("function", "model", "outcome", "status"),
        kept=("function", "outcome"),
    ),
    "orf_request_duration_seconds": Spec(
        "histogram",
        "Time to answer a request: to the last byte, for streams (stream=true) their whole life.",
        ("function", "stream"),
        kept=("function", "stream"),
    ),
    "orf_time_to_first_token_seconds": Spec(
        "histogram",
        "Streams: time from the request's arrival to the first chunk with model output sent to the caller.",
        ("function",),
    ),
    "orf_upstream_attempts_total": Spec("counter", "Calls made to OpenRouter, retries included.", ("function",)),
    "orf_upstream_retries_total": Spec("counter", "Calls to OpenRouter that were retries.", ("function",)),
    "orf_tokens_total": Spec(
        "counter",
        "Tokens reported by the provider, by kind (prompt/completion).",
        ("function", "kind", "model"),
        kept=("function", "kind"),
    ),
    "orf_cost_usd_total": Spec("counter", "Cost in USD reported by the provider.", ("function", "model")),
    "orf_prompt_guard_total": Spec(
        "counter",
        "Requests the prompt guard flagged or blocked, by rule.",
        ("action", "function", "rule"),
        kept=("action", "function"),
    ),
    "orf_usage_unrecorded_total": Spec(
        "counter", "Usage records that could not be written to the ledger.", ("function",)
    ),
    "orf_ledger_errors_total": Spec(
        "counter", "Failed ledger calls, by operation (begin/finish).", ("function", "op"), kept=("function", "op")
    ),
}


def multiprocess_mode() -> bool:
    """Whether values live in ``PROMETHEUS_MULTIPROC_DIR`` (decided when prometheus_client was imported)."""
    return values.ValueClass is not values.MutexValue


def _prepare_directory() -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and multiprocess_mode():
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.error("metrics_directory_unusable", extra={"json_fields": {"path": directory, "error": str(exc)}})


_prepare_directory()


def _value(value: str) -> str:
    value = str(value)[:LABEL_CHARS]
    if value.isascii():
        return value
    # A lone surrogate cannot be written as UTF-8: it would fail every scrape from then on.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Metrics:
    """Process-wide metrics; cheap to update on the request path (a dict look-up, then the child's own
    lock-protected add)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry = CollectorRegistry(auto_describe=False)
        self._metrics: dict[str, Counter | Histogram] = {}
        self._children: dict[str, dict[tuple[str, ...], Any]] = {}
        # (name, *label items) -> child, for label sets taken as given (not cut, not folded): bounded by
        # the series a metric may hold times the keyword orders of its call sites.
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._broken = False
        for name, spec in SPECS.items():
            if spec.kind == "counter":
                self._metrics[name] = Counter(name, spec.help, spec.labels, registry=self._registry)
            else:
                self._metrics[name] = Histogram(
                    name, spec.help, spec.labels, registry=self._registry, buckets=LATENCY_BUCKETS
                )
            self._children[name] = {}

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` (>= 0) to a counter."""
        child = self._cache.get((name, *labels.items()))
        try:
            (child or self._child(name, labels)).inc(value)
        except OSError as exc:
            self._fail(exc)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one value in a histogram."""
        child = self._cache.get((name, *labels.items()))
        try:
            (child or self._child(name, labels)).observe(seconds)
        except OSError as exc:
            self._fail(exc)

    def observe_latency(self, seconds: float, **labels: str) -> None:
        """Record one request duration (``orf_request_duration_seconds``)."""
        self.observe("orf_request_duration_seconds", seconds, **labels)

    def _child(self, name: str, labels: dict[str, str]) -> Any:
        spec = SPECS.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}")
        if labels.keys() != set(spec.labels):
            raise ValueError(f"{name} takes the labels {', '.join(spec.labels)}; got {', '.join(labels) or 'none'}")
        given = tuple(labels[label] for label in spec.labels)
        key = tuple(_value(value) for value in given)
        with self._lock:
            children = self._children[name]
            if key not in children and len(children) >= MAX_SERIES:
                key = tuple(v if label in spec.kept else OTHER for label, v in zip(spec.labels, key, strict=True))
                if key not in children and len(children) >= MAX_SERIES + MAX_OVERFLOW:
                    key = (OTHER,) * len(key)
            child = children.get(key)
            if child is None:
                child = children[key] = self._metrics[name].labels(*key)
            if key == given:
                self._cache[(name, *labels.items())] = child
        return child

    def _fail(self, exc: OSError) -> None:
        if not self._broken:
            self._broken = True
            log.error("metrics_unwritable", extra={"json_fields": {"error": str(exc)}})

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` (e.g. ``orf_requests_total``, ``..._seconds_count``) whose
        labels include ``labels``: this process's own values (tests and health)."""
        wanted = {label: _value(value) for label, value in labels.items()}
        total = 0.0
        for metric in self._metrics.values():
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                        total += sample.value
        return total

    def exposition(self) -> bytes:
        """Everything in Prometheus' text format, merged across processes in multi-process mode."""
        if multiprocess_mode():
            from prometheus_client.multiprocess import MultiProcessCollector  # only multi-process mode reads it

            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self._registry)

    def render(self) -> str:
        """:meth:`exposition` as text."""
        return self.exposition().decode("utf-8")


METRICS = Metrics()

"""What metrics cost per request: prometheus_client (metrics.py now) vs the hand-written exposition it
replaced (copied below as ``OldMetrics``, as it was at the commit before).

Per request, ``Exchange.record()`` makes the same metric calls in both: one ``orf_requests_total`` inc,
one duration observation, upstream attempts, prompt and completion tokens, cost (6 calls); the new one
also observes the stream's time to first token (7). Measured, each in rounds with the implementations
interleaved (median of rounds; ``best`` is the fastest round):

* ``record``: µs per request's metric calls, with 60 label sets already present (3 functions x 20 models);
* ``render``: ms per scrape with those series (the old ``render()``; the new ``exposition()``);
* both again with ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multi-process mode, what the
  container image runs: values in mmap'ed files; a scrape merges the files of 2 worker processes),
  measured in a child process because the mode is chosen when prometheus_client is imported.

Pure CPU, no network. ``--quick`` for a smoke run.

    .venv/bin/python bench/metrics_cost.py [--rounds 15] [--requests 20000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from _common import environment, print_table, write_results
from openrouter_functions.metrics import Metrics

FUNCTIONS = ("chat", "completion", "health")
MODELS = tuple(f"vendor/model-{i}" for i in range(20))

# -- the old implementation (shared/openrouter_functions/metrics.py before prometheus_client) ---------------

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
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _labels(**labels: str) -> Labels:
    return tuple(sorted((name, _value(value)) for name, value in labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    pairs = labels + extra
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _bounded(series: dict[Labels, T], key: Labels) -> Labels:
    if key in series or len(series) < MAX_SERIES:
        return key
    return tuple((name, OTHER) for name, _ in key)


class OldMetrics:
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
        key = _labels(**labels)
        with self._lock:
            series = self._counters[name]
            series[_bounded(series, key)] += value

    def observe_latency(self, seconds: float, **labels: str) -> None:
        key = _labels(**labels)
        with self._lock:
            key = _bounded(self._hist, key)
            counts = self._hist.get(key)
            if counts is None:
                counts = self._hist[key] = [0.0] * (len(LATENCY_BUCKETS) + 1)
            counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._hist_sum[key] += seconds

    def render(self) -> str:
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


# -- one request's metric calls, as Exchange.record() makes them ---------------------------------------------


def old_record(m: OldMetrics, function: str, model: str, elapsed: float) -> None:
    m.inc("orf_requests_total", function=function, status="200", model=model)
    m.observe_latency(elapsed, function=function)
    m.inc("orf_upstream_attempts_total", 1, function=function)
    m.inc("orf_tokens_total", 12, function=function, model=model, kind="prompt")
    m.inc("orf_tokens_total", 40, function=function, model=model, kind="completion")
    m.inc("orf_cost_usd_total", 0.0004, function=function, model=model)


def new_record(m: Metrics, function: str, model: str, elapsed: float) -> None:
    m.inc("orf_requests_total", function=function, status="200", model=model, outcome="ok")
    m.observe_latency(elapsed, function=function, stream="true")
    m.observe("orf_time_to_first_token_seconds", elapsed / 10, function=function)
    m.inc("orf_upstream_attempts_total", 1, function=function)
    m.inc("orf_tokens_total", 12, function=function, model=model, kind="prompt")
    m.inc("orf_tokens_total", 40, function=function, model=model, kind="completion")
    m.inc("orf_cost_usd_total", 0.0004, function=function, model=model)


def warm(record: Callable[[Any, str, str, float], None], metrics: Any) -> None:
    for function in FUNCTIONS:
        for model in MODELS:
            record(metrics, function, model, 0.3)


def time_records(record: Callable[[Any, str, str, float], None], metrics: Any, requests: int) -> float:
    """µs per request's metric calls."""
    pairs = [(FUNCTIONS[i % 3], MODELS[i % len(MODELS)]) for i in range(requests)]
    started = time.perf_counter()
    for function, model in pairs:
        record(metrics, function, model, 0.3)
    return (time.perf_counter() - started) / requests * 1e6


def time_render(render: Callable[[], object], scrapes: int) -> float:
    """ms per scrape."""
    started = time.perf_counter()
    for _ in range(scrapes):
        render()
    return (time.perf_counter() - started) / scrapes * 1e3


def in_process(rounds: int, requests: int, scrapes: int) -> dict[str, list[float]]:
    old, new = OldMetrics(), Metrics()
    warm(old_record, old)
    warm(new_record, new)
    samples: dict[str, list[float]] = defaultdict(list)
    for i in range(rounds):
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        for name in order:
            if name == "old":
                samples["old record"].append(time_records(old_record, old, requests))
                samples["old render"].append(time_render(old.render, scrapes))
            else:
                samples["new record"].append(time_records(new_record, new, requests))
                samples["new render"].append(time_render(new.exposition, scrapes))
    samples["render bytes old"] = [float(len(old.render().encode()))]
    samples["render bytes new"] = [float(len(new.exposition()))]
    return dict(samples)


def child_main(argv: list[str]) -> None:
    """Run inside a child process with PROMETHEUS_MULTIPROC_DIR set: ``writer`` fills the files,
    ``measure`` times record and a merged scrape."""
    from openrouter_functions.metrics import Metrics, multiprocess_mode

    assert multiprocess_mode()
    role, rounds, requests, scrapes = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    metrics = Metrics()
    warm(new_record, metrics)
    if role == "writer":
        return
    records = [time_records(new_record, metrics, requests) for _ in range(rounds)]
    renders = [time_render(metrics.exposition, scrapes) for _ in range(rounds)]
    print(json.dumps({"record": records, "render": renders, "bytes": len(metrics.exposition())}))


def multi_process(rounds: int, requests: int, scrapes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orf-metrics-bench-") as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        argv = [sys.executable, __file__, "--child"]
        subprocess.run([*argv, "writer", "1", "1", "1"], env=env, check=True, timeout=120)
        done = subprocess.run(
            [*argv, "measure", str(rounds), str(requests), str(scrapes)],
            env=env,
            check=True,
            timeout=600,
            capture_output=True,
            text=True,
        )
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests, args.scrapes = 3, 2_000, 5

    local = in_process(args.rounds, args.requests, args.scrapes)
    multi = multi_process(args.rounds, args.requests, args.scrapes)

    def row(name: str, values: list[float], unit: str) -> list[str]:
        return [name, f"{statistics.median(values):.2f} {unit}", f"{min(values):.2f} {unit}"]

    rows = [
        row("old: record (6 calls)", local["old record"], "µs"),
        row("prometheus_client: record (7 calls)", local["new record"], "µs"),
        row("prometheus_client multi-process: record", multi["record"], "µs"),
        row("old: render (60 series sets)", local["old render"], "ms"),
        row("prometheus_client: render", local["new render"], "ms"),
        row("prometheus_client multi-process: render (2 files)", multi["render"], "ms"),
    ]
    print_table(["what", "median", "best"], rows)
    ratios = [n / o for n, o in zip(local["new record"], local["old record"], strict=True)]
    print(f"\nrecord, new / old (median of paired rounds): {statistics.median(ratios):.2f}x")
    sizes = (local["render bytes old"][0], local["render bytes new"][0], multi["bytes"])
    print("scrape size: old {:.0f} KiB, new {:.0f} KiB, multi-process {:.0f} KiB".format(*(b / 1024 for b in sizes)))
    results = {
        "settings": vars(args),
        "environment": environment(prometheus_client=metadata.version("prometheus-client")),
        "in_process": local,
        "multi_process": multi,
    }
    path = write_results("metrics_cost.quick" if args.quick else "metrics_cost", results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

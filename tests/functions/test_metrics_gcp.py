"""deploy/gcp as gcloud reads it: log-based metrics (``gcloud logging metrics create --config-from-file``) and
alert policies (``gcloud monitoring policies create --policy-from-file``), checked for their structure and
against the JSON log lines real requests write — every ``jsonPayload`` field they name exists, and each
metric's filter selects exactly the lines it should."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from helpers import ROOT, bearer
from log_lines import request_lines
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.metrics import LATENCY_BUCKETS

GCP = ROOT / "deploy" / "gcp"
METRIC_FILES = sorted((GCP / "log-metrics").glob("*.yaml"))
POLICY_FILES = sorted((GCP / "alert-policies").glob("*.yaml"))
HI = {"messages": [{"role": "user", "content": "Hello there"}]}

LOG_METRIC_FIELDS = {
    "description",
    "filter",
    "metricDescriptor",
    "valueExtractor",
    "labelExtractors",
    "bucketOptions",
    "disabled",
}
EXTRACT = re.compile(r"^EXTRACT\(jsonPayload\.(\w+)\)$")
FIELD = re.compile(r"jsonPayload\.(\w+)")
ALIGNERS = {"ALIGN_DELTA", "ALIGN_RATE", "ALIGN_SUM", "ALIGN_PERCENTILE_95"}
REDUCERS = {"REDUCE_SUM", "REDUCE_PERCENTILE_95", "REDUCE_MEAN", "REDUCE_MAX"}
# The line the deploy workflow's `monitoring` job reads a policy's name from (sed), to find it again.
DISPLAY_NAME_LINE = re.compile(r'^displayName: "(.+)"$', re.MULTILINE)


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


@pytest.fixture
async def log_lines(
    client: httpx.AsyncClient, fake: FakeOpenRouter, caplog: pytest.LogCaptureFixture
) -> list[dict[str, Any]]:
    """The JSON objects real requests write to stdout: a plain call, a good stream, a stream that fails
    after its 200, a refused call."""
    caplog.set_level("INFO", logger="openrouter_functions.request")
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    assert (await client.post("/chat", json={**HI, "stream": True}, headers=bearer())).status_code == 200
    fake.script({"fault": "midstream_error", "after": 2, "code": 502})
    assert (await client.post("/chat", json={**HI, "stream": True}, headers=bearer())).status_code == 200
    assert (await client.post("/chat", json={"messages": []}, headers=bearer())).status_code == 400
    lines = request_lines(caplog.records)
    assert len(lines) == 4
    return lines


# Cloud Logging lifts these out of jsonPayload (severity becomes the entry's severity): a filter on
# jsonPayload must not rely on them.
LIFTED = {"severity", "time", "timestamp", "httpRequest", "logging.googleapis.com/trace"}


def payload(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k not in LIFTED}


_CLAUSE = re.compile(r"^(jsonPayload\.\w+|resource\.type)\s*(>=|<=|!=|=|>|<)\s*(.+)$")


def _literal(text: str) -> Any:
    if text.startswith('"') and text.endswith('"'):
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text)


def selects(filter_text: str, line: dict[str, Any]) -> bool:
    """Whether a log-metric filter (one comparison per line, implicitly ANDed: the only form these files
    use) selects ``line``, as Cloud Logging would for an entry from a Cloud Run revision."""
    data = payload(line)
    for clause in filter_text.splitlines():
        match = _CLAUSE.match(clause.strip())
        assert match is not None, f"a filter line this test cannot read: {clause!r}"
        field, op, value = match.group(1), match.group(2), _literal(match.group(3))
        if field == "resource.type":
            assert (op, value) == ("=", "cloud_run_revision")
            continue
        name = field.split(".", 1)[1]
        have = data.get(name)
        if have is None:
            return False
        if op == "=":
            ok = have == value and type(have) is type(value) if isinstance(value, bool) else have == value
        elif op == "!=":
            ok = have != value
        else:
            assert isinstance(have, int | float) and not isinstance(have, bool), (name, have)
            ok = {">=": have >= value, "<=": have <= value, ">": have > value, "<": have < value}[op]
        if not ok:
            return False
    return True


def test_there_are_the_three_metrics_and_three_policies() -> None:
    assert [p.stem for p in METRIC_FILES] == ["orf_request_latency", "orf_requests", "orf_time_to_first_token"]
    assert [p.stem for p in POLICY_FILES] == ["error-ratio", "plain-latency", "stream-ttft"]


@pytest.mark.parametrize("path", METRIC_FILES, ids=lambda p: p.stem)
def test_a_log_metric_is_a_log_metric(path: Path) -> None:
    metric = load(path)
    assert set(metric) <= LOG_METRIC_FIELDS, set(metric) - LOG_METRIC_FIELDS
    assert "name" not in metric  # the file's name is the metric's (the workflow passes it)
    descriptor = metric["metricDescriptor"]
    assert descriptor["metricKind"] == "DELTA"
    labels = [label["key"] for label in descriptor["labels"]]
    assert all(label["valueType"] == "STRING" for label in descriptor["labels"])
    assert sorted(labels) == sorted(metric["labelExtractors"]), "every label has an extractor, and only those"
    for extractor in metric["labelExtractors"].values():
        assert EXTRACT.match(extractor), extractor
    if descriptor["valueType"] == "DISTRIBUTION":
        assert descriptor["unit"] == "ms"
        assert EXTRACT.match(metric["valueExtractor"])
        bounds = metric["bucketOptions"]["explicitBuckets"]["bounds"]
        assert bounds == [round(b * 1000) for b in LATENCY_BUCKETS]  # the Prometheus histogram's, in ms
    else:
        assert (descriptor["valueType"], "valueExtractor" in metric) == ("INT64", False)


def test_the_filters_select_the_lines_they_should(log_lines: list[dict[str, Any]]) -> None:
    plain, stream, broken, refused = log_lines
    assert (plain["stream"], stream["stream"], broken["stream"], refused["stream"]) == (False, True, True, False)
    requests, latency, ttft = (
        load(GCP / "log-metrics" / f"{name}.yaml")
        for name in ("orf_requests", "orf_request_latency", "orf_time_to_first_token")
    )
    assert [selects(requests["filter"], line) for line in log_lines] == [True, True, True, True]
    assert [selects(latency["filter"], line) for line in log_lines] == [True, False, False, True]
    assert [selects(ttft["filter"], line) for line in log_lines] == [False, True, True, False]


def test_the_extractors_find_their_values(log_lines: list[dict[str, Any]]) -> None:
    plain, stream, broken, refused = (payload(line) for line in log_lines)
    requests = load(GCP / "log-metrics" / "orf_requests.yaml")

    def labels(line: dict[str, Any]) -> dict[str, str]:
        # EXTRACT of a JSON number or boolean gives its JSON text
        out = {}
        for key, extractor in requests["labelExtractors"].items():
            match = EXTRACT.match(extractor)
            assert match is not None
            out[key] = json.dumps(line[match.group(1)]).strip('"')
        return out

    assert labels(plain) == {"function": "chat", "status": "200", "failed": "false"}
    assert labels(broken) == {"function": "chat", "status": "200", "failed": "true"}  # the stream that broke off
    assert labels(refused) == {"function": "chat", "status": "400", "failed": "false"}
    for name, line in (("orf_request_latency", plain), ("orf_time_to_first_token", stream)):
        match = EXTRACT.match(load(GCP / "log-metrics" / f"{name}.yaml")["valueExtractor"])
        assert match is not None
        value = line[match.group(1)]
        assert isinstance(value, float | int) and value >= 0, (name, value)


def test_every_json_payload_field_named_anywhere_exists(log_lines: list[dict[str, Any]]) -> None:
    keys = set().union(*(payload(line) for line in log_lines))
    named: set[str] = set()
    for path in METRIC_FILES + POLICY_FILES:
        named |= set(FIELD.findall(path.read_text(encoding="utf-8")))
    assert named, "the files name no jsonPayload field"
    assert named <= keys, named - keys
    assert {line["logger"] for line in log_lines} == {"openrouter_functions.request"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_an_alert_policy_reads_a_metric_defined_here(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    policy = load(path)
    [display] = DISPLAY_NAME_LINE.findall(text)
    assert display == policy["displayName"]
    assert set(policy) <= {
        "displayName",
        "combiner",
        "severity",
        "userLabels",
        "documentation",
        "conditions",
        "alertStrategy",
        "notificationChannels",
        "enabled",
    }
    assert "notificationChannels" not in policy  # they come from GCP_ALERT_CHANNELS
    assert policy["combiner"] == "OR"
    assert policy["severity"] in ("CRITICAL", "ERROR", "WARNING")
    assert policy["documentation"]["mimeType"] == "text/markdown"
    metrics = {p.stem: load(p) for p in METRIC_FILES}
    for condition in policy["conditions"]:
        threshold = condition["conditionThreshold"]
        filters = [("filter", "aggregations")]
        if "denominatorFilter" in threshold:
            filters.append(("denominatorFilter", "denominatorAggregations"))
        for key, aggregations_key in filters:
            metric_type = re.search(r'metric\.type="logging\.googleapis\.com/user/(\w+)"', threshold[key])
            assert metric_type is not None, threshold[key]
            metric = metrics[metric_type.group(1)]
            label_names = {label["key"] for label in metric["metricDescriptor"]["labels"]}
            assert set(re.findall(r"metric\.label\.(\w+)", threshold[key])) <= label_names
            assert 'resource.type="cloud_run_revision"' in threshold[key]
            for aggregation in threshold[aggregations_key]:
                assert aggregation["alignmentPeriod"] == "300s"
                assert aggregation["perSeriesAligner"] in ALIGNERS
                assert aggregation["crossSeriesReducer"] in REDUCERS
                assert aggregation["groupByFields"] == ["metric.label.function"]
                assert "function" in label_names
        assert threshold["comparison"] == "COMPARISON_GT"
        assert threshold["duration"] == "300s"


def test_the_thresholds_match_the_prometheus_rules() -> None:
    rules = {rule["alert"]: rule["expr"] for rule in load(ROOT / "deploy/prometheus/alerts.yml")["groups"][0]["rules"]}
    ratio = load(GCP / "alert-policies" / "error-ratio.yaml")["conditions"][0]["conditionThreshold"]
    assert ratio["thresholdValue"] == 0.01
    assert 'metric.label.failed="true"' in ratio["filter"] and "failed" not in ratio["denominatorFilter"]
    assert rules["OpenRouterFunctionsHighErrorRate"].rstrip().endswith("> 0.01")
    for name, alert in (
        ("plain-latency", "OpenRouterFunctionsSlowResponses"),
        ("stream-ttft", "OpenRouterFunctionsSlowFirstToken"),
    ):
        threshold = load(GCP / "alert-policies" / f"{name}.yaml")["conditions"][0]["conditionThreshold"]
        assert threshold["thresholdValue"] == 3000  # ms: 3 s, like the Prometheus rule
        assert threshold["aggregations"][0]["crossSeriesReducer"] == "REDUCE_PERCENTILE_95"
        assert "histogram_quantile(0.95," in rules[alert] and rules[alert].rstrip().endswith("> 3")

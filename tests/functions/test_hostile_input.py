"""What a hostile or careless caller (or an odd upstream) sends: refused at the edge with a 400, or
contained to that one request. Never a 500, never anything another user notices, never a broken
/metrics scrape, never an unbounded log or series."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from helpers import bearer, mint
from log_lines import as_json
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.runtime import get_runtime

HI = {"messages": [{"role": "user", "content": "Hello there"}]}
OTHER_USER = "0b7c2c52-6d0e-4e43-a1a4-9b3f6f6d2e10"
UNSTORABLE = {
    "code": 400,
    "type": "invalid_request",
    "message": "Text in the request contains a NUL character or an unpaired UTF-16 surrogate; remove it.",
}


def sqlite_ledger() -> SQLiteLedger:
    ledger = get_runtime().meter.backend
    assert isinstance(ledger, SQLiteLedger)
    return ledger


async def post_raw(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    """``body`` sent as written: JSON escapes such as a lone surrogate reach the function unchanged."""
    return await client.post(path, content=body.encode(), headers={**bearer(), "Content-Type": "application/json"})


async def someone_else_is_served(client: httpx.AsyncClient) -> bool:
    response = await client.post("/chat", json=HI, headers=bearer(mint(sub=OTHER_USER)))
    return response.status_code == 200


# -- text no store can hold ------------------------------------------------------------------------


USER_HI = '{"role": "user", "content": "hi"}'


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", '{"model": "openai/gpt-4o\\ud800", "messages": [' + USER_HI + "]}"),
        ("/chat", '{"messages": [{"role": "user", "content": "hi \\udfff there"}]}'),
        ("/chat", '{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\ud800"}]}]}'),
        ("/chat", '{"messages": [{"role": "user", "name": "\\ud800", "content": "hi"}]}'),
        ("/chat", '{"messages": [' + USER_HI + '], "params": {"model": "openai/gpt-4o\\ud800"}}'),
        ("/chat", '{"messages": [' + USER_HI + '], "models": ["openai/gpt-4o\\ud800"]}'),
        ("/chat", '{"messages": [' + USER_HI + '], "user": "ada\\u0000"}'),
        ("/chat", '{"messages": [' + USER_HI + '], "metadata": {"k\\u0000": "v"}}'),
        ("/chat", '{"messages": [{"role": "user", "content": "NUL \\u0000 here"}]}'),
        ("/completion", '{"prompt": "hi \\ud800"}'),
        ("/completion", '{"prompt": "hi", "system": "be \\u0000 brief"}'),
        ("/completion", '{"prompt": "hi", "model": "\\ud800"}'),
    ],
)
async def test_text_no_store_can_hold_is_refused_at_the_edge_and_nobody_else_notices(
    client: httpx.AsyncClient, fake: FakeOpenRouter, path: str, body: str
) -> None:
    response = await post_raw(client, path, body)
    assert (response.status_code, response.json()) == (400, {"error": UNSTORABLE})
    assert fake.received == []
    [row] = await sqlite_ledger().rows("request_log")  # the refusal itself is on the record
    assert (row["status"], row["error_type"], row["model"]) == (400, "invalid_request", None)
    assert await someone_else_is_served(client)


async def test_an_upstream_model_name_no_store_can_hold_is_stored_safely(
    client: httpx.AsyncClient, fake: FakeOpenRouter, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script({"model": "openai/gpt-4o\ud800\x00"})
    caplog.set_level("INFO", logger="openrouter_functions")
    answer = await client.post("/chat", json=HI, headers=bearer())
    assert answer.status_code == 200
    assert answer.json()["model"] == "openai/gpt-4o\ud800\x00"  # written as JSON escapes, still valid JSON
    assert await someone_else_is_served(client)
    first, second = await sqlite_ledger().rows("request_log")
    assert (first["model"], second["status"]) == ("openai/gpt-4o\ufffd\ufffd", 200)
    assert [r for r in caplog.records if r.getMessage() == "usage_unrecorded"] == []
    [line, _] = [as_json(r) for r in caplog.records if r.name == "openrouter_functions.request"]
    assert line["model"] == "openai/gpt-4o\ud800\x00"  # the log line can hold it: it is escaped
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert 'model="openai/gpt-4o\\\\ud800\x00"' in scrape.text


# -- JSON that is not strictly JSON, or too deep ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("NaN", "The request body is not valid JSON: NaN is not a JSON number."),
        ("Infinity", "The request body is not valid JSON: Infinity is not a JSON number."),
        ("-Infinity", "The request body is not valid JSON: -Infinity is not a JSON number."),
        ("1e999", "The request body is not valid JSON: 1e999 is not a JSON number."),
    ],
)
async def test_nan_and_infinity_are_not_json_numbers(
    client: httpx.AsyncClient, fake: FakeOpenRouter, value: str, message: str
) -> None:
    response = await post_raw(client, "/chat", '{"messages": [' + USER_HI + '], "temperature": ' + value + "}")
    assert (response.status_code, response.json()["error"]) == (
        400,
        {"code": 400, "type": "invalid_json", "message": message},
    )
    assert fake.received == []


@pytest.mark.parametrize("depth", [65, 1_500, 100_000])
async def test_deeply_nested_json_is_a_400_not_a_500(
    client: httpx.AsyncClient, fake: FakeOpenRouter, depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    response = await post_raw(client, "/chat", '{"messages": [' + USER_HI + '], "metadata": {"x": ' + nested + "}}")
    assert (response.status_code, response.json()["error"]) == (
        400,
        {"code": 400, "type": "invalid_json", "message": "The request body is nested deeper than 64 levels."},
    )
    assert fake.received == []


async def test_nesting_within_the_limit_is_accepted(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    nested = "[" * 61 + "]" * 61  # body, metadata, x: 64 levels in all
    response = await post_raw(client, "/chat", '{"messages": [' + USER_HI + '], "metadata": {"x": ' + nested + "}}")
    assert response.status_code == 200
    assert len(fake.received) == 1


# -- models, model ids and the output-token cap ---------------------------------------------------------


@pytest.mark.parametrize("models", ["anthropic/claude-3-opus", {"0": "anthropic/claude-3-opus"}, 7])
async def test_models_that_is_not_a_list_is_refused_not_waved_past_the_allow_list(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter, models: Any
) -> None:
    configure(ALLOWED_MODELS="openai/*")
    response = await client.post("/chat", json={**HI, "models": models}, headers=bearer())
    assert (response.status_code, response.json()["error"]) == (
        400,
        {"code": 400, "type": "invalid_request", "message": "models: must be a list of model ids"},
    )
    assert fake.received == []


@pytest.mark.parametrize("model", ["openai/" + "x" * 200_000, "openai/gpt-4o\nINJECTED 1", "openai/\tgpt"])
async def test_a_model_id_that_is_no_model_id_is_refused_and_not_stored(
    client: httpx.AsyncClient, fake: FakeOpenRouter, model: str
) -> None:
    response = await client.post("/chat", json={**HI, "model": model}, headers=bearer())
    assert (response.status_code, response.json()["error"]) == (
        400,
        {
            "code": 400,
            "type": "invalid_request",
            "message": "model: must be a model id of at most 128 characters, without control characters",
        },
    )
    assert fake.received == []
    [row] = await sqlite_ledger().rows("request_log")
    assert (row["status"], row["model"]) == (400, None)


async def test_a_refused_model_is_logged_cut_to_a_model_ids_length(
    client: httpx.AsyncClient, configure: Any, caplog: pytest.LogCaptureFixture
) -> None:
    configure(ALLOWED_MODELS="openai/*")
    caplog.set_level("INFO", logger="openrouter_functions")
    model = "anthropic/" + "c" * 118  # 128 characters: a valid id, not an allowed one
    response = await client.post("/chat", json={**HI, "model": model}, headers=bearer())
    assert response.json()["error"]["type"] == "model_not_allowed"
    [row] = await sqlite_ledger().rows("request_log")
    [line] = [as_json(r) for r in caplog.records if r.name == "openrouter_functions.request"]
    assert row["model"] == line["model"] == model


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({"max_tokens": None}, {"max_tokens": 64}),
        ({"max_completion_tokens": None}, {"max_tokens": 64}),
        ({"max_tokens": None, "max_completion_tokens": None}, {"max_tokens": 64}),
        ({"max_tokens": None, "max_completion_tokens": 10}, {"max_tokens": None, "max_completion_tokens": 10}),
    ],
)
async def test_a_null_token_limit_is_unset_so_the_cap_applies(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter, given: dict[str, Any], sent: dict[str, Any]
) -> None:
    configure(MAX_OUTPUT_TOKENS="64")
    assert (await client.post("/chat", json={**HI, **given}, headers=bearer())).status_code == 200
    [request] = fake.received
    body = request.json()
    assert {k: body[k] for k in ("max_tokens", "max_completion_tokens") if k in body} == sent


# -- what upstream reports as usage -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "stored"),
    [
        ({"completion_tokens": 10**20}, (10, None, None, None)),  # an integer column cannot hold it
        ({"prompt_tokens": -5, "cost": -1.0}, (None, 3, None, None)),
        ({"cost": 5000.0}, (10, 3, 13, None)),
        ({"cost": 0.25}, (10, 3, 13, 0.25)),
    ],
)
async def test_absurd_upstream_usage_is_dropped_and_hurts_nobody(
    client: httpx.AsyncClient, fake: FakeOpenRouter, usage: dict[str, Any], stored: tuple[Any, ...]
) -> None:
    fake.script({"usage": {"prompt_tokens": 10, "completion_tokens": 3, **usage}})
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    assert not get_runtime().meter.suspended()
    assert await someone_else_is_served(client)
    row = (await sqlite_ledger().rows("request_log"))[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["cost_usd"]) == stored


async def test_a_stream_that_fails_upstream_is_charged_like_a_hang_up(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    fake.script({"fault": "midstream_error", "after": 2})
    response = await client.post("/chat", json={**HI, "stream": True}, headers=bearer())
    assert response.status_code == 200
    assert '"finish_reason":"error"' in response.text
    [row] = await sqlite_ledger().rows("request_log")
    [day] = await sqlite_ledger().rows("usage_daily")
    # No usage came back; OpenRouter still bills what was generated, so the reservation is charged.
    assert (row["outcome"], row["cost_usd"], day["cost_usd"], day["reserved_usd"]) == ("upstream_error", 0.01, 0.01, 0)


# -- /metrics ------------------------------------------------------------------------------------------

# One sample line of the text format: a metric name, optional labels (values with \\, \" and \n escaped
# and nothing else raw), a value.
_SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_]\w*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? \S+$')
_LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\\n]|\\[\\"n])*)"')


def _unescape(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def parse_exposition(text: str) -> list[tuple[str, dict[str, str]]]:
    """Every sample's name and labels (unescaped); fails on any line a Prometheus scrape would reject."""
    samples: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        assert _SAMPLE.match(line), f"unparseable exposition line: {line!r}"
        head = line[: line.rindex(" ")]  # the value has no spaces; a label value may
        name = re.split(r"[{ ]", head, maxsplit=1)[0]
        labels = {key: re.sub(r"\\(.)", _unescape, value) for key, value in _LABEL.findall(head)}
        samples.append((name, labels))
    return samples


async def test_a_served_model_name_with_newline_quote_and_backslash_keeps_the_scrape_parseable(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    odd = 'evil"\\model\norf_requests_total{function="chat"} 1e9'
    fake.script({"model": odd})
    assert (await client.post("/chat", json=HI, headers=bearer())).status_code == 200
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    samples = parse_exposition(scrape.text)
    # orf_requests_total also says what the caller got (`outcome`), since stream failures count as errors
    assert ("orf_requests_total", {"function": "chat", "model": odd, "outcome": "ok", "status": "200"}) in samples


async def test_a_thousand_rejected_model_names_add_no_series(
    client: httpx.AsyncClient, configure: Any, fake: FakeOpenRouter
) -> None:
    configure(ALLOWED_MODELS="openai/*")
    refused = {"code": 400, "type": "model_not_allowed", "message": "The model 'evil/name-0' is not available here."}
    first = await client.post("/chat", json={**HI, "model": "evil/name-0"}, headers=bearer())
    assert first.json() == {"error": refused}
    before = parse_exposition((await client.get("/metrics")).text)
    refused_series = {"function": "chat", "model": "other", "outcome": "client_error", "status": "400"}
    assert ("orf_requests_total", refused_series) in before
    for i in range(1, 1_000):
        response = await client.post("/chat", json={**HI, "model": f"evil/name-{i}"}, headers=bearer())
        assert response.status_code == 400
    scrape = (await client.get("/metrics")).text
    after = parse_exposition(scrape)
    assert {json.dumps(s) for s in after} == {json.dumps(s) for s in before}  # the same series, only counts grew
    assert "evil/name" not in scrape
    assert fake.received == []

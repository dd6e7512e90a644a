"""Model names as weapons: newlines and huge names are refused and never reach /metrics or the request
log; many rejected names add no series; ``models`` that is not a list cannot slip past the allow-list;
``max_tokens: null`` cannot slip past the output-token cap."""

from __future__ import annotations

from typing import Any

import pytest
from hostile_support import HI, MAX_OUTPUT_TOKENS, Hostile, exposition_problems

BAD_MODEL_IDS = {
    "newline and a forged sample": 'openai/gpt-4o\norf_requests_total{function="chat"} 1e9',
    "carriage return": "openai/gpt-4o\rx",
    "tab": "openai/\tgpt",
    "200 KB": "openai/" + "x" * 200_000,
}


@pytest.mark.parametrize("name", list(BAD_MODEL_IDS))
@pytest.mark.parametrize("field", ["model", "params.model", "models"])
def test_a_model_id_that_is_no_model_id_is_refused(attack: Hostile, name: str, field: str) -> None:
    model = BAD_MODEL_IDS[name]
    body: dict[str, Any] = dict(HI)
    if field == "model":
        body["model"] = model
    elif field == "params.model":
        body["params"] = {"model": model}
    else:
        body["models"] = ["openai/gpt-4o", model]
    response = attack.call("/chat", body)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["type"] in {"invalid_request", "model_not_allowed"}
    assert len(response.content) < 2048  # the answer does not echo a 200 KB name
    assert attack.chat_requests() == []
    assert attack.bystander_served()


def test_metrics_stay_parseable_and_small_and_the_log_stays_bounded(attack: Hostile) -> None:
    for model in BAD_MODEL_IDS.values():
        assert attack.call("/chat", {**HI, "model": model}).status_code == 400
    before = attack.http.get(attack.url + "/metrics").text
    for i in range(300):  # distinct names nobody may call
        assert attack.call("/chat", {**HI, "model": f"evil/name-{i}"}).status_code == 400
    scrape = attack.http.get(attack.url + "/metrics")
    assert scrape.status_code == 200
    assert exposition_problems(scrape.text) == []
    assert "evil/name" not in scrape.text
    assert "INJECTED" not in scrape.text
    assert len(scrape.content) < len(before) + 4096  # counts grew, series did not
    assert max(len(m or "") for m in attack.log_models()) <= 128


def test_an_allowed_model_id_with_a_quote_and_backslash_keeps_the_scrape_parseable(attack: Hostile) -> None:
    odd = 'openai/gpt-4o"\\'  # printable, short, allowed: passed on, and OpenRouter refuses it
    response = attack.call("/chat", {**HI, "model": odd})
    assert (response.status_code, response.json()["error"]["type"]) == (400, "bad_request")
    scrape = attack.http.get(attack.url + "/metrics")
    assert scrape.status_code == 200
    assert exposition_problems(scrape.text) == []


def test_an_upstream_model_name_with_a_newline_keeps_the_scrape_parseable(attack: Hostile) -> None:
    attack.upstream.script({"model": 'evil"\\model\norf_requests_total{function="chat"} 1e9'})
    assert attack.call("/chat", HI).status_code == 200
    scrape = attack.http.get(attack.url + "/metrics")
    assert scrape.status_code == 200
    assert exposition_problems(scrape.text) == []


@pytest.mark.parametrize("models", ["anthropic/claude-3-opus", {"0": "evil/model"}, 7, "evil/model"])
def test_models_that_is_not_a_list_is_refused(attack: Hostile, models: Any) -> None:
    response = attack.call("/chat", {**HI, "models": models})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert attack.chat_requests() == []


def test_a_model_outside_the_allow_list_is_refused_in_models_too(attack: Hostile) -> None:
    response = attack.call("/chat", {**HI, "models": ["openai/gpt-4o", "evil/model"]})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "model_not_allowed"
    assert attack.chat_requests() == []


@pytest.mark.parametrize(
    "given",
    [{"max_tokens": None}, {"max_completion_tokens": None}, {"max_tokens": None, "max_completion_tokens": None}, {}],
)
def test_a_null_token_limit_cannot_lift_the_cap(attack: Hostile, given: dict[str, Any]) -> None:
    assert attack.call("/chat", {**HI, **given}).status_code == 200
    [sent] = attack.chat_requests()
    body = sent["json"]
    assert body["max_tokens"] == MAX_OUTPUT_TOKENS
    assert body.get("max_completion_tokens") is None


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_a_token_limit_over_the_cap_is_refused(attack: Hostile, key: str) -> None:
    response = attack.call("/chat", {**HI, key: MAX_OUTPUT_TOKENS + 1})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": 400,
        "type": "max_tokens_exceeded",
        "message": f"{key} may be at most {MAX_OUTPUT_TOKENS}.",
    }
    assert attack.chat_requests() == []

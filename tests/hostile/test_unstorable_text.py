"""Text no store can hold (a lone UTF-16 surrogate; NUL, which PostgreSQL refuses) anywhere in a request:
refused at the edge with a 400, and nobody else notices (no shared breaker, /metrics still scrapes)."""

from __future__ import annotations

import pytest
from hostile_support import Hostile, exposition_problems

USER_HI = '{"role": "user", "content": "hi"}'

# Raw JSON bodies, so the escapes reach the server exactly as an attacker writes them.
ATTACKS = {
    "surrogate in model": ("/chat", '{"model": "openai/gpt-4o\\ud800", "messages": [' + USER_HI + "]}"),
    "low surrogate in content": ("/chat", '{"messages": [{"role": "user", "content": "hi \\udfff there"}]}'),
    "surrogate in a content part": (
        "/chat",
        '{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\ud800"}]}]}',
    ),
    "surrogate in a name": ("/chat", '{"messages": [{"role": "user", "name": "\\ud800", "content": "hi"}]}'),
    "surrogate in params.model (seed shape)": (
        "/chat",
        '{"messages": [' + USER_HI + '], "params": {"model": "openai/gpt-4o\\ud800"}}',
    ),
    "surrogate in models": ("/chat", '{"messages": [' + USER_HI + '], "models": ["openai/gpt-4o\\ud800"]}'),
    "surrogate in a key": ("/chat", '{"messages": [' + USER_HI + '], "metadata": {"\\ud800": "x"}}'),
    "NUL in content": ("/chat", '{"messages": [{"role": "user", "content": "hi\\u0000there"}]}'),
    "NUL in model": ("/chat", '{"model": "openai/gpt-4o\\u0000", "messages": [' + USER_HI + "]}"),
    "NUL in user": ("/chat", '{"messages": [' + USER_HI + '], "user": "ada\\u0000"}'),
    "NUL in a stop sequence": ("/chat", '{"messages": [' + USER_HI + '], "stop": ["\\u0000"]}'),
    "surrogate in completion prompt": ("/completion", '{"prompt": "x\\ud83d"}'),
    "NUL in completion system": ("/completion", '{"prompt": "hi", "system": "be\\u0000nice"}'),
    "surrogate in completion model": ("/completion", '{"prompt": "hi", "model": "\\udbff"}'),
    "surrogate in a streamed request": (
        "/chat",
        '{"stream": true, "messages": [{"role": "user", "content": "\\ud800"}]}',
    ),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_unstorable_text_is_a_400_and_hurts_nobody_else(attack: Hostile, name: str) -> None:
    path, body = ATTACKS[name]
    response = attack.call(path, raw=body.encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == 400
    assert response.json()["error"]["type"] == "invalid_request"
    assert attack.chat_requests() == []
    assert attack.bystander_served()


def test_after_every_such_request_metrics_still_scrapes(attack: Hostile) -> None:
    for path, body in ATTACKS.values():
        assert attack.call(path, raw=body.encode()).status_code < 500
    scrape = attack.http.get(attack.url + "/metrics")
    assert scrape.status_code == 200
    assert exposition_problems(scrape.text) == []
    assert attack.bystander_served()

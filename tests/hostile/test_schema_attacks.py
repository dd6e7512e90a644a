"""A caller's JSON Schema cannot reach outside itself or stall the server: ``$ref`` to a remote URL, a
local file or nowhere is refused before upstream is called (and nothing is fetched: the canary listener
sees no connection), and a catastrophic ``pattern`` neither takes long nor holds up anyone else."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest
from hostile_support import Hostile

REDOS_PATTERN = "(a+)+$"
REDOS_REPLY = "a" * 40 + "!"  # what Python's backtracking `re` needs 2^40 steps to reject


def completion(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt": "Give me JSON",
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}},
    }


def chat(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": "Give me JSON"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "strict": True, "schema": schema}},
    }


REFS = {
    "remote $ref to the canary": "{canary}/schema.json",
    "remote $ref with an $id base": "other.json",
    "file:// $ref": "file:///etc/passwd",
    "dangling $ref": "#/$defs/missing",
    "$ref into a string": "#/type/x",
}


@pytest.mark.parametrize("name", list(REFS))
@pytest.mark.parametrize("function", ["completion", "chat"])
def test_a_ref_outside_the_schema_is_refused_and_nothing_is_fetched(attack: Hostile, name: str, function: str) -> None:
    ref = REFS[name].format(canary=attack.canary.url)
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"$ref": ref}}}
    if name == "remote $ref with an $id base":
        schema["$id"] = f"{attack.canary.url}/root.json"
    body = completion(schema) if function == "completion" else chat(schema)
    response = attack.call(f"/{function}", body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request"
    assert "root:" not in response.text  # no file content echoed
    assert attack.chat_requests() == []  # refused before anything is billed
    assert attack.canary.connections == 0


def test_a_catastrophic_pattern_is_answered_at_once_and_stalls_nobody(attack: Hostile) -> None:
    attack.upstream.script({"content": '{"a": "' + REDOS_REPLY + '"}', "repeat": 5})  # every attempt, repairs too
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "pattern": REDOS_PATTERN}},
        "required": ["a"],
        "additionalProperties": False,
    }
    result: dict[str, Any] = {}

    def victim() -> None:
        started = time.monotonic()
        result["response"] = attack.call("/completion", completion(schema))
        result["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=victim)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    health = httpx.get(attack.url + "/health", timeout=10.0)
    health_seconds = time.monotonic() - started
    thread.join(timeout=30.0)
    assert not thread.is_alive()
    response: httpx.Response = result["response"]
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "schema_violation"
    assert result["seconds"] < 5.0
    assert health.status_code == 200
    assert health_seconds < 2.0
    assert attack.bystander_served()


def test_a_catastrophic_pattern_property_is_answered_at_once(attack: Hostile) -> None:
    attack.upstream.script({"content": '{"' + REDOS_REPLY + '": 1}', "repeat": 5})
    schema = {"type": "object", "patternProperties": {REDOS_PATTERN: {"type": "string"}}, "additionalProperties": False}
    started = time.monotonic()
    response = attack.call("/completion", completion(schema))
    assert time.monotonic() - started < 5.0
    assert response.status_code == 502, response.text
    assert response.json()["error"]["type"] == "schema_violation"
    assert attack.bystander_served()

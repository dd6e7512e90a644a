"""A plain chat answer is OpenRouter's own JSON text, passed on without being decoded and encoded again,
whenever that text can stand as our answer; otherwise the answer is the parsed object, encoded by us."""

from __future__ import annotations

import json
from typing import Any

import httpx

from helpers import bearer
from openrouter_service import OpenRouterService

ANSWER: dict[str, Any] = {
    "id": "gen-1",
    "object": "chat.completion",
    "model": "openai/gpt-4o",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Héllo ✓"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "cost": 0.00004},
}


def upstream_sending(body: bytes) -> OpenRouterService:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    return OpenRouterService("sk-or-v1-test", http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)))


async def ask(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    return await client.post("/chat", json=body, headers=bearer())


async def test_the_answer_is_openrouters_text_as_sent(client: httpx.AsyncClient, configure: Any) -> None:
    # OpenRouter's spacing, its ASCII escapes and the blank lines it sends while a model thinks
    sent = b"\n\n" + json.dumps(ANSWER, indent=1).encode()
    configure().use_service(upstream_sending(sent))
    response = await ask(client)
    assert response.status_code == 200
    assert response.content == sent
    assert response.headers["content-type"] == "application/json"
    assert response.json() == ANSWER


async def test_text_that_cannot_stand_as_our_answer_is_encoded_by_us(client: httpx.AsyncClient, configure: Any) -> None:
    for sent in (json.dumps(ANSWER).encode("utf-16"), b"\xef\xbb\xbf" + json.dumps(ANSWER).encode()):
        configure().use_service(upstream_sending(sent))
        response = await ask(client)
        assert response.status_code == 200, response.text
        assert response.content != sent
        assert json.loads(response.content.decode("utf-8")) == ANSWER


async def test_a_structured_answer_is_the_one_checked_not_the_first_text(
    client: httpx.AsyncClient, configure: Any
) -> None:
    """With response_format the answer may be a re-ask's: never the first text passed on."""
    structured = dict(ANSWER, choices=[{"index": 0, "message": {"role": "assistant", "content": '{"a": 1}'}}])
    sent = json.dumps(structured, indent=2).encode()
    configure().use_service(upstream_sending(sent))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    response = await ask(client, response_format=fmt)
    assert response.status_code == 200, response.text
    assert response.content != sent and response.json()["choices"][0]["message"]["content"] == '{"a": 1}'

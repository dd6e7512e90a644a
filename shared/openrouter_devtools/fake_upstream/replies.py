"""What the fake answers with: generations (echo text, usage, cost), completions, SSE chunks, ``/key``."""

from __future__ import annotations

import json
import random
import re
import string
import time
from dataclasses import dataclass
from typing import Any

from .schema import minimal_instance
from .wire import dumps

__all__ = [
    "COMMENT",
    "DONE",
    "PROVIDER_NAME",
    "Generation",
    "choice",
    "completion",
    "delta_choice",
    "generate",
    "key_body",
    "sse",
    "step_error",
    "usage",
    "usage_chunk",
]

PROVIDER_NAME = "FakeProvider"
COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"

_ALNUM = string.ascii_letters + string.digits
_WORD_RE = re.compile(r"\S+\s*")


@dataclass
class Generation:
    """One answer being built: its id, model, text (and the word pieces it streams as), usage."""

    id: str
    created: int
    model: str
    content: str
    pieces: list[str]
    finish_reason: str
    usage: dict[str, Any]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def _split_words(content: str) -> tuple[list[str], int]:
    """Split into word pieces whose concatenation equals ``content``; also return the word count."""
    pieces = _WORD_RE.findall(content)
    if not pieces:
        return ([content] if content else []), 0
    lead = len(content) - len(content.lstrip())
    if lead:
        pieces[0] = content[:lead] + pieces[0]
    return pieces, len(pieces)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """OpenRouter's ``usage`` object, priced at $1 per million prompt and $2 per million completion tokens."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": round(prompt_tokens * 1e-6 + completion_tokens * 2e-6, 10),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
    }


def _new_generation_id(now: int) -> str:
    return f"gen-{now}-{''.join(random.choices(_ALNUM, k=20))}"


def _default_content(body: dict[str, Any]) -> str:
    messages: list[Any] = body["messages"]
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _text_of(message.get("content"))
            break
    else:
        text = _text_of(messages[-1].get("content"))
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return json.dumps({"echo": text})
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return json.dumps(minimal_instance(schema) if isinstance(schema, dict) else {})
    return "Echo: " + text


def generate(body: dict[str, Any], model: str, step: dict[str, Any]) -> Generation:
    """The answer to a validated chat ``body``: the step's ``content`` or the echo, cut at ``max_tokens``."""
    content = step.get("content")
    if not isinstance(content, str):
        content = _default_content(body)
    pieces, words = _split_words(content)
    finish = "stop"
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < words:
        pieces = pieces[: max(limit, 0)]
        if pieces:
            pieces[-1] = pieces[-1].rstrip()
        content = "".join(pieces)
        words = len(pieces)
        finish = "length"
    if isinstance(step.get("finish_reason"), str):
        finish = step["finish_reason"]
    prompt_chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
    counted = usage(max(1, prompt_chars // 4), max(1, words))
    override = step.get("usage")
    if isinstance(override, dict):
        counted.update(override)
        pt, ct = counted.get("prompt_tokens"), counted.get("completion_tokens")
        if isinstance(pt, int) and isinstance(ct, int):
            if "total_tokens" not in override:
                counted["total_tokens"] = pt + ct
            if "cost" not in override:
                counted["cost"] = round(pt * 1e-6 + ct * 2e-6, 10)
    step_model = step.get("model")
    now = int(time.time())
    return Generation(
        id=_new_generation_id(now),
        created=now,
        model=step_model if isinstance(step_model, str) else model,
        content=content,
        pieces=pieces,
        finish_reason=finish,
        usage=counted,
    )


def step_error(step: dict[str, Any], default_code: int) -> dict[str, Any]:
    """``{code, message, metadata}`` for error-in-completion faults (metadata gets ``error_type``)."""
    code = step.get("code", default_code)
    if code == 429:
        error_type, default_message = "rate_limit_exceeded", "Rate limit exceeded"
    else:
        error_type, default_message = "provider_unavailable", "Provider returned error"
    metadata = {"error_type": error_type, **(step.get("metadata") or {})}
    return {"code": code, "message": str(step.get("message", default_message)), "metadata": metadata}


def choice(content: str, finish_reason: str) -> dict[str, Any]:
    """One non-streamed choice."""
    return {
        "index": 0,
        "logprobs": None,
        "finish_reason": finish_reason,
        "native_finish_reason": finish_reason,
        "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
    }


def completion(gen: Generation, choices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``chat.completion`` object (``choices`` default: the generation's one choice)."""
    return {
        "id": gen.id,
        "provider": PROVIDER_NAME,
        "model": gen.model,
        "object": "chat.completion",
        "created": gen.created,
        "system_fingerprint": None,
        "choices": [choice(gen.content, gen.finish_reason)] if choices is None else choices,
        "usage": gen.usage,
    }


def delta_choice(delta: dict[str, Any]) -> dict[str, Any]:
    """One streamed choice carrying ``delta``."""
    return {"index": 0, "delta": delta, "finish_reason": None, "native_finish_reason": None, "logprobs": None}


def sse(gen: Generation, choices: list[dict[str, Any]], **extra: Any) -> bytes:
    """One ``data:`` event of a ``chat.completion.chunk``."""
    obj: dict[str, Any] = {
        "id": gen.id,
        "provider": PROVIDER_NAME,
        "model": gen.model,
        "object": "chat.completion.chunk",
        "created": gen.created,
    }
    obj.update(extra)
    obj["choices"] = choices
    return b"data: " + dumps(obj) + b"\n\n"


def usage_chunk(gen: Generation) -> bytes:
    """The final chunk: no choices, the usage."""
    return sse(gen, [], usage=gen.usage)


def key_body(total_cost: float, limit: float | None = None) -> bytes:
    """``GET /key``: the key's details, its usage being the cost served so far (``limit``: its credit limit)."""
    spent = round(total_cost, 10)
    remaining = None if limit is None else round(limit - spent, 10)
    return dumps(
        {
            "data": {
                "label": "sk-or-v1-fak...e00",
                "limit": limit,
                "limit_reset": None,
                "limit_remaining": remaining,
                "include_byok_in_limit": False,
                "usage": spent,
                "usage_daily": spent,
                "usage_weekly": spent,
                "usage_monthly": spent,
                "byok_usage": 0,
                "byok_usage_daily": 0,
                "byok_usage_weekly": 0,
                "byok_usage_monthly": 0,
                "is_free_tier": False,
                "is_provisioning_key": False,
                "rate_limit": {"requests": -1, "interval": "10s"},
            }
        }
    )

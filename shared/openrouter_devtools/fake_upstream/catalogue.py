"""The fake's model catalogue, in the shape of ``GET /models`` (reference section 5)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .wire import dumps

__all__ = ["DEFAULT_MODEL", "MODELS", "MODELS_BODY", "MODEL_IDS"]

DEFAULT_MODEL = "openai/gpt-4o"

_COMMON_PARAMS = ("max_tokens", "temperature", "top_p", "stop", "frequency_penalty", "presence_penalty", "seed")
_OPENAI_PARAMS = ("tools", "tool_choice", "response_format", "structured_outputs", "logprobs")


def _model(
    model_id: str,
    name: str,
    *,
    created: int,
    summary: str,
    context_length: int,
    prompt: str,
    completion: str,
    tokenizer: str,
    extra_params: Sequence[str],
    instruct_type: str | None = None,
    input_modalities: Sequence[str] = ("text",),
    max_completion_tokens: int | None = 16384,
    is_moderated: bool = False,
    hugging_face_id: str = "",
) -> dict[str, Any]:
    return {
        "id": model_id,
        "canonical_slug": model_id.split(":")[0],
        "hugging_face_id": hugging_face_id,
        "name": name,
        "created": created,
        "description": f"{summary} (fake catalogue entry).",
        "context_length": context_length,
        "architecture": {
            "modality": "+".join(input_modalities) + "->text",
            "input_modalities": list(input_modalities),
            "output_modalities": ["text"],
            "tokenizer": tokenizer,
            "instruct_type": instruct_type,
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        },
        "top_provider": {
            "context_length": context_length,
            "max_completion_tokens": max_completion_tokens,
            "is_moderated": is_moderated,
        },
        "per_request_limits": None,
        "supported_parameters": sorted(_COMMON_PARAMS + tuple(extra_params)),
        "default_parameters": {"temperature": None, "top_p": None, "frequency_penalty": None},
        "expiration_date": None,
    }


def _openai(model_id: str, name: str, *, created: int, summary: str, prompt: str, completion: str) -> dict[str, Any]:
    """The two OpenAI entries differ only in name, date and price."""
    return _model(
        model_id,
        name,
        created=created,
        summary=summary,
        context_length=128000,
        prompt=prompt,
        completion=completion,
        tokenizer="GPT",
        extra_params=_OPENAI_PARAMS,
        input_modalities=("text", "image", "file"),
        is_moderated=True,
    )


MODELS: list[dict[str, Any]] = [
    _openai(
        "openai/gpt-4o",
        "OpenAI: GPT-4o",
        created=1715367049,
        summary="GPT-4o is OpenAI's multimodal flagship model",
        prompt="0.0000025",
        completion="0.00001",
    ),
    _openai(
        "openai/gpt-4o-mini",
        "OpenAI: GPT-4o-mini",
        created=1721260800,
        summary="GPT-4o mini is a small, cheap GPT-4o",
        prompt="0.00000015",
        completion="0.0000006",
    ),
    _model(
        "anthropic/claude-3-opus",
        "Anthropic: Claude 3 Opus",
        created=1709596800,
        summary="Claude 3 Opus is Anthropic's most capable Claude 3 model",
        context_length=200000,
        prompt="0.000015",
        completion="0.000075",
        tokenizer="Claude",
        extra_params=("tools", "tool_choice", "top_k"),
        input_modalities=("text", "image"),
        max_completion_tokens=4096,
        is_moderated=True,
    ),
    _model(
        "meta-llama/llama-3.3-70b-instruct",
        "Meta: Llama 3.3 70B Instruct",
        created=1733506137,
        summary="Llama 3.3 70B instruction-tuned multilingual model",
        context_length=131072,
        prompt="0.00000013",
        completion="0.0000004",
        tokenizer="Llama3",
        extra_params=("tools", "tool_choice", "response_format", "top_k", "min_p", "repetition_penalty"),
        instruct_type="llama3",
        hugging_face_id="meta-llama/Llama-3.3-70B-Instruct",
    ),
    _model(
        "mistralai/mistral-7b-instruct:free",
        "Mistral: Mistral 7B Instruct (free)",
        created=1716768000,
        summary="Mistral 7B Instruct, free variant",
        context_length=32768,
        prompt="0",
        completion="0",
        tokenizer="Mistral",
        extra_params=("top_k", "min_p", "repetition_penalty"),
        instruct_type="mistral",
        hugging_face_id="mistralai/Mistral-7B-Instruct-v0.3",
    ),
]
MODEL_IDS = frozenset(m["id"] for m in MODELS)
MODELS_BODY = dumps({"data": MODELS})

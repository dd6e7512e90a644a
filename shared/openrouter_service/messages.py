"""Checking chat messages and model parameters before anything goes over the network.

Hand-written rather than pydantic models: it runs on every call, must name the exact message and field
that is wrong, and costs a few microseconds this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import OpenRouterValidationError

__all__ = [
    "ACCEPTED_PARAMETERS",
    "MESSAGE_ROLES",
    "MODEL_ID_CHARS",
    "check_model_params",
    "check_response_format",
    "last_user_text",
    "normalize_model",
    "validate_messages",
]

MESSAGE_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

# The longest model id accepted. OpenRouter's ids are well under 100 characters; anything much longer
# is not a model, and it would be logged and stored wherever the request is.
MODEL_ID_CHARS = 128

# Part type -> the key that must hold its payload.
_PART_PAYLOAD = {
    "text": "text",
    "image_url": "image_url",
    "input_audio": "input_audio",
    "file": "file",
    "video_url": "video_url",
}

_MESSAGE_KEYS = frozenset(
    {
        "role",
        "content",
        "name",
        "tool_call_id",
        "tool_calls",
        "reasoning",
        "reasoning_details",
        "refusal",
        "cache_control",
    }
)

_NUMBER_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "top_k": (0, None),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
    "repetition_penalty": (0.0, 2.0),
    "min_p": (0.0, 1.0),
    "top_a": (0.0, 1.0),
    "top_logprobs": (0, 20),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "seed": (None, None),
}
_INTEGER_PARAMS = frozenset({"top_k", "top_logprobs", "max_tokens", "max_completion_tokens", "seed"})

# Every request-body field OpenRouter's chat completions endpoint accepts (see the API reference),
# apart from `messages`, `stream` and `response_format`, which have their own arguments.
ACCEPTED_PARAMETERS = frozenset(
    {
        *_NUMBER_RANGES,
        "model",
        "models",
        "provider",
        "route",
        "stop",
        "logit_bias",
        "logprobs",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "stream_options",
        "usage",
        "transforms",
        "plugins",
        "reasoning",
        "reasoning_effort",
        "user",
        "session_id",
        "metadata",
        "service_tier",
        "debug",
        "prediction",
        "verbosity",
        "modalities",
    }
)


def normalize_model(model: str) -> str:
    """An OpenRouter model id: LiteLLM-style ``openrouter/<vendor>/<model>`` loses its prefix."""
    model = model.strip()
    if model.startswith("openrouter/") and model.count("/") >= 2:
        return model[len("openrouter/") :]
    return model


def last_user_text(messages: Sequence[Any]) -> str:
    """The text of the last user message (the text parts of a multi-part one), for previews."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return str(content)
    return ""


def _fail(where: str, problem: str) -> OpenRouterValidationError:
    return OpenRouterValidationError(f"{where}: {problem}")


def _check_model_id(where: str, model: Any) -> None:
    if not isinstance(model, str) or not model.strip():
        raise _fail(where, "must be a non-empty string")
    if len(model) > MODEL_ID_CHARS or not model.isprintable():
        raise _fail(where, f"must be a model id of at most {MODEL_ID_CHARS} characters, without control characters")


def _check_parts(where: str, parts: Sequence[Any]) -> None:
    if not parts:
        raise _fail(f"{where}.content", "a list of parts must not be empty")
    for j, part in enumerate(parts):
        at = f"{where}.content[{j}]"
        if not isinstance(part, Mapping):
            raise _fail(at, "each content part must be an object")
        kind = part.get("type")
        payload_key = _PART_PAYLOAD.get(kind) if isinstance(kind, str) else None
        if payload_key is None:
            allowed = ", ".join(sorted(_PART_PAYLOAD))
            raise _fail(f"{at}.type", f"must be one of {allowed} (got {kind!r})")
        payload = part.get(payload_key)
        if kind == "text":
            if not isinstance(payload, str):
                raise _fail(f"{at}.text", "must be a string")
        elif kind == "image_url" and not (
            isinstance(payload, str) or (isinstance(payload, Mapping) and isinstance(payload.get("url"), str))
        ):
            raise _fail(f"{at}.image_url", "must be an object with a string `url`")
        elif payload is None:
            raise _fail(f"{at}.{payload_key}", "is required for this part type")


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    """Return ``messages`` as a list of dicts, or raise a validation error naming message and field."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise OpenRouterValidationError("messages: must be a list of message objects")
    if not messages:
        raise OpenRouterValidationError("messages: at least one message is required")
    checked: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _fail(where, "must be an object with `role` and `content`")
        role = message.get("role")
        if role not in MESSAGE_ROLES:
            raise _fail(f"{where}.role", f"must be one of assistant, developer, system, tool, user (got {role!r})")
        unknown = set(message) - _MESSAGE_KEYS
        if unknown:
            raise _fail(where, f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
        content = message.get("content")
        if content is None:
            if not (role == "assistant" and message.get("tool_calls")):
                raise _fail(f"{where}.content", "is required")
        elif isinstance(content, list):
            _check_parts(where, content)
        elif not isinstance(content, str):
            raise _fail(f"{where}.content", "must be a string or a list of content parts")
        if role == "tool":
            tool_call_id = message.get("tool_call_id")
            if not isinstance(tool_call_id, str) or not tool_call_id:
                raise _fail(f"{where}.tool_call_id", "is required for tool messages")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise _fail(f"{where}.name", "must be a string")
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
            raise _fail(f"{where}.tool_calls", "only assistant messages carry a list of tool_calls")
        checked.append(message if isinstance(message, dict) else dict(message))
    return checked


def check_model_params(params: Mapping[str, Any], *, label: str = "model_params") -> None:
    """Raise a validation error for any parameter OpenRouter does not accept or any value out of range.

    Messages name fields as ``<label>.<name>`` (just ``<name>`` when ``label`` is empty).
    """
    prefix = f"{label}." if label else ""
    unknown = [name for name in params if name not in ACCEPTED_PARAMETERS]
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        raise OpenRouterValidationError(f"{label or 'body'}: unknown parameter(s) {names}")
    for name, value in params.items():
        bounds = _NUMBER_RANGES.get(name)
        if bounds is None or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OpenRouterValidationError(f"{prefix}{name}: must be a number")
        if name in _INTEGER_PARAMS and not isinstance(value, int):
            raise OpenRouterValidationError(f"{prefix}{name}: must be an integer")
        low, high = bounds
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"{low if low is not None else '-inf'}..{high if high is not None else 'inf'}"
            raise OpenRouterValidationError(f"{prefix}{name}: must be within {span} (got {value})")
    if params.get("model") is not None:
        _check_model_id(f"{prefix}model", params["model"])
    models = params.get("models")
    if models is not None:
        # Not a list would skip the allow-list, which checks each entry.
        if not isinstance(models, list):
            raise OpenRouterValidationError(f"{prefix}models: must be a list of model ids")
        for i, fallback in enumerate(models):
            _check_model_id(f"{prefix}models[{i}]", fallback)
    stop = params.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))
    ):
        raise OpenRouterValidationError(f"{prefix}stop: must be a string or a list of at most 4 strings")


def check_response_format(response_format: Any) -> dict[str, Any]:
    """Validate a ``response_format`` object and return it."""
    if not isinstance(response_format, Mapping):
        raise OpenRouterValidationError("response_format: must be an object")
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return dict(response_format)
    if kind != "json_schema":
        raise OpenRouterValidationError(
            f"response_format.type: must be text, json_object or json_schema (got {kind!r})"
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping):
        raise OpenRouterValidationError("response_format.json_schema: must be an object with `name` and `schema`")
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise OpenRouterValidationError("response_format.json_schema.name: must be a string of 1-64 characters")
    if not isinstance(spec.get("schema"), Mapping):
        raise OpenRouterValidationError("response_format.json_schema.schema: must be a JSON Schema object")
    return dict(response_format)

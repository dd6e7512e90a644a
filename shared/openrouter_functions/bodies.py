"""Request bodies of the functions: read with a size cap, parsed, validated (pydantic)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from openrouter_service.messages import ACCEPTED_PARAMETERS, check_model_params

from .envelope import ApiError
from .ledger import UNSTORABLE

__all__ = [
    "MAX_DEPTH",
    "ChatRequest",
    "CompletionRequest",
    "header",
    "parse_chat",
    "parse_completion",
    "read_json",
]

# Deeper than any real request (a json_schema nests a few levels per property); deeper bodies are
# refused before anything walks them recursively.
MAX_DEPTH = 64


def _not_json_constant(name: str) -> NoReturn:
    raise ApiError(400, "invalid_json", f"The request body is not valid JSON: {name} is not a JSON number.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf
        _not_json_constant(text)
    return value


# NaN and Infinity are Python's extensions, not JSON; upstream would get an invalid body. Built once
# (json.loads with options builds a decoder per call).
_DECODER = json.JSONDecoder(parse_constant=_not_json_constant, parse_float=_finite)


def _check_tree(body: Any) -> None:
    """Refuse a body nested deeper than :data:`MAX_DEPTH` or holding a string no store can keep.

    Iterative, so it is safe whatever the depth; every key and string value is checked once, so the
    refusal covers message content, names, models and every other parameter alike.
    """
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                raise ApiError(
                    400,
                    "invalid_request",
                    "Text in the request contains a NUL character or an unpaired UTF-16 surrogate; remove it.",
                )
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_DEPTH:
            raise ApiError(400, "invalid_json", f"The request body is nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, dict):
            pending.extend((key, depth) for key in value)
            pending.extend((item, depth + 1) for item in value.values())
        else:
            pending.extend((item, depth + 1) for item in value)


def header(request: Request, name: bytes) -> str | None:
    """``request.headers.get(name)`` (``name`` in lower case, as ASGI servers give header names): the
    first such header's value, read from the ASGI scope without building starlette's ``Headers``."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes without reading them whole, and
    (400) JSON that is not strictly JSON, nested too deep, or carrying text no store can hold."""
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "invalid_request", "The request body is empty; send a JSON object.")
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        body = _DECODER.decode(text)  # as json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None
    except RecursionError:  # the parser's own depth limit (about 1,000 levels)
        raise ApiError(400, "invalid_json", f"The request body is nested deeper than {MAX_DEPTH} levels.") from None
    if not _plainly_fine(text):
        _check_tree(body)
    return body


def _plainly_fine(text: str) -> bool:
    """Whether the JSON ``text`` cannot hold what :func:`_check_tree` refuses, read from the text alone.

    A NUL or a lone surrogate in a parsed string comes either from the character itself in the text or
    from a ``\\u`` escape, so a text with neither holds none. A value nested ``n`` levels deep needs ``n``
    opening brackets, so a text with at most :data:`MAX_DEPTH` of them is not too deep (brackets inside
    strings count too: this only ever sends a body to the full walk, never past it).
    """
    return "\\u" not in text and UNSTORABLE.search(text) is None and text.count("{") + text.count("[") <= MAX_DEPTH


def _schema_error(exc: ValidationError) -> ApiError:
    problems = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return ApiError(400, "invalid_request", "; ".join(problems))


class _ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    messages: list[Any] = Field(min_length=1)
    stream: bool = False
    params: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


class _CompletionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    system: str | None = None
    model: str | None = None
    params: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None


@dataclass(slots=True)
class ChatRequest:
    """A chat call: OpenAI's body, or the seed's ``{"messages", "params"}``."""

    messages: list[Any]
    params: dict[str, Any]
    response_format: dict[str, Any] | None
    stream: bool


@dataclass(slots=True)
class CompletionRequest:
    """A completion call: one prompt, an optional system prompt, model and response format."""

    prompt: str
    system: str | None
    params: dict[str, Any]
    response_format: dict[str, Any] | None


Body = TypeVar("Body", bound=BaseModel)


def _validated(model: type[Body], body: Any) -> Body:
    """``body`` as ``model``, or a 400 naming every field that is wrong."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise _schema_error(exc) from None


def parse_chat(body: Any) -> ChatRequest:
    """Validate a chat body; unknown top-level fields are refused by name."""
    parsed = _validated(_ChatBody, body)
    extras = dict(parsed.model_extra or {})
    unknown = sorted(k for k in extras if k not in ACCEPTED_PARAMETERS)
    if unknown:
        raise ApiError(400, "invalid_request", f"Unknown parameter(s): {', '.join(unknown)}.")
    params = {**(parsed.params or {}), **extras}
    check_model_params(params, label="params" if parsed.params else "")
    return ChatRequest(parsed.messages, params, parsed.response_format, parsed.stream)


def parse_completion(body: Any) -> CompletionRequest:
    """Validate a completion body."""
    parsed = _validated(_CompletionBody, body)
    params = dict(parsed.params or {})
    if parsed.model:
        params["model"] = parsed.model
    if "stream" in params:
        raise ApiError(400, "invalid_request", "params.stream: completion does not stream; use chat.")
    check_model_params(params, label="params")
    return CompletionRequest(parsed.prompt, parsed.system, params, parsed.response_format)

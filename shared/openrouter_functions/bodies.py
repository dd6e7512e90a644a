"""Request bodies of the functions: read with a size cap, parsed, validated (pydantic)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request

from openrouter_service.messages import ACCEPTED_PARAMETERS, check_model_params

from .envelope import ApiError

__all__ = ["ChatRequest", "CompletionRequest", "parse_chat", "parse_completion", "read_json"]


async def read_json(request: Request, limit: int) -> Any:
    """The request body as JSON, refusing bodies over ``limit`` bytes without reading them whole."""
    declared = request.headers.get("content-length")
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
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The request body is not valid JSON.") from None


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

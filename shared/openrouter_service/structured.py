"""Structured output: does the model's content honour the requested ``response_format``?

``jsonschema`` is imported on first use: only requests that ask for a schema pay for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .errors import OpenRouterValidationError, SchemaViolation

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ["check_schema", "parse_structured", "reask_message"]


def _strip_fences(content: str) -> str:
    text = content.strip()
    # Some models wrap JSON in a markdown fence even when asked not to.
    if text.startswith("```") and text.endswith("```"):
        text = text[3:-3]
        if text.startswith("json"):
            text = text[4:]
    return text.strip()


@lru_cache(maxsize=64)
def _validator_for(schema_text: str) -> Validator:
    from jsonschema import validators

    schema = json.loads(schema_text)
    cls = validators.validator_for(schema)
    return cls(schema)


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise a validation error when ``schema`` is not a valid JSON Schema."""
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(dict(schema))
    except exceptions.SchemaError as exc:
        raise OpenRouterValidationError(
            f"response_format.json_schema.schema: not a valid JSON Schema ({exc.message})"
        ) from None


def _path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_structured(content: str | None, response_format: Mapping[str, Any]) -> tuple[Any, list[SchemaViolation]]:
    """Parse ``content`` per ``response_format``: (the parsed value, every violation found)."""
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None, []
    if content is None or not content.strip():
        return None, [SchemaViolation("$", "the model returned no content")]
    try:
        value = json.loads(_strip_fences(content))
    except ValueError as exc:
        return None, [SchemaViolation("$", f"not valid JSON ({exc})")]
    if kind == "json_object":
        if not isinstance(value, dict):
            return value, [SchemaViolation("$", f"expected a JSON object, got {type(value).__name__}")]
        return value, []
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping) or not spec.get("strict"):
        # Without `strict` the schema is a hint to the model: valid JSON is all we hold it to.
        return value, []
    validator = _validator_for(json.dumps(schema, sort_keys=True))
    violations = [
        SchemaViolation(_path(error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]
    return value, violations


def reask_message(violations: list[SchemaViolation]) -> str:
    """The user message that sends violations back to the model for one more try."""
    listed = "\n".join(f"- {v.path}: {v.message}" for v in violations[:20])
    return (
        "Your previous reply did not match the required JSON format:\n"
        f"{listed}\n"
        "Reply again with only the corrected JSON, no explanation and no markdown."
    )

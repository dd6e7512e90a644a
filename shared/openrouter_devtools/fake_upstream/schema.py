"""A small instance of a JSON schema: what the fake answers when a ``json_schema`` response format is asked."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["minimal_instance"]


_STRING_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "x@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def _resolve_ref(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        while isinstance(sub, dict) and "$ref" in sub:
            sub = _resolve_ref(str(sub["$ref"]), root)
        if not isinstance(sub, dict):
            continue
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def minimal_instance(schema: Any, _root: Any = None, _depth: int = 0) -> Any:
    """Return a small instance of a JSON schema.

    object: all required properties (recursively); string: ``"x"`` (or enum[0] / const / a format
    sample / minLength copies); integer/number: ``minimum`` if given else 0; boolean: true;
    array: ``minItems`` copies of the items instance; null: None; anyOf/oneOf: the first branch;
    allOf: merged; local ``$ref`` resolved.
    """
    root = schema if _root is None else _root
    if _depth > 64 or not isinstance(schema, dict):
        return None
    depth = _depth + 1
    if "$ref" in schema:
        return minimal_instance(_resolve_ref(str(schema["$ref"]), root), root, depth)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return minimal_instance(branches[0], root, depth)
    if isinstance(schema.get("allOf"), list):
        return minimal_instance(_merge_all_of(schema, root), root, depth)

    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema:
            kind = "array"

    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        return {str(name): minimal_instance(props.get(name, {}), root, depth) for name in required}
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        min_len = schema.get("minLength")
        max_len = schema.get("maxLength")
        if isinstance(max_len, int) and max_len == 0:
            return ""
        return "x" * (min_len if isinstance(min_len, int) and min_len > 1 else 1)
    if kind in ("integer", "number"):
        value = _minimal_number(schema)
        if kind == "integer":
            return math.ceil(value)
        return value
    if kind == "boolean":
        return True
    if kind == "array":
        min_items = schema.get("minItems")
        count = min_items if isinstance(min_items, int) and min_items > 0 else 0
        return [minimal_instance(schema.get("items", {}), root, depth) for _ in range(count)]
    return None


def _minimal_number(schema: dict[str, Any]) -> int | float:
    def num(key: str) -> int | float | None:
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return None

    minimum = num("minimum")
    if minimum is not None:
        return minimum
    exclusive_min = num("exclusiveMinimum")
    if exclusive_min is not None:
        return math.floor(exclusive_min) + 1
    maximum = num("maximum")
    if maximum is not None and maximum < 0:
        return maximum
    exclusive_max = num("exclusiveMaximum")
    if exclusive_max is not None and exclusive_max <= 0:
        return math.ceil(exclusive_max) - 1
    return 0

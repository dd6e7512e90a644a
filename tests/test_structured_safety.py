"""A caller's JSON Schema cannot reach outside itself or stall the process: no `$ref` is ever fetched
(remote, file:// or dangling refs are refused before any upstream call), every regex runs on RE2, and
applying a schema has a time budget. Over httpx.MockTransport, which records every request; that a
remote ``$ref`` is not fetched either is shown against the fake OpenRouter (test_client_against_fake)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from helpers import completion_body, json_response
from openrouter_service import OpenRouterSchemaError, OpenRouterService, OpenRouterValidationError
from openrouter_service.structured import _regex, check_schema, parse_structured

Build = Callable[..., tuple[OpenRouterService, list[httpx.Request]]]

USER = [{"role": "user", "content": "Give me JSON"}]
# What takes Python's backtracking `re` 2^40 steps; RE2 answers it in linear time.
REDOS_PATTERN = "(a+)+$"
REDOS_TEXT = "a" * 40 + "!"
# Generous: RE2 takes microseconds here, Python's `re` would take days.
SANITY_SECONDS = 2.0


def fmt(schema: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "reply", "strict": strict, "schema": schema}}


def ref_refused(ref: str) -> str:
    """What a caller is told about a ``$ref`` that does not resolve inside the schema."""
    return (
        f"response_format.json_schema.schema: $ref {ref!r} does not resolve inside the schema "
        "(references to other documents are never fetched)"
    )


# -- $ref: nothing is ever retrieved ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "https://attacker.example/schema.json",
        "file:///etc/passwd",
        "#/$defs/missing",
        "#no-such-anchor",
        "#/type/x",  # a pointer into a string
        "http://[::1",  # not even a URL
    ],
)
async def test_a_ref_outside_the_schema_is_refused_before_upstream_is_called(make_service: Build, ref: str) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body("{}")))
    schema = {"type": "object", "properties": {"a": {"$ref": ref}}}
    with pytest.raises(OpenRouterValidationError) as info:
        await service.complete(USER, response_format=fmt(schema))
    assert str(info.value) == ref_refused(ref)
    assert seen == []


def test_a_file_ref_never_echoes_the_file() -> None:
    with pytest.raises(OpenRouterValidationError) as info:
        check_schema({"$ref": "file:///etc/passwd"})
    assert str(info.value) == ref_refused("file:///etc/passwd")


async def test_a_ref_inside_the_schema_still_works(make_service: Build) -> None:
    schema = {
        "$defs": {"city": {"type": "string", "minLength": 2}},
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/city"}},
        "required": ["city"],
    }
    replies = ['{"city": "Paris"}', '{"city": "P"}', '{"city": "P"}']
    service, seen = make_service([json_response(200, completion_body(content)) for content in replies])
    assert (await service.complete(USER, response_format=fmt(schema))).parsed == {"city": "Paris"}
    with pytest.raises(OpenRouterSchemaError) as info:
        await service.complete(USER, response_format=fmt(schema))
    assert [(v.path, v.message) for v in info.value.violations] == [("$.city", "'P' is too short")]
    assert len(seen) == 3


@pytest.mark.parametrize(
    "schema",
    [
        # An embedded resource, found by its $id without fetching anything.
        {"$id": "https://example.com/root", "$defs": {"x": {"$id": "name", "type": "string"}}, "$ref": "name"},
        # The bundled meta-schemas resolve locally.
        {"$ref": "https://json-schema.org/draft/2020-12/schema"},
        # Older drafts: definitions and their refs.
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"x": {"type": "string"}},
            "properties": {"a": {"$ref": "#/definitions/x"}},
        },
        # Recursion that follows the value (a tree) is fine.
        {"type": "object", "properties": {"child": {"$ref": "#"}}},
    ],
)
def test_local_references_of_every_kind_are_accepted(schema: dict[str, Any]) -> None:
    check_schema(schema)


def test_a_relative_ref_under_a_remote_id_is_not_fetched() -> None:
    with pytest.raises(OpenRouterValidationError) as info:
        check_schema({"$id": "https://example.com/root", "$ref": "other.json"})
    assert str(info.value) == ref_refused("other.json")


def test_a_non_string_dialect_is_refused() -> None:
    with pytest.raises(OpenRouterValidationError, match=r"^response_format\.json_schema\.schema: \$schema must be"):
        check_schema({"$schema": [], "type": "object"})


# -- regexes run on RE2 ----------------------------------------------------------------------------------


def test_patterns_are_compiled_by_re2_a_linear_time_engine() -> None:
    assert type(_regex(REDOS_PATTERN)).__module__ == "re2"


@pytest.mark.parametrize(
    ("schema", "value", "violations"),
    [
        (
            {"type": "string", "pattern": REDOS_PATTERN},
            REDOS_TEXT,
            [("$", f"{REDOS_TEXT!r} does not match {REDOS_PATTERN!r}")],
        ),
        (
            {"type": "object", "patternProperties": {REDOS_PATTERN: {"type": "integer"}}},
            {"a" * 40: "x", REDOS_TEXT: "y"},
            [(f"$.{'a' * 40}", "'x' is not of type 'integer'")],
        ),
        (
            {"type": "object", "patternProperties": {REDOS_PATTERN: {}}, "additionalProperties": False},
            {REDOS_TEXT: 1},
            [("$", f"{REDOS_TEXT!r} does not match any of the regexes: {REDOS_PATTERN!r}")],
        ),
        (
            {"type": "object", "propertyNames": {"pattern": REDOS_PATTERN}},
            {REDOS_TEXT: 1},
            [("$", f"{REDOS_TEXT!r} does not match {REDOS_PATTERN!r}")],
        ),
        (
            {"type": "object", "properties": {"a": {}}, "additionalProperties": False},
            {"a": 1, "b": 2, "c": 3},
            [("$", "Additional properties are not allowed ('b', 'c' were unexpected)")],
        ),
    ],
)
def test_a_catastrophic_pattern_against_the_reply_finishes_at_once(
    schema: dict[str, Any], value: Any, violations: list[tuple[str, str]]
) -> None:
    check_schema(schema)
    started = time.perf_counter()
    parsed, found = parse_structured(json.dumps(value), fmt(schema))
    assert time.perf_counter() - started < SANITY_SECONDS
    assert (parsed, [(v.path, v.message) for v in found]) == (value, violations)


def test_re2_matches_like_json_schema_expects() -> None:
    schema = {"type": "string", "pattern": "^\\p{L}+-\\d{2}$"}
    check_schema(schema)
    assert parse_structured('"été-42"', fmt(schema))[1] == []
    assert [v.path for v in parse_structured('"été-4x"', fmt(schema))[1]] == ["$"]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "string", "pattern": "(a)\\1"},
            "response_format.json_schema.schema: not a valid JSON Schema ('(a)\\\\1' is not a 'regex')",
        ),
        (
            {"type": "object", "patternProperties": {"(?=x)": {}}},
            "response_format.json_schema.schema: not a valid JSON Schema ('(?=x)' is not a 'regex')",
        ),
        (
            # Draft 4's meta-schema does not check patternProperties keys: our own walk does.
            {"$schema": "http://json-schema.org/draft-04/schema#", "patternProperties": {"(?<=a)b": {}}},
            "response_format.json_schema.schema: pattern '(?<=a)b' is not supported by RE2, which runs every "
            "pattern in linear time (invalid perl operator: (?<=)",
        ),
        (
            # jsonschema would match these with Python's `re` for unevaluatedProperties.
            {"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False},
            "response_format.json_schema.schema: unevaluatedProperties cannot be combined with patternProperties",
        ),
    ],
)
async def test_a_regex_re2_cannot_run_is_refused_before_upstream_is_called(
    make_service: Build, schema: dict[str, Any], message: str
) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body("{}")))
    with pytest.raises(OpenRouterValidationError) as info:
        await service.complete(USER, response_format=fmt(schema))
    assert str(info.value) == message
    assert seen == []


# -- the time budget -------------------------------------------------------------------------------------


def fan_out(levels: int) -> dict[str, Any]:
    """1 KB of schema that costs 2^levels evaluations on any value."""
    defs: dict[str, Any] = {
        f"a{i}": {"allOf": [{"$ref": f"#/$defs/a{i + 1}"}, {"$ref": f"#/$defs/a{i + 1}"}]} for i in range(levels)
    }
    defs[f"a{levels}"] = {"type": "object"}
    return {"$defs": defs, "$ref": "#/$defs/a0"}


@pytest.mark.parametrize("schema", [fan_out(40), {"$ref": "#"}, {"allOf": [{"$ref": "#"}]}])
async def test_a_schema_too_costly_to_apply_is_refused_before_upstream_is_called(
    make_service: Build, schema: dict[str, Any]
) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body("{}")))
    started = time.perf_counter()
    with pytest.raises(OpenRouterValidationError) as info:
        await service.complete(USER, response_format=fmt(schema))
    assert time.perf_counter() - started < SANITY_SECONDS
    assert str(info.value) == (
        "response_format.json_schema.schema: too costly to apply (it refers to itself without end, "
        "or fans out too widely)"
    )
    assert seen == []


def test_a_schema_too_costly_for_one_reply_is_a_violation_not_a_crash() -> None:
    # Cheap on trivial values, so accepted; endless on a value that has "a".
    schema = {"type": "object", "properties": {"a": {"allOf": [{"$ref": "#/properties/a"}]}}}
    check_schema(schema)
    assert parse_structured('{"a": 1}', fmt(schema))[1][0].message == "the schema is too costly to apply to this reply"


def test_a_reply_nested_too_deeply_to_parse_is_a_violation() -> None:
    schema = {"type": "array"}
    _, violations = parse_structured("[" * 100_000 + "]" * 100_000, fmt(schema))
    assert [(v.path, v.message) for v in violations] == [("$", "not valid JSON (nested too deeply)")]

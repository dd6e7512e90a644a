"""Structured output: does the model's content honour the requested ``response_format``?

This module (with ``jsonschema`` and RE2) is imported on first use: only requests that ask for a
schema pay for it.

A caller's schema is checked before any upstream call (:func:`check_schema`) and then applied to the
model's reply, under rules that keep one request from hurting others:

* nothing is ever fetched: a ``$ref`` must resolve inside the schema itself (or to a JSON Schema
  meta-schema that jsonschema bundles), else the request is refused; no remote or ``file://`` read,
  nothing that could stall, nothing fetched to echo back;
* every regex (``pattern``, ``patternProperties`` and the ``additionalProperties`` that depends on
  them) runs on RE2, whose matching time is linear in the text, so no pattern can stall the event loop;
  a pattern RE2 cannot compile (back-references, look-arounds) is refused. ``unevaluatedProperties``
  next to ``patternProperties`` is refused too: jsonschema would match those with Python's ``re``;
* applying a schema has a time budget (:data:`VALIDATION_SECONDS`): ``$ref`` fan-out can make a 1 KB
  schema cost 2^n evaluations, and the cost of each grows with nesting, so a count would not bound the
  time. A schema over budget (or recursing without end) on trivial values is refused up front; on a
  reply it counts as a violation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, NoReturn, Protocol

import re2  # type: ignore[import-untyped]
from jsonschema import FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as META_SCHEMAS  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import specification_with

from .errors import OpenRouterSchemaError, OpenRouterValidationError, SchemaViolation
from .redact import preview
from .wire import add_usage

__all__ = ["SCHEMA_FIELD", "VALIDATION_SECONDS", "check_schema", "enforce_format", "parse_structured", "reask_message"]

SCHEMA_FIELD = "response_format.json_schema.schema"
# The event-loop time one validation may take: a reply of thousands of values takes a few milliseconds.
VALIDATION_SECONDS = 0.25
# Trivial values every accepted schema must be cheaply applicable to (see check_schema).
_PROBES: tuple[Any, ...] = (None, True, 0, "", [], {})
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")

# A keyword's implementation: (validator, the keyword's value, instance, schema) -> its errors. The
# validator is Any: ``descend``, which keywords need, is not part of jsonschema's Validator protocol.
Keyword = Callable[[Any, Any, Any, Mapping[str, Any]], Iterator[ValidationError]]


class _Regex(Protocol):
    def search(self, text: str) -> object | None: ...


class _OverBudget(Exception):
    """A validation ran past its :data:`VALIDATION_SECONDS`."""


# perf_counter() instant by which the running validation must be over.
_budget: ContextVar[float | None] = ContextVar("schema_budget", default=None)


def _refuse(uri: str) -> NoReturn:
    """The registry's retrieval: nothing outside the schema is ever fetched."""
    raise NoSuchResource(uri)


# The bundled meta-schemas, and nothing else to retrieve from. (mypy cannot see attrs' ``retrieve``.)
_REGISTRY: Registry[Any] = META_SCHEMAS.combine(Registry(retrieve=_refuse))  # type: ignore[call-arg]


# RE2's memory for one compiled pattern (its program and lazily built DFA); a pattern that needs more is
# refused at compile time. Cached patterns hold theirs, hence the modest cache.
_REGEX_MEMORY = 2 << 20


@lru_cache(maxsize=256)
def _regex(pattern: str) -> _Regex:
    """``pattern`` compiled by RE2 (matching time linear in the text); ``re2.error`` when RE2 cannot."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _REGEX_MEMORY
    compiled: _Regex = re2.compile(pattern, options)
    return compiled


def _is_regex(value: object) -> bool:
    """The ``regex`` format, as RE2 reads it (Python's ``re`` never sees a caller's pattern)."""
    if isinstance(value, str):
        _regex(value)
    return True


def _pattern(validator: Any, pattern: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _regex(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """jsonschema's own, matching ``patternProperties`` with RE2 (same messages)."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    regexes = [_regex(pattern) for pattern in schema.get("patternProperties", {})]
    extras = {key for key in instance if key not in properties and not any(r.search(key) for r in regexes)}
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            listed = ", ".join(repr(extra) for extra in sorted(extras, key=str))
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _counted(keyword: Keyword) -> Keyword:
    """``keyword``, refused once the running validation is past its time budget."""

    def charged(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
        until = _budget.get()
        if until is not None and time.perf_counter() > until:
            raise _OverBudget
        return keyword(validator, value, instance, schema)

    return charged


@lru_cache(maxsize=16)
def _safe(base: type[Validator]) -> type[Validator]:
    """``base`` (a draft's validator class) with RE2 regexes and every keyword on the time budget."""
    keywords: dict[str, Keyword] = dict(base.VALIDATORS)
    keywords |= {
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    }
    extended: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
        base, {k: _counted(v) for k, v in keywords.items()}
    )
    return extended


def _validator_class(schema: Mapping[str, Any]) -> type[Validator]:
    return _safe(validators.validator_for(schema, default=validators.Draft202012Validator))


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
    schema = json.loads(schema_text)
    return _validator_class(schema)(schema, registry=_REGISTRY)


def _refused(why: str) -> OpenRouterValidationError:
    return OpenRouterValidationError(f"{SCHEMA_FIELD}: {why}")


def _check_regex(pattern: str) -> None:
    try:
        _regex(pattern)
    except re2.error as exc:
        why = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _refused(
            f"pattern {preview(pattern, 80)!r} is not supported by RE2, which runs every pattern in linear "
            f"time ({preview(why, 120)})"
        ) from None


def _check_resource(resource: Resource[Any], resolver: Any, seen: set[str]) -> None:
    """Every ``$ref`` in ``resource`` resolves locally and every regex compiles; ``seen`` collects the
    keywords that matter together."""
    contents = resource.contents
    if isinstance(contents, Mapping):
        for keyword in _REF_KEYWORDS:
            ref = contents.get(keyword)
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except (Unresolvable, LookupError, ValueError, TypeError):  # a pointer into a non-container
                    raise _refused(
                        f"{keyword} {preview(ref, 80)!r} does not resolve inside the schema "
                        "(references to other documents are never fetched)"
                    ) from None
        if isinstance(contents.get("pattern"), str):
            _check_regex(contents["pattern"])
        patterns = contents.get("patternProperties")
        if isinstance(patterns, Mapping):
            seen.add("patternProperties")
            for pattern in patterns:
                _check_regex(pattern)
        if "unevaluatedProperties" in contents:
            seen.add("unevaluatedProperties")
    for sub in resource.subresources():
        _check_resource(sub, resolver.in_subresource(sub), seen)


@lru_cache(maxsize=16)
def _format_checker(cls: type[Validator]) -> FormatChecker:
    """``cls``'s own format checker, but with RE2 judging the ``regex`` format."""
    checker = FormatChecker(formats=())
    for name, (check, raises) in cls.FORMAT_CHECKER.checkers.items():
        checker.checks(name, raises)(check)
    checker.checks("regex", re2.error)(_is_regex)
    return checker


def check_schema(schema: Mapping[str, Any]) -> None:
    """Raise a validation error (naming ``response_format.json_schema.schema``) when ``schema`` is not a
    valid JSON Schema, or one we will not apply: a ``$ref`` that does not resolve inside it, a regex RE2
    cannot run, a schema too costly to apply."""
    if not isinstance(schema.get("$schema", ""), str):
        raise _refused("$schema must be a string")
    cls: Any = _validator_class(schema)  # check_schema's format_checker and ID_OF are not in the protocol
    try:
        cls.check_schema(dict(schema), format_checker=_format_checker(cls))
        spec = specification_with(cls.ID_OF(cls.META_SCHEMA) or "urn:unknown-dialect")
        resource = spec.create_resource(dict(schema))
        seen: set[str] = set()
        _check_resource(resource, _REGISTRY.resolver_with_root(resource), seen)
        if {"patternProperties", "unevaluatedProperties"} <= seen:
            raise _refused("unevaluatedProperties cannot be combined with patternProperties")
        if _apply(_validator_for(json.dumps(schema, sort_keys=True)), *_PROBES) is None:
            raise _refused("too costly to apply (it refers to itself without end, or fans out too widely)")
    except SchemaError as exc:
        raise _refused(f"not a valid JSON Schema ({preview(exc.message, 200)})") from None
    except RecursionError:
        raise _refused("nested too deeply") from None


def _apply(validator: Validator, *values: Any) -> list[ValidationError] | None:
    """Every error of ``values`` against ``validator``; ``None`` when that costs more than the budget."""
    token = _budget.set(time.perf_counter() + VALIDATION_SECONDS)
    try:
        return [error for value in values for error in validator.iter_errors(value)]
    except (_OverBudget, RecursionError):
        return None
    finally:
        _budget.reset(token)


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
    except RecursionError:
        return None, [SchemaViolation("$", "not valid JSON (nested too deeply)")]
    if kind == "json_object":
        if not isinstance(value, dict):
            return value, [SchemaViolation("$", f"expected a JSON object, got {type(value).__name__}")]
        return value, []
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping) or not spec.get("strict"):
        # Without `strict` the schema is a hint to the model: valid JSON is all we hold it to.
        return value, []
    errors = _apply(_validator_for(json.dumps(schema, sort_keys=True)), value)
    if errors is None:
        return value, [SchemaViolation("$", "the schema is too costly to apply to this reply")]
    violations = [
        SchemaViolation(_path(error.absolute_path), error.message)
        for error in sorted(errors, key=lambda e: list(map(str, e.absolute_path)))
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


Post = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], int]]]


async def enforce_format(
    data: dict[str, Any], fmt: Mapping[str, Any], payload: dict[str, Any], *, reasks: int, post: Post
) -> tuple[dict[str, Any], Any, int]:
    """Hold a completion's content to ``fmt``, re-asking through ``post`` up to ``reasks`` times:
    (data, parsed value, attempts the re-asks made). The usage reported is the sum over every call."""
    extra_attempts = 0
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    messages = list(payload["messages"])
    for reask in range(reasks + 1):
        content = data["choices"][0]["message"].get("content")
        parsed, violations = parse_structured(content if isinstance(content, str) else None, fmt)
        if not violations:
            if reask:
                # The caller pays for every call we made, so report the sum.
                data = {**data, "usage": usage}
            return data, parsed, extra_attempts
        if reask == reasks:
            raise OpenRouterSchemaError(
                f"The model's reply did not match the requested format: {violations[0].path}: {violations[0].message}",
                violations=violations,
                raw_content=content if isinstance(content, str) else "",
                usage=usage,
                upstream_status=200,
                attempts=extra_attempts,
            )
        messages += [
            {"role": "assistant", "content": content if isinstance(content, str) else ""},
            {"role": "user", "content": reask_message(violations)},
        ]
        data, attempts = await post({**payload, "messages": messages})
        extra_attempts += attempts
        usage = add_usage(usage, data.get("usage") if isinstance(data.get("usage"), dict) else None)
    raise AssertionError("unreachable")  # pragma: no cover

"""OpenRouterService over httpx.MockTransport: payloads, retries, quirks, errors, structured output, logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from helpers import Sleeps, completion_body, json_response
from openrouter_service import (
    OpenRouterAuthError,
    OpenRouterBadRequestError,
    OpenRouterConfigError,
    OpenRouterConnectionError,
    OpenRouterContextLengthError,
    OpenRouterCreditsError,
    OpenRouterError,
    OpenRouterModerationError,
    OpenRouterRateLimitError,
    OpenRouterResponseError,
    OpenRouterSchemaError,
    OpenRouterServerError,
    OpenRouterService,
    OpenRouterTimeoutError,
    OpenRouterValidationError,
)

Build = Callable[..., tuple[OpenRouterService, list[httpx.Request]]]
USER = [{"role": "user", "content": "Hi"}]


def sent(request: httpx.Request) -> dict[str, Any]:
    return json.loads(request.content)  # type: ignore[no-any-return]


# -- construction -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "   "])
def test_missing_key_fails_at_construction_naming_the_variable(key: str | None) -> None:
    with pytest.raises(OpenRouterConfigError, match="OPENROUTER_API_KEY"):
        OpenRouterService(key)


def test_from_env_reads_the_environment() -> None:
    service = OpenRouterService.from_env(
        {
            "OPENROUTER_API_KEY": "sk-or-v1-abc",
            "OPENROUTER_MODEL": "openrouter/anthropic/claude-3-opus",
            "OPENROUTER_BASE_URL": "http://127.0.0.1:9/api/v1/",
            "OPENROUTER_TIMEOUT": "5",
            "OPENROUTER_MAX_RETRIES": "1",
        }
    )
    assert service.model_name == "anthropic/claude-3-opus"
    assert service.base_url == "http://127.0.0.1:9/api/v1"
    assert service.timeout == 5.0
    assert service.max_retries == 1


def test_from_env_without_key_names_the_variable() -> None:
    with pytest.raises(OpenRouterConfigError, match="OPENROUTER_API_KEY"):
        OpenRouterService.from_env({})


def test_default_model_is_a_real_openrouter_id() -> None:
    assert OpenRouterService("k").model_name == "openai/gpt-4o"


def test_model_name_and_base_url_are_mutable() -> None:
    service = OpenRouterService("k")
    service.model_name = "openrouter/meta-llama/llama-3.3-70b-instruct"
    service.base_url = "http://127.0.0.1:1234/api/v1/"
    assert (service.model_name, service.base_url) == (
        "meta-llama/llama-3.3-70b-instruct",
        "http://127.0.0.1:1234/api/v1",
    )


# -- the request we send ----------------------------------------------------------------------------


async def test_sends_openai_shaped_payload_with_auth_and_attribution(make_service: Build) -> None:
    service, seen = make_service(
        lambda r: json_response(200, completion_body()), app_url="https://app.example", app_title="My App"
    )
    data = await service.chat_completion(USER, model_params={"temperature": 0.2, "max_tokens": 50})
    assert data["choices"][0]["message"]["content"] == "Hello!"
    request = seen[0]
    assert request.url.path.endswith("/api/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-or-v1-testkey0123456789"
    assert request.headers["http-referer"] == "https://app.example"
    assert request.headers["x-openrouter-title"] == "My App"
    assert sent(request) == {"model": "openai/gpt-4o", "messages": USER, "temperature": 0.2, "max_tokens": 50}


async def test_model_param_overrides_model_name_per_call_and_prefix_is_stripped(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    await service.chat_completion(USER, model_params={"model": "openrouter/anthropic/claude-3-opus"})
    assert sent(seen[0])["model"] == "anthropic/claude-3-opus"
    assert service.model_name == "openai/gpt-4o"


async def test_default_system_prompt_only_when_caller_sent_none(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()), default_system_prompt="Be brief.")
    await service.chat_completion(USER)
    await service.chat_completion([{"role": "system", "content": "Be loud."}, *USER])
    assert sent(seen[0])["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in sent(seen[1])["messages"]] == ["Be loud.", "Hi"]


async def test_default_response_format_used_when_call_gives_none(make_service: Build) -> None:
    service, seen = make_service(
        lambda r: json_response(200, completion_body('{"a": 1}')), default_response_format={"type": "json_object"}
    )
    await service.chat_completion(USER)
    await service.chat_completion(USER, response_format={"type": "text"})
    assert sent(seen[0])["response_format"] == {"type": "json_object"}
    assert "response_format" not in sent(seen[1])


# -- validation before the network ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "where"),
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "wizard", "content": "x"}], r"messages\[0\]\.role"),
        ([{"role": "user"}], r"messages\[0\]\.content"),
        ([{"role": "user", "content": 5}], r"messages\[0\]\.content"),
        ([{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}], r"messages\[1\]\.tool_call_id"),
        ([{"role": "user", "content": [{"type": "text"}]}], r"messages\[0\]\.content\[0\]\.text"),
        ([{"role": "user", "content": [{"type": "gif", "gif": 1}]}], r"messages\[0\]\.content\[0\]\.type"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], r"content\[0\]\.image_url"),
        ([{"role": "user", "content": "x", "colour": "red"}], r"messages\[0\].*colour"),
        (["just a string"], r"messages\[0\]"),
    ],
)
async def test_bad_messages_fail_before_any_request_naming_message_and_field(
    make_service: Build, messages: Any, where: str
) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    with pytest.raises(OpenRouterValidationError, match=where) as info:
        await service.chat_completion(messages)
    assert (info.value.upstream_status, info.value.attempts) == (None, 0)
    assert seen == []


async def test_valid_rich_messages_pass(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    await service.chat_completion(
        [
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ]
    )
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"temprature": 0.5}, "temprature"),
        ({"temperature": 3}, r"temperature.*0\.0\.\.2\.0"),
        ({"top_p": "high"}, "top_p: must be a number"),
        ({"max_tokens": 1.5}, "max_tokens: must be an integer"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": ""}, "model"),
        ({"model": "openai/" + "x" * 122}, r"^model_params.model: must be a model id of at most 128 characters"),
        ({"model": "openai/gpt-4o\nX"}, r"^model_params.model: must be a model id .* without control characters$"),
        ({"models": "openai/gpt-4o"}, r"^model_params.models: must be a list of model ids$"),
        ({"models": ["openai/gpt-4o", 7]}, r"^model_params.models\[1\]: must be a non-empty string$"),
        ({"models": ["a/" + "b" * 127]}, r"^model_params.models\[0\]: must be a model id of at most 128 characters"),
    ],
)
async def test_unknown_or_out_of_range_params_are_errors(
    make_service: Build, params: dict[str, Any], match: str
) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    with pytest.raises(OpenRouterValidationError, match=match):
        await service.chat_completion(USER, model_params=params)
    assert seen == []


async def test_openrouter_only_params_are_passed_through(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    params = {
        "provider": {"order": ["DeepInfra"]},
        "models": ["openrouter/openai/gpt-4o-mini"],
        "reasoning": {"effort": "low"},
        "user": "u1",
        "top_k": 40,
    }
    await service.chat_completion(USER, model_params=params)
    body = sent(seen[0])
    assert body["provider"] == {"order": ["DeepInfra"]}
    assert body["models"] == ["openai/gpt-4o-mini"]
    assert body["top_k"] == 40


async def test_invalid_json_schema_is_rejected_before_sending(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body()))
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objekt"}}}
    with pytest.raises(OpenRouterValidationError, match="not a valid JSON Schema"):
        await service.chat_completion(USER, response_format=fmt)
    assert seen == []


# -- retries ----------------------------------------------------------------------------------------


async def test_transient_errors_are_retried_with_backoff_then_succeed(make_service: Build, sleeps: Sleeps) -> None:
    service, seen = make_service(
        [
            json_response(502, {"error": {"code": 502, "message": "Provider returned error"}}),
            json_response(503, {"error": {"code": 503, "message": "no provider"}}),
            json_response(200, completion_body()),
        ]
    )
    completion = await service.complete(USER)
    assert completion.attempts == 3
    assert len(seen) == 3
    assert len(sleeps) == 2
    assert 0.375 <= sleeps[0] <= 0.5 and 0.75 <= sleeps[1] <= 1.0


async def test_retry_after_is_honoured(make_service: Build, sleeps: Sleeps) -> None:
    service, _ = make_service(
        [
            json_response(429, {"error": {"code": 429, "message": "Rate limit exceeded"}}, {"Retry-After": "2"}),
            json_response(200, completion_body()),
        ]
    )
    await service.chat_completion(USER)
    assert sleeps == [2.0]


async def test_wait_longer_than_cap_fails_at_once_with_retry_after(make_service: Build, sleeps: Sleeps) -> None:
    service, seen = make_service(
        [
            json_response(
                429,
                {"error": {"code": 429, "message": "Rate limit exceeded: free-models-per-day"}},
                {"Retry-After": "3600"},
            ),
        ]
    )
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service.chat_completion(USER)
    assert info.value.retry_after == 3600.0
    assert (info.value.upstream_status, info.value.attempts) == (429, 1)
    assert sleeps == [] and len(seen) == 1


async def test_exhausted_429_is_a_rate_limit_error_saying_when_to_retry(make_service: Build, sleeps: Sleeps) -> None:
    busy = json_response(429, {"error": {"code": 429, "message": "Rate limit exceeded"}})
    service, seen = make_service(lambda r: busy, max_retries=2)
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service.chat_completion(USER)
    error = info.value
    assert (error.attempts, error.upstream_status) == (3, 429)
    assert error.retry_after == 2.0  # our backoff after attempt 3, without jitter: 0.5 * 2**2
    assert len(seen) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
async def test_client_errors_are_not_retried(make_service: Build, status: int, sleeps: Sleeps) -> None:
    service, seen = make_service(lambda r: json_response(status, {"error": {"code": status, "message": "no"}}))
    with pytest.raises(OpenRouterError):
        await service.chat_completion(USER)
    assert len(seen) == 1 and sleeps == []


async def test_connect_errors_are_retried_then_reported(make_service: Build, sleeps: Sleeps) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    service, _seen = make_service(refuse, max_retries=2)
    with pytest.raises(OpenRouterConnectionError) as info:
        await service.chat_completion(USER)
    assert info.value.attempts == 3 and len(sleeps) == 2
    assert (info.value.upstream_status, info.value.retry_after) == (None, 1.0)


async def test_connect_timeouts_are_retried_then_reported_as_timeouts(make_service: Build) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    service, _ = make_service(unreachable, max_retries=1)
    with pytest.raises(OpenRouterTimeoutError, match="did not answer within 30 s") as info:
        await service.chat_completion(USER)
    assert (info.value.attempts, info.value.retry_after) == (2, 1.0)


async def test_read_timeout_is_not_retried_so_nothing_is_billed_twice(make_service: Build) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    service, seen = make_service(slow, max_retries=3)
    with pytest.raises(OpenRouterTimeoutError) as info:
        await service.chat_completion(USER)
    assert info.value.attempts == 1
    assert len(seen) == 1


async def test_handle_rate_limit_sleeps_a_short_wait_and_raises_on_a_long_one(
    make_service: Build, sleeps: Sleeps
) -> None:
    service, _ = make_service(lambda r: json_response(200, completion_body()))
    error = OpenRouterRateLimitError("busy", upstream_status=429)
    await service._handle_rate_limit(error, httpx.Headers({"Retry-After": "2"}), 1)
    assert sleeps == [2.0]
    with pytest.raises(OpenRouterRateLimitError) as info:
        await service._handle_rate_limit(error, httpx.Headers({"Retry-After": "3600"}), 2)
    assert (info.value.retry_after, info.value.attempts, sleeps) == (3600.0, 2, [2.0])


# -- OpenRouter's quirks ----------------------------------------------------------------------------


async def test_error_inside_http_200_is_that_error_and_retried(make_service: Build, sleeps: Sleeps) -> None:
    service, seen = make_service(
        [
            json_response(200, {"error": {"code": 502, "message": "Provider returned error"}, "user_id": "user_1"}),
            json_response(200, completion_body("recovered")),
        ]
    )
    assert (await service.complete(USER)).content == "recovered"
    assert len(seen) == 2


async def test_error_inside_http_200_with_client_code_is_not_retried(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, {"error": {"code": 400, "message": "bad tool schema"}}))
    with pytest.raises(OpenRouterBadRequestError, match="bad tool schema"):
        await service.chat_completion(USER)
    assert len(seen) == 1


async def test_finish_reason_error_is_an_error(make_service: Build) -> None:
    body = completion_body("partial")
    body["choices"][0]["finish_reason"] = "error"
    body["choices"][0]["error"] = {"code": 502, "message": "upstream died"}
    service, seen = make_service(lambda r: json_response(200, body), max_retries=1)
    with pytest.raises(OpenRouterServerError) as info:
        await service.chat_completion(USER)
    assert info.value.attempts == 2 and len(seen) == 2


async def test_empty_choices_is_a_clear_error_not_keyerror(make_service: Build) -> None:
    service, _ = make_service(lambda r: json_response(200, completion_body(choices=[])))
    with pytest.raises(OpenRouterResponseError, match="no choices"):
        await service.chat_completion(USER)


async def test_non_json_body_is_a_clear_error(make_service: Build) -> None:
    service, _ = make_service(lambda r: httpx.Response(200, content=b"<html>oops</html>"))
    with pytest.raises(OpenRouterResponseError, match="not JSON") as info:
        await service.chat_completion(USER)
    assert (info.value.upstream_status, info.value.attempts, info.value.retry_after) == (200, 1, None)


async def test_non_json_error_body_still_maps_by_status(make_service: Build) -> None:
    service, _ = make_service(lambda r: httpx.Response(400, content=b"Bad Request"))
    with pytest.raises(OpenRouterBadRequestError):
        await service.chat_completion(USER)


@pytest.mark.parametrize(
    ("status", "cls", "retry_after"),
    [
        (401, OpenRouterAuthError, None),
        (402, OpenRouterCreditsError, 0.5),  # credits can be topped up: waiting helps
        (400, OpenRouterBadRequestError, None),
    ],
)
async def test_status_mapping_protects_the_caller(
    make_service: Build, status: int, cls: type[OpenRouterError], retry_after: float | None
) -> None:
    service, _ = make_service(
        lambda r: json_response(status, {"error": {"code": status, "message": "User not found."}})
    )
    with pytest.raises(cls) as info:
        await service.chat_completion(USER)
    assert type(info.value) is cls
    assert (info.value.upstream_status, info.value.attempts, info.value.retry_after) == (status, 1, retry_after)
    if status in (401, 402):
        assert "User not found" not in info.value.message  # our account's trouble is not the caller's business


async def test_moderation_carries_reasons(make_service: Build) -> None:
    meta = {"reasons": ["violence"], "flagged_input": "...", "provider_name": "OpenAI", "model_slug": "openai/gpt-4o"}
    service, _ = make_service(
        lambda r: json_response(403, {"error": {"code": 403, "message": "flagged", "metadata": meta}})
    )
    with pytest.raises(OpenRouterModerationError) as info:
        await service.chat_completion(USER)
    assert info.value.metadata["reasons"] == ["violence"]
    assert info.value.upstream_status == 403


async def test_context_length_is_its_own_error(make_service: Build) -> None:
    body = {"error": {"code": 400, "message": "too long", "metadata": {"error_type": "context_length_exceeded"}}}
    service, _ = make_service(lambda r: json_response(400, body))
    with pytest.raises(OpenRouterContextLengthError) as info:
        await service.chat_completion(USER)
    assert isinstance(info.value, OpenRouterBadRequestError)
    assert info.value.upstream_status == 400


async def test_string_error_code_is_accepted(make_service: Build) -> None:
    service, _ = make_service(
        lambda r: json_response(200, {"error": {"code": "server_error", "message": "boom"}}), max_retries=0
    )
    with pytest.raises(OpenRouterServerError) as info:
        await service.chat_completion(USER)
    assert info.value.upstream_code == "server_error"


# -- structured output ------------------------------------------------------------------------------

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "person",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    },
}


async def test_json_object_content_is_parsed(make_service: Build) -> None:
    service, _ = make_service(lambda r: json_response(200, completion_body('```json\n{"a": 1}\n```')))
    completion = await service.complete(USER, response_format={"type": "json_object"})
    assert completion.parsed == {"a": 1}


async def test_schema_violation_is_reasked_once_then_succeeds_with_summed_usage(make_service: Build) -> None:
    service, seen = make_service(
        [
            json_response(200, completion_body('{"name": "Ada", "age": -1}')),
            json_response(200, completion_body('{"name": "Ada", "age": 36}')),
        ]
    )
    completion = await service.complete(USER, response_format=SCHEMA)
    assert completion.parsed == {"name": "Ada", "age": 36}
    reask = sent(seen[1])["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"name": "Ada", "age": -1}'}
    assert "$.age" in reask[-1]["content"]
    assert completion.usage is not None and completion.usage["total_tokens"] == 28


async def test_schema_error_carries_every_violation_and_raw_content(make_service: Build) -> None:
    bad = '{"age": "old", "extra": true}'
    service, seen = make_service(lambda r: json_response(200, completion_body(bad)))
    with pytest.raises(OpenRouterSchemaError) as info:
        await service.chat_completion(USER, response_format=SCHEMA)
    error = info.value
    assert len(seen) == 2  # one re-ask by default
    assert error.raw_content == bad
    paths = {v.path for v in error.violations}
    assert paths == {"$", "$.age"}
    assert len(error.violations) == 3  # missing name, extra property, wrong type
    assert error.usage is not None and error.usage["total_tokens"] == 28
    assert error.attempts == 2  # the first answer and the re-ask


async def test_a_reask_runs_in_the_same_attempt_loop(make_service: Build, sleeps: Sleeps) -> None:
    service, seen = make_service(
        [
            json_response(200, completion_body("not json")),
            json_response(503, {"error": {"code": 503, "message": "no provider"}}, {"Retry-After": "2"}),
            json_response(200, completion_body('{"a": 1}')),
        ]
    )
    completion = await service.complete(USER, response_format={"type": "json_object"})
    assert (completion.parsed, completion.attempts, sleeps, len(seen)) == ({"a": 1}, 3, [2.0], 3)


async def test_schema_retries_zero_raises_on_first_violation(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body("not json")), schema_retries=0)
    with pytest.raises(OpenRouterSchemaError, match="not valid JSON"):
        await service.chat_completion(USER, response_format={"type": "json_object"})
    assert len(seen) == 1


async def test_generate_completion_returns_text(make_service: Build) -> None:
    service, seen = make_service(lambda r: json_response(200, completion_body("A poem.")))
    assert await service.generate_completion("Write a poem", system="You are a poet") == "A poem."
    assert [m["role"] for m in sent(seen[0])["messages"]] == ["system", "user"]
    with pytest.raises(OpenRouterValidationError):
        await service.generate_completion("  ")


# -- logging and secrets ----------------------------------------------------------------------------


async def test_one_structured_log_line_per_call_without_secrets(
    make_service: Build, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = make_service(lambda r: json_response(200, completion_body("x" * 2000)))
    caplog.set_level(logging.INFO, logger="openrouter_service")
    await service.chat_completion([{"role": "user", "content": "my key is sk-or-v1-testkey0123456789 " + "y" * 900}])
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "openrouter.call")]
    line = caplog.records[0].json_fields
    assert line["status"] == 200 and line["attempts"] == 1 and line["model"] == "openai/gpt-4o"
    assert (line["served_by"], line["generation_id"]) == ("openai/gpt-4o", "gen-1-abc")
    assert len(line["prompt_preview"]) <= 512 and len(line["response_preview"]) <= 512
    assert "sk-or-v1" not in json.dumps(line)


async def test_error_log_line_is_masked(make_service: Build, caplog: pytest.LogCaptureFixture) -> None:
    body = {"error": {"code": 400, "message": "bad key Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"}}
    service, _ = make_service(lambda r: json_response(400, body))
    caplog.set_level(logging.INFO, logger="openrouter_service")
    with pytest.raises(OpenRouterBadRequestError):
        await service.chat_completion(USER)
    record = caplog.records[-1]
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "openrouter.error")
    line = record.json_fields
    assert (line["upstream_status"], line["error"], line["attempts"]) == (400, "OpenRouterBadRequestError", 1)
    assert line["error_message"].startswith("bad key Bearer ***")
    assert "eyJ" not in json.dumps(line)


def test_mask_secrets_removes_keys_tokens_and_jwts() -> None:
    service = OpenRouterService("my-custom-secret-key")
    text = (
        "key sk-or-v1-0123456789abcdef Authorization: Bearer abc.def-ghi "
        "jwt eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl own my-custom-secret-key end"
    )
    masked = service._mask_secrets(text)
    for secret in ("sk-or-v1-0123", "abc.def-ghi", "eyJhbGciOiJFUzI1NiJ9", "my-custom-secret-key"):
        assert secret not in masked
    assert masked.startswith("key ***") and masked.endswith("end")


# -- the HTTP client's life -------------------------------------------------------------------------


async def test_injected_client_is_used_as_given_and_not_closed(make_service: Build) -> None:
    service, _ = make_service(lambda r: json_response(200, completion_body()))
    client = service._http
    await service.aclose()
    assert client is not None and not client.is_closed


async def test_own_client_is_pooled_and_closed_by_async_with() -> None:
    async with OpenRouterService("k", base_url="http://127.0.0.1:9/api/v1") as service:
        first = service._client()
        assert service._client() is first
    assert first.is_closed

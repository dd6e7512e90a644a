"""Safe configuration: conservative limits out of the box, one clear way to switch each off, and the
settings a server refuses to start with (malformed CORS origins, any origin on a cloud runtime, plain
http towards a remote host)."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from pydantic import ValidationError

from openrouter_functions.config import Settings, plain_http_allowed
from openrouter_functions.cors import origin_problem
from openrouter_service.transport import default_transport

CLOUD = {"K_SERVICE": "chat"}


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


# -- limits ------------------------------------------------------------------------------------------


def test_conservative_limits_out_of_the_box() -> None:
    s = settings()
    assert (s.default_rpm, s.default_daily_requests, s.default_daily_cost_usd) == (60, None, 1.0)
    assert (s.max_output_tokens, s.prompt_guard, s.allow_any_origin, s.allow_plain_http) == (
        16384,
        "block",
        False,
        False,
    )


@pytest.mark.parametrize("word", ["unlimited", "UNLIMITED", " Unlimited "])
def test_unlimited_switches_a_limit_off(word: str) -> None:
    s = settings(DEFAULT_RPM=word, DEFAULT_DAILY_REQUESTS=word, DEFAULT_DAILY_COST_USD=word, MAX_OUTPUT_TOKENS=word)
    assert (s.default_rpm, s.default_daily_requests, s.default_daily_cost_usd, s.max_output_tokens) == (
        None,
        None,
        None,
        None,
    )


def test_a_blank_variable_keeps_the_default() -> None:
    s = settings(DEFAULT_RPM="", DEFAULT_DAILY_COST_USD=" ", MAX_OUTPUT_TOKENS="", PROMPT_GUARD="")
    assert (s.default_rpm, s.default_daily_cost_usd, s.max_output_tokens, s.prompt_guard) == (60, 1.0, 16384, "block")


def test_limits_can_be_raised_or_set_to_zero() -> None:
    s = settings(DEFAULT_RPM="600", DEFAULT_DAILY_COST_USD="25.5", MAX_OUTPUT_TOKENS="32768", PROMPT_GUARD="block")
    assert (s.default_rpm, s.default_daily_cost_usd, s.max_output_tokens, s.prompt_guard) == (600, 25.5, 32768, "block")
    assert settings(DEFAULT_RPM="0").default_rpm == 0  # admits nobody: a kill switch, not "off"


@pytest.mark.parametrize(
    ("name", "value"), [("MAX_OUTPUT_TOKENS", "0"), ("DEFAULT_RPM", "-1"), ("DEFAULT_RPM", "lots")]
)
def test_nonsense_limits_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        settings(**{name: value})


# -- CORS origins ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "https://app.example/",
            "ALLOWED_ORIGINS entry 'https://app.example/' has a path, query or trailing slash; an origin is https://app.example",
        ),
        (
            "https://app.example/chat",
            "ALLOWED_ORIGINS entry 'https://app.example/chat' has a path, query or trailing slash; an origin is https://app.example",
        ),
        ("app.example", "ALLOWED_ORIGINS entry 'app.example' has no scheme; write it as https://app.example"),
        (
            "https://*.example.com",
            "ALLOWED_ORIGINS entry 'https://*.example.com': wildcards are not supported; list each origin, or use * alone",
        ),
        (
            "https://App.Example",
            "ALLOWED_ORIGINS entry 'https://App.Example': browsers send origins in lower case; write 'https://app.example'",
        ),
        (
            "https://app.example:443",
            "ALLOWED_ORIGINS entry 'https://app.example:443': browsers omit the default port; write 'https://app.example'",
        ),
        ("null", "ALLOWED_ORIGINS entry 'null': sandboxed pages and local files send it; anyone can, so it is refused"),
    ],
)
def test_a_malformed_origin_is_named(entry: str, problem: str) -> None:
    assert origin_problem(entry) == problem
    assert settings(ALLOWED_ORIGINS=f"https://ok.example,{entry}").refusals({}) == [problem]


@pytest.mark.parametrize(
    "entry", ["*", "https://app.example", "http://localhost:3000", "http://[::1]:8080", "capacitor://localhost"]
)
def test_well_formed_origins_are_accepted(entry: str) -> None:
    assert origin_problem(entry) is None


def test_any_origin_on_a_cloud_runtime_needs_confirming() -> None:
    assert settings().refusals({}) == []  # locally (and offline `serve`) * is fine
    assert settings().refusals(CLOUD) == [
        "ALLOWED_ORIGINS=* on a cloud runtime lets any web page read the answers: list your web app's origins, "
        "or set ALLOW_ANY_ORIGIN=true to confirm"
    ]
    assert settings(ALLOW_ANY_ORIGIN="true").refusals(CLOUD) == []
    assert settings(ALLOWED_ORIGINS="https://app.example").refusals(CLOUD) == []


# -- TLS towards upstream and Supabase ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8787/api/v1", True),
        ("http://127.8.9.10/api/v1", True),
        ("http://localhost:8787", True),
        ("http://[::1]:8787", True),
        ("http://openrouter.ai/api/v1", False),
        ("http://10.0.0.5/api/v1", False),
        ("http://localhost.evil.example", False),
    ],
)
def test_plain_http_only_towards_loopback(url: str, allowed: bool) -> None:
    assert plain_http_allowed(url) is allowed


def test_remote_urls_must_use_https() -> None:
    s = settings(OPENROUTER_BASE_URL="http://openrouter.ai/api/v1", SUPABASE_URL="http://ref.supabase.co")
    assert s.refusals({}) == [
        "OPENROUTER_BASE_URL must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true for a private network you trust)",
        "SUPABASE_URL must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true for a private network you trust)",
    ]
    assert settings(OPENROUTER_BASE_URL="ftp://openrouter.ai").refusals({}) == [
        "OPENROUTER_BASE_URL must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true for a private network you trust)"
    ]
    assert settings(OPENROUTER_BASE_URL="http://127.0.0.1:8787/api/v1").refusals({}) == []
    assert settings().refusals({}) == []  # https://openrouter.ai/api/v1


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_outbound_tls_is_verified_and_at_least_tls_1_2(monkeypatch: pytest.MonkeyPatch, transport: str) -> None:
    monkeypatch.setenv("OPENROUTER_HTTP_TRANSPORT", transport)
    built = default_transport()
    try:
        inner: Any = getattr(built, "_inner", built)  # our aiohttp wrapper keeps httpx-aiohttp's transport inside
        context = inner.ssl_context if transport == "aiohttp" else inner._pool._ssl_context
        assert isinstance(context, ssl.SSLContext)
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    finally:
        await built.aclose()


def test_plain_http_on_a_private_network_needs_a_confirmation() -> None:
    internal = {"SUPABASE_URL": "http://kong:8000", "SUPABASE_JWT_SECRET": "s" * 32}
    assert settings(**internal).refusals({}) != []
    assert settings(**internal, ALLOW_PLAIN_HTTP="true").refusals({}) == []
    assert settings(PROMPT_GUARD="").prompt_guard == "block"

"""The functions refusing requests in-process: every auth failure is the JSON error envelope with a Bearer
challenge, a request id and CORS headers, and never reaches the (fake) upstream. Also: no auth configured
is a 500, ES256 through a JWKS served on 127.0.0.1 end to end, anonymous users, and /health needs no token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from helpers import HEALTH_DETAIL, bearer, mint
from jwks_support import JWKS_PATH, JwksServer, ec_jwk, es256, free_port, hs256_with, payload_of, public_pem, segment
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_functions.runtime import Runtime

Configure = Callable[..., Runtime]

KID = "ec-fn-key-1"
ORIGIN = "https://app.example.com"
BODIES: dict[str, dict[str, Any]] = {
    "/chat": {"messages": [{"role": "user", "content": "hi"}]},
    "/completion": {"prompt": "hi"},
}
ENDPOINTS = list(BODIES)
# Usage accounting is not what these tests are about (and refused requests never reach it).
NO_LEDGER = {"LEDGER_BACKEND": "off"}


# -- a JWKS endpoint and requests -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def jwks(ec_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[JwksServer]:
    server = JwksServer([ec_jwk(ec_key, KID)])
    await server.start()
    yield server
    await server.aclose()


async def post(client: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async with asyncio.timeout(5):
        return await client.post(path, json=BODIES[path], headers={"Origin": ORIGIN, **(headers or {})})


def refusal(response: httpx.Response, status: int, type: str) -> dict[str, Any]:
    """The error envelope with a request id and CORS headers (and a Bearer challenge on 401)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["code"] == status
    assert error["type"] == type, error
    assert isinstance(error["message"], str) and error["message"]
    assert response.headers["x-request-id"]
    assert response.headers["access-control-allow-origin"] == "*"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return error


# -- refusals with the HS256 secret configured (the fixture's default) ----------------------------------


def _expired() -> str:
    now = int(time.time())
    return mint(iat=now - 7200, exp=now - 3600)


REFUSALS: dict[str, tuple[Callable[[], dict[str, str]], str]] = {
    "no header": (dict, "missing_token"),
    "empty header": (lambda: {"Authorization": ""}, "missing_token"),
    "basic scheme": (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, "missing_token"),
    "bare token": (lambda: {"Authorization": mint()}, "missing_token"),
    "garbage token": (lambda: bearer("not-a-jwt"), "invalid_token"),
    "expired": (lambda: bearer(_expired()), "token_expired"),
    "no exp": (lambda: bearer(mint(exp=None)), "invalid_token"),
    "wrong aud": (lambda: bearer(mint(aud="someone-else")), "invalid_token"),
    "missing sub": (lambda: bearer(mint(sub=None)), "invalid_token"),
    "role anon": (lambda: bearer(mint(role="anon")), "invalid_token"),
    "other secret": (lambda: bearer(mint("another-secret-that-is-at-least-32-characters!")), "invalid_token"),
    "alg none": (lambda: bearer(f"{segment({'alg': 'none'})}.{payload_of()}."), "invalid_token"),
}


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_refused_with_envelope_and_no_upstream_call(
    client: httpx.AsyncClient, fake: FakeOpenRouter, path: str
) -> None:
    """Every case in one test (one fake upstream and runtime); all failing cases are reported together."""
    failures: dict[str, str] = {}
    for case, (headers, expected) in REFUSALS.items():
        response = await post(client, path, headers())
        try:
            refusal(response, 401, expected)
        except AssertionError as exc:
            failures[case] = f"{response.status_code} {dict(response.headers)} {response.text}: {exc}"
    assert failures == {}
    assert fake.received == []


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_request_id_echoed_on_refusal(client: httpx.AsyncClient, fake: FakeOpenRouter, path: str) -> None:
    response = await post(client, path, {"X-Request-Id": "auth-refusal-1"})
    refusal(response, 401, "missing_token")
    assert response.headers["x-request-id"] == "auth-refusal-1"
    assert fake.received == []


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_token_checked_before_the_body(client: httpx.AsyncClient, fake: FakeOpenRouter, path: str) -> None:
    async with asyncio.timeout(5):
        response = await client.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
    refusal(response, 401, "missing_token")
    assert fake.received == []


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_wrong_issuer_refused_when_supabase_url_set(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Configure, path: str
) -> None:
    supabase_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: HS256 tokens need no JWKS
    configure(**NO_LEDGER, SUPABASE_URL=supabase_url)
    response = await post(client, path, bearer(mint(iss="https://other-project.supabase.co/auth/v1")))
    refusal(response, 401, "invalid_token")
    assert fake.received == []
    response = await post(client, path, bearer(mint(iss=f"{supabase_url}/auth/v1")))
    assert response.status_code == 200, response.text
    assert len(fake.received) == 1


# -- anonymous users, the service role, no configuration -----------------------------------------------


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_anonymous_user_refused_by_default(client: httpx.AsyncClient, fake: FakeOpenRouter, path: str) -> None:
    response = await post(client, path, bearer(mint(is_anonymous=True)))
    refusal(response, 403, "anonymous_not_allowed")
    assert fake.received == []


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_anonymous_user_allowed_when_enabled(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Configure, path: str
) -> None:
    configure(**NO_LEDGER, ALLOW_ANONYMOUS_USERS="true")
    response = await post(client, path, bearer(mint(is_anonymous=True)))
    assert response.status_code == 200, response.text
    assert len(fake.received) == 1


async def test_service_role_token_accepted(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Configure
) -> None:
    configure(**NO_LEDGER)
    token = mint(role="service_role", aud=None, iss="supabase", sub=None, email=None, is_anonymous=None)
    response = await post(client, "/chat", bearer(token))
    assert response.status_code == 200, response.text
    assert len(fake.received) == 1


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_no_auth_configured_is_500_not_200(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Configure, path: str
) -> None:
    configure(**NO_LEDGER, SUPABASE_JWT_SECRET=None)
    refusal(await post(client, path, bearer()), 500, "configuration_error")
    response = await post(client, path)  # and no token is not a way in either
    assert response.status_code in (401, 500)
    assert fake.received == []


# -- ES256 through a JWKS served on loopback ------------------------------------------------------------


async def test_es256_via_jwks_end_to_end(
    client: httpx.AsyncClient,
    fake: FakeOpenRouter,
    configure: Configure,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    configure(**NO_LEDGER, SUPABASE_JWT_SECRET=None, SUPABASE_URL=jwks.supabase_url)
    response = await post(client, "/chat", bearer(es256(ec_key, KID, iss=jwks.issuer)))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"
    response = await post(client, "/completion", bearer(es256(ec_key, KID, iss=jwks.issuer)))
    assert response.status_code == 200, response.text
    assert jwks.paths == [JWKS_PATH]  # fetched once, then cached by the runtime's verifier
    assert len(fake.received) == 2


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_jwks_refusals(
    client: httpx.AsyncClient,
    fake: FakeOpenRouter,
    configure: Configure,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    path: str,
) -> None:
    configure(**NO_LEDGER, SUPABASE_JWT_SECRET=None, SUPABASE_URL=jwks.supabase_url)
    stranger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    for token, expected in [
        (es256(ec_key, KID, iss="https://other-project.supabase.co/auth/v1"), "invalid_token"),
        (es256(ec_key, KID, iss=jwks.issuer, iat=now - 7200, exp=now - 3600), "token_expired"),
        (es256(stranger, KID, iss=jwks.issuer), "invalid_token"),  # known kid, wrong key
        (es256(stranger, "unpublished", iss=jwks.issuer), "invalid_token"),
        (hs256_with(public_pem(ec_key), {"alg": "HS256", "kid": KID}, payload_of(iss=jwks.issuer)), "invalid_token"),
        (mint(iss=jwks.issuer), "invalid_token"),  # HS256 with no secret configured
    ]:
        refusal(await post(client, path, bearer(token)), 401, expected)
    assert fake.received == []


async def test_hs256_signed_with_public_key_refused_with_secret_and_jwks(
    client: httpx.AsyncClient,
    fake: FakeOpenRouter,
    configure: Configure,
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    configure(**NO_LEDGER, SUPABASE_URL=jwks.supabase_url)  # the secret stays configured too
    token = hs256_with(public_pem(ec_key), {"alg": "HS256", "kid": KID}, payload_of(iss=jwks.issuer))
    refusal(await post(client, "/chat", bearer(token)), 401, "invalid_token")
    assert fake.received == []
    response = await post(client, "/chat", bearer(mint(iss=jwks.issuer)))
    assert response.status_code == 200, response.text


async def test_jwks_down_is_503_not_401(
    client: httpx.AsyncClient, fake: FakeOpenRouter, configure: Configure, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    down = JwksServer([], port=free_port())  # never started
    configure(**NO_LEDGER, SUPABASE_JWT_SECRET=None, SUPABASE_URL=down.supabase_url)
    for path in ENDPOINTS:
        response = await post(client, path, bearer(es256(ec_key, KID, iss=down.issuer)))
        refusal(response, 503, "auth_unavailable")
        assert int(response.headers["retry-after"]) >= 1
    assert fake.received == []


# -- health ---------------------------------------------------------------------------------------------


def auth_problems(body: dict[str, Any]) -> list[str]:
    return [p for p in body["checks"]["configuration"]["problems"] if "token" in p.lower()]


async def test_health_needs_no_token(client: httpx.AsyncClient, configure: Configure) -> None:
    configure(**NO_LEDGER)
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": f"Bearer {mint()}"}):
        async with asyncio.timeout(5):
            response = await client.get("/health", headers={"Origin": ORIGIN, **headers})
        assert response.status_code == 200, response.text
        assert "www-authenticate" not in response.headers
        assert response.json() == {"status": "ok"}, "strangers and users get the status alone"
    detailed = await client.get("/health", headers=HEALTH_DETAIL)
    body = detailed.json()
    assert body["status"] == "ok"
    assert body["checks"]["configuration"]["auth"] == "hs256"
    assert auth_problems(body) == []


async def test_a_service_role_token_gets_the_detail(client: httpx.AsyncClient, configure: Configure) -> None:
    configure(**NO_LEDGER, HEALTH_TOKEN=None)
    service = mint(role="service_role", sub=None, aud=None, email=None, is_anonymous=None)
    body = (await client.get("/health", headers={"Authorization": f"Bearer {service}"})).json()
    assert body["checks"]["configuration"]["auth"] == "hs256"
    assert (await client.get("/health", headers=HEALTH_DETAIL)).json() == {"status": "ok"}, "no HEALTH_TOKEN set"


async def test_health_reports_missing_auth_configuration(client: httpx.AsyncClient, configure: Configure) -> None:
    configure(**NO_LEDGER, SUPABASE_JWT_SECRET=None)
    async with asyncio.timeout(5):
        response = await client.get("/health", headers=HEALTH_DETAIL)
    assert response.status_code == 503, response.text
    assert "www-authenticate" not in response.headers
    body = response.json()
    assert "configuration" in body["down"]
    assert body["checks"]["configuration"]["auth"] == "none"
    assert auth_problems(body)

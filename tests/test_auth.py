"""TokenVerifier unit tests: HS256 with the project secret, ES256/RS256 against a JWKS served over real
HTTP on 127.0.0.1 (key caching, rotation, the refresh floor, the JWKS being down), and every way a token
is refused. Tokens are minted here; time for the JWKS cache is a fake clock where waiting would matter."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import types
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from helpers import JWT_SECRET, USER_ID, mint
from jwks_support import (
    EC_KID,
    JWKS_PATH,
    RSA_KID,
    JwksServer,
    b64url,
    ec_jwk,
    es256,
    free_port,
    hs256_with,
    payload_of,
    public_pem,
    rs256,
    rsa_jwk,
    segment,
)
from openrouter_functions import auth as auth_module
from openrouter_functions.auth import AuthError, Caller, TokenVerifier
from openrouter_functions.config import Settings
from openrouter_functions.envelope import ApiError
from openrouter_functions.runtime import Runtime

ISSUER = "http://127.0.0.1:54321/auth/v1"


# -- keys, a fake clock, and a JWKS endpoint ----------------------------------------------------------


def es256_raw_signature(key: ec.EllipticCurvePrivateKey, signing_input: str) -> str:
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


class Clock:
    """A controllable ``time.monotonic`` for the auth module only (the event loop keeps real time)."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def jwks(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[JwksServer]:
    server = JwksServer([ec_jwk(ec_key, EC_KID), rsa_jwk(rsa_key, RSA_KID)])
    await server.start()
    yield server
    await server.aclose()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth_module, "time", types.SimpleNamespace(monotonic=fake.monotonic, time=time.time))
    return fake


async def verify(verifier: TokenVerifier, token: str) -> Caller:
    async with asyncio.timeout(5):
        return await verifier.verify(f"Bearer {token}")


async def refused(verifier: TokenVerifier, authorization: str | None, type: str = "invalid_token") -> AuthError:
    """Assert the header is refused with a 401 of ``type`` and a Bearer challenge."""
    with pytest.raises(AuthError) as caught:
        async with asyncio.timeout(5):
            await verifier.verify(authorization)
    error = caught.value
    assert error.status == 401
    assert error.type == type, error.message
    assert error.headers["WWW-Authenticate"].startswith("Bearer")
    assert error.message
    return error


# -- HS256 --------------------------------------------------------------------------------------------


async def test_hs256_token_is_accepted() -> None:
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET), mint())
    assert caller.user_id == USER_ID
    assert caller.role == "authenticated"
    assert not caller.is_anonymous
    assert not caller.is_service
    assert caller.claims["email"] == "ada@example.com"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_bearer_scheme_is_case_insensitive(scheme: str) -> None:
    caller = await TokenVerifier(jwt_secret=JWT_SECRET).verify(f"{scheme} {mint()}")
    assert caller.user_id == USER_ID


async def test_expiry_within_leeway_is_accepted() -> None:
    now = int(time.time())
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET), mint(iat=now - 3600, exp=now - 10))
    assert caller.user_id == USER_ID


async def test_matching_issuer_is_accepted() -> None:
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET, issuer=ISSUER), mint(iss=ISSUER))
    assert caller.user_id == USER_ID


async def test_audience_list_containing_authenticated_is_accepted() -> None:
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET), mint(aud=["authenticated", "other"]))
    assert caller.role == "authenticated"


# -- refusals (HS256 secret configured) ---------------------------------------------------------------


def _alg_none() -> str:
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{payload_of()}."


def _hs512() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the key-length warning; the point is the algorithm
        return mint(algorithm="HS512")


def _expired() -> str:
    now = int(time.time())
    return mint(iat=now - 7200, exp=now - 3600)


def _expired_just_beyond_leeway() -> str:
    now = int(time.time())
    return mint(iat=now - 3600, exp=now - 60)


REFUSALS: dict[str, tuple[Callable[[], str | None], str]] = {
    "no header": (lambda: None, "missing_token"),
    "empty header": (lambda: "", "missing_token"),
    "basic scheme": (lambda: "Basic dXNlcjpwYXNz", "missing_token"),
    "token scheme": (lambda: f"Token {mint()}", "missing_token"),
    "bare token": (lambda: mint(), "missing_token"),
    "bearer without token": (lambda: "Bearer", "missing_token"),
    "bearer with blank token": (lambda: "Bearer    ", "missing_token"),
    "garbage token": (lambda: "Bearer not-a-jwt", "invalid_token"),
    "garbage segments": (lambda: "Bearer aaa.bbb.ccc", "invalid_token"),
    "expired": (lambda: f"Bearer {_expired()}", "token_expired"),
    "expired beyond leeway": (lambda: f"Bearer {_expired_just_beyond_leeway()}", "token_expired"),
    "no exp": (lambda: f"Bearer {mint(exp=None)}", "invalid_token"),
    "not yet valid": (lambda: f"Bearer {mint(nbf=int(time.time()) + 3600)}", "invalid_token"),
    "wrong aud": (lambda: f"Bearer {mint(aud='someone-else')}", "invalid_token"),
    "no aud": (lambda: f"Bearer {mint(aud=None)}", "invalid_token"),
    "missing sub": (lambda: f"Bearer {mint(sub=None)}", "invalid_token"),
    "empty sub": (lambda: f"Bearer {mint(sub='')}", "invalid_token"),
    "role anon": (lambda: f"Bearer {mint(role='anon')}", "invalid_token"),
    "no role": (lambda: f"Bearer {mint(role=None)}", "invalid_token"),
    "anon key token": (lambda: f"Bearer {mint(role='anon', aud=None, sub=None, iss='supabase')}", "invalid_token"),
    "other secret": (
        lambda: f"Bearer {mint('another-secret-that-is-at-least-32-characters!')}",
        "invalid_token",
    ),
    "tampered payload": (
        lambda: "Bearer " + ".".join([mint().split(".")[0], payload_of(sub="someone-else"), mint().split(".")[2]]),
        "invalid_token",
    ),
    "alg none": (lambda: f"Bearer {_alg_none()}", "invalid_token"),
    "alg None": (lambda: f"Bearer {segment({'alg': 'None'})}.{payload_of()}.", "invalid_token"),
    "no alg": (lambda: f"Bearer {segment({'typ': 'JWT'})}.{payload_of()}.", "invalid_token"),
    "HS512": (lambda: f"Bearer {_hs512()}", "invalid_token"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_refusals(case: str) -> None:
    build, expected = REFUSALS[case]
    await refused(TokenVerifier(jwt_secret=JWT_SECRET), build(), expected)


async def test_missing_token_challenge_names_no_invalid_token() -> None:
    error = await refused(TokenVerifier(jwt_secret=JWT_SECRET), None, "missing_token")
    assert "invalid_token" not in error.headers["WWW-Authenticate"]


async def test_bad_token_challenge_says_invalid_token() -> None:
    error = await refused(TokenVerifier(jwt_secret=JWT_SECRET), "Bearer garbage")
    assert error.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_wrong_issuer_refused_when_issuer_configured() -> None:
    verifier = TokenVerifier(jwt_secret=JWT_SECRET, issuer=ISSUER)
    await refused(verifier, f"Bearer {mint(iss='https://other-project.supabase.co/auth/v1')}")
    await refused(verifier, f"Bearer {mint()}")  # no iss at all


async def test_issuer_not_checked_when_not_configured() -> None:
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET), mint(iss="https://anything.example/auth/v1"))
    assert caller.user_id == USER_ID


async def test_no_configuration_is_a_500_not_a_pass() -> None:
    runtime = Runtime(Settings.from_env({}))
    with pytest.raises(ApiError) as caught:
        await runtime.authenticate(f"Bearer {mint()}")
    assert caught.value.status == 500
    assert caught.value.type == "configuration_error"
    with pytest.raises(AuthError) as missing:  # no credentials at all is still the caller's 401
        await runtime.authenticate(None)
    assert missing.value.type == "missing_token"


# -- anonymous users and the service role -------------------------------------------------------------


async def test_anonymous_user_refused_by_default() -> None:
    with pytest.raises(ApiError) as caught:
        await verify(TokenVerifier(jwt_secret=JWT_SECRET), mint(is_anonymous=True))
    assert caught.value.status == 403
    assert caught.value.type == "anonymous_not_allowed"


async def test_anonymous_user_allowed_when_enabled() -> None:
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET, allow_anonymous=True), mint(is_anonymous=True))
    assert caller.user_id == USER_ID
    assert caller.is_anonymous
    assert caller.role == "authenticated"


@pytest.mark.parametrize("issuer", [None, ISSUER])
async def test_service_role_token_accepted(issuer: str | None) -> None:
    token = mint(role="service_role", aud=None, iss="supabase", sub=None, email=None, is_anonymous=None)
    caller = await verify(TokenVerifier(jwt_secret=JWT_SECRET, issuer=issuer), token)
    assert caller.is_service
    assert caller.role == "service_role"
    assert caller.user_id == "service_role"


async def test_service_role_with_other_secret_refused() -> None:
    token = mint("another-secret-that-is-at-least-32-characters!", role="service_role", aud=None, iss="supabase")
    await refused(TokenVerifier(jwt_secret=JWT_SECRET), f"Bearer {token}")


# -- ES256 / RS256 against a JWKS on loopback ---------------------------------------------------------


async def test_es256_and_rs256_verified_and_keys_cached(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = jwks.verifier()
    caller = await verify(verifier, es256(ec_key))
    assert caller == Caller(user_id=USER_ID, role="authenticated", claims=caller.claims)
    assert (await verify(verifier, rs256(rsa_key))).user_id == USER_ID
    assert (await verify(verifier, es256(ec_key, sub="another-user"))).user_id == "another-user"
    assert jwks.fetches == 1
    assert verifier.jwks_fetches == 1
    assert jwks.paths == [JWKS_PATH]


async def test_jwks_and_secret_together(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks.verifier(jwt_secret=JWT_SECRET, issuer=ISSUER)
    assert (await verify(verifier, mint(iss=ISSUER))).user_id == USER_ID
    assert jwks.fetches == 0  # HS256 needs no keys
    assert (await verify(verifier, es256(ec_key, iss=ISSUER))).user_id == USER_ID
    await refused(verifier, f"Bearer {es256(ec_key, iss='https://other.supabase.co/auth/v1')}")
    assert jwks.fetches == 1


async def test_concurrent_first_use_fetches_once(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks.verifier()
    async with asyncio.timeout(5):
        callers = await asyncio.gather(*(verifier.verify(f"Bearer {es256(ec_key)}") for _ in range(20)))
    assert {c.user_id for c in callers} == {USER_ID}
    assert jwks.fetches == 1


async def test_rotation_unknown_kid_refetches(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """Real clock, floor 0: a token signed with a key added after the first fetch is accepted."""
    verifier = jwks.verifier(jwks_refresh_floor=0.0)
    await verify(verifier, es256(ec_key))
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks.keys.append(ec_jwk(new_key, "ec-key-2"))
    assert (await verify(verifier, es256(new_key, kid="ec-key-2"))).user_id == USER_ID
    assert jwks.fetches == 2
    assert (await verify(verifier, es256(ec_key))).user_id == USER_ID  # the old key still in the set
    assert jwks.fetches == 2


async def test_rotation_respects_refresh_floor(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    verifier = jwks.verifier(jwks_refresh_floor=30.0)
    await verify(verifier, es256(ec_key))
    assert jwks.fetches == 1
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks.keys.append(ec_jwk(new_key, "ec-key-2"))
    token = es256(new_key, kid="ec-key-2")
    clock.advance(10)
    await refused(verifier, f"Bearer {token}")  # within the floor: no refetch, unknown key
    assert jwks.fetches == 1
    clock.advance(21)
    assert (await verify(verifier, token)).user_id == USER_ID
    assert jwks.fetches == 2


async def test_unknown_kid_burst_fetches_at_most_once_per_floor(
    jwks: JwksServer,
    ec_key: ec.EllipticCurvePrivateKey,
    other_ec_key: ec.EllipticCurvePrivateKey,
    clock: Clock,
) -> None:
    verifier = jwks.verifier(jwks_refresh_floor=30.0)
    await verify(verifier, es256(ec_key))
    assert jwks.fetches == 1

    async def burst() -> None:
        tokens = [es256(other_ec_key, kid=f"unknown-{i}") for i in range(25)]
        async with asyncio.timeout(5):
            results = await asyncio.gather(*(verifier.verify(f"Bearer {t}") for t in tokens), return_exceptions=True)
        for result in results:
            assert isinstance(result, AuthError), result
            assert result.status == 401
            assert result.type == "invalid_token"

    await burst()  # within the floor of the first fetch
    assert jwks.fetches == 1
    clock.advance(31)
    await burst()  # past the floor: one refetch for the whole burst
    assert jwks.fetches == 2
    clock.advance(5)
    await burst()
    assert jwks.fetches == 2
    assert verifier.jwks_fetches == 2


async def test_keys_refetched_after_ttl(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, clock: Clock) -> None:
    verifier = jwks.verifier(jwks_ttl=600.0)
    await verify(verifier, es256(ec_key))
    clock.advance(599)
    await verify(verifier, es256(ec_key))
    assert jwks.fetches == 1
    clock.advance(2)
    await verify(verifier, es256(ec_key))
    assert jwks.fetches == 2


async def test_jwks_down_at_first_use_is_503_then_recovers(ec_key: ec.EllipticCurvePrivateKey, clock: Clock) -> None:
    server = JwksServer([ec_jwk(ec_key, EC_KID)], port=free_port())
    verifier = TokenVerifier(jwks_url=server.url, jwks_refresh_floor=30.0)
    token = es256(ec_key)
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            await verify(verifier, token)
        assert not isinstance(caught.value, AuthError)
        assert caught.value.status == 503
        assert caught.value.type == "auth_unavailable"
        assert caught.value.retry_after
    assert verifier.jwks_fetches == 1  # the second call did not hammer the dead endpoint
    await server.start()
    try:
        clock.advance(0.5)  # still inside the short retry window
        with pytest.raises(ApiError) as caught:
            await verify(verifier, token)
        assert caught.value.status == 503
        assert server.fetches == 0
        clock.advance(0.6)  # a failed fetch is retried after ~1 s, well before the 30 s floor
        assert (await verify(verifier, token)).user_id == USER_ID
        assert server.fetches == 1
        assert verifier.jwks_fetches == 2
    finally:
        await server.aclose()


async def test_jwks_down_then_up_real_clock(ec_key: ec.EllipticCurvePrivateKey) -> None:
    server = JwksServer([ec_jwk(ec_key, EC_KID)], port=free_port())
    verifier = TokenVerifier(jwks_url=server.url, jwks_refresh_floor=0.05)
    with pytest.raises(ApiError) as caught:
        await verify(verifier, es256(ec_key))
    assert caught.value.status == 503
    await server.start()
    try:
        await asyncio.sleep(0.06)
        assert (await verify(verifier, es256(ec_key))).user_id == USER_ID
    finally:
        await server.aclose()


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, b'{"message":"boom"}'), (200, b"<html>not json</html>"), (503, b"")],
)
async def test_jwks_errors_are_503(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, status: int, body: bytes
) -> None:
    jwks.status, jwks.body = status, body
    with pytest.raises(ApiError) as caught:
        await verify(jwks.verifier(), es256(ec_key))
    assert caught.value.status == 503
    assert caught.value.type == "auth_unavailable"


async def test_jwks_wrong_path_404_is_503(ec_key: ec.EllipticCurvePrivateKey, jwks: JwksServer) -> None:
    with pytest.raises(ApiError) as caught:
        await verify(jwks.verifier(jwks_url=jwks.url.replace("jwks.json", "nope.json")), es256(ec_key))
    assert caught.value.status == 503


async def test_empty_jwks_means_asymmetric_tokens_refused(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """An HS256-only project publishes an empty key set: that is a 401, not an outage."""
    jwks.keys = []
    verifier = jwks.verifier(jwt_secret=JWT_SECRET)
    await refused(verifier, f"Bearer {es256(ec_key)}")
    assert (await verify(verifier, mint())).user_id == USER_ID


async def test_jwks_answering_non_object_json_is_503(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """BUG (auth.py, _fetch_jwks): a JWKS URL answering 200 with JSON that is not an object (`[]`, `null`
    — e.g. SUPABASE_JWKS_URL pointing at a PostgREST route) makes ``PyJWKSet.from_dict`` raise
    AttributeError, which escapes verify() (a 500 "internal" in the functions). Worse, ``_fetched_at``
    was already advanced and ``_fetch_failed`` stays False, so for the next 30 s (the floor) every valid
    token gets 401 "signed with an unknown key" instead of 503 auth_unavailable."""
    jwks.body = b"[]"
    verifier = jwks.verifier()
    outcomes: list[tuple[str, int | None, str | None]] = []
    for _ in range(2):
        try:
            await verify(verifier, es256(ec_key))
        except Exception as exc:
            outcomes.append((type(exc).__name__, getattr(exc, "status", None), getattr(exc, "type", None)))
    assert outcomes == [("ApiError", 503, "auth_unavailable")] * 2, (
        f"a non-object JWKS body should read as 'keys unavailable' (503) every time; got {outcomes}"
    )


# -- asymmetric refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["rsa", "ec"])
async def test_hs256_signed_with_public_key_refused_with_jwks_only(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, which: str
) -> None:
    key, kid = (rsa_key, RSA_KID) if which == "rsa" else (ec_key, EC_KID)
    token = hs256_with(public_pem(key), {"alg": "HS256", "typ": "JWT", "kid": kid}, payload_of())
    verifier = jwks.verifier()
    await refused(verifier, f"Bearer {token}")
    # the same token without kid, and with the JWK's JSON as the secret
    await refused(verifier, f"Bearer {hs256_with(public_pem(key), {'alg': 'HS256'}, payload_of())}")
    jwk_json = json.dumps(jwks.keys[0 if which == "ec" else 1]).encode()
    await refused(verifier, f"Bearer {hs256_with(jwk_json, {'alg': 'HS256', 'kid': kid}, payload_of())}")


@pytest.mark.parametrize("which", ["rsa", "ec"])
async def test_hs256_signed_with_public_key_refused_with_secret_and_jwks(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey, which: str
) -> None:
    key, kid = (rsa_key, RSA_KID) if which == "rsa" else (ec_key, EC_KID)
    token = hs256_with(public_pem(key), {"alg": "HS256", "typ": "JWT", "kid": kid}, payload_of())
    verifier = jwks.verifier(jwt_secret=JWT_SECRET)
    error = await refused(verifier, f"Bearer {token}")
    assert "signature" in error.message.lower()


async def test_es256_token_claiming_rs256_with_ec_kid_refused(
    jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    header = {"alg": "RS256", "typ": "JWT", "kid": EC_KID}
    signing_input = f"{segment(header)}.{payload_of()}"
    token = f"{signing_input}.{es256_raw_signature(ec_key, signing_input)}"
    error = await refused(jwks.verifier(), f"Bearer {token}")
    assert "algorithm" in error.message


async def test_rs256_token_claiming_es256_with_rsa_kid_refused(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    good = rs256(rsa_key)
    forged_header = segment({"alg": "ES256", "typ": "JWT", "kid": RSA_KID})
    _, payload, signature = good.split(".")
    await refused(jwks.verifier(), f"Bearer {forged_header}.{payload}.{signature}")


async def test_unknown_key_with_known_kid_refused(jwks: JwksServer, other_ec_key: ec.EllipticCurvePrivateKey) -> None:
    error = await refused(jwks.verifier(), f"Bearer {es256(other_ec_key, kid=EC_KID)}")
    assert "signature" in error.message.lower()


async def test_unknown_kid_refused(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    await refused(jwks.verifier(), f"Bearer {es256(ec_key, kid='not-published')}")


async def test_es256_without_kid_refused(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks.verifier()
    await refused(verifier, f"Bearer {es256(ec_key, kid=None)}")
    assert jwks.fetches == 0


async def test_asymmetric_token_refused_without_jwks(ec_key: ec.EllipticCurvePrivateKey) -> None:
    await refused(TokenVerifier(jwt_secret=JWT_SECRET), f"Bearer {es256(ec_key)}")


async def test_expired_es256_token(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = int(time.time())
    await refused(jwks.verifier(), f"Bearer {es256(ec_key, iat=now - 7200, exp=now - 3600)}", "token_expired")


async def test_es256_claims_checked_like_hs256(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    verifier = jwks.verifier(issuer=ISSUER)
    for claims in ({"aud": "other"}, {"sub": None}, {"role": "anon"}, {"exp": None}, {"iss": "supabase"}):
        await refused(verifier, f"Bearer {es256(ec_key, **{'iss': ISSUER, **claims})}")
    with pytest.raises(ApiError) as caught:
        await verify(verifier, es256(ec_key, iss=ISSUER, is_anonymous=True))
    assert caught.value.status == 403
    assert jwks.fetches == 1


async def test_verifier_with_shared_http_client(jwks: JwksServer, ec_key: ec.EllipticCurvePrivateKey) -> None:
    async with httpx.AsyncClient(trust_env=False, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)) as http:
        verifier = TokenVerifier(jwks_url=jwks.url, http_client=http)
        assert (await verify(verifier, es256(ec_key))).user_id == USER_ID
        assert not http.is_closed  # the verifier does not close a client it was given
    assert jwks.fetches == 1


async def test_no_credentials_challenge_carries_no_error_code() -> None:
    """RFC 6750 §3.1: a request without credentials gets a bare challenge; a bad token gets invalid_token."""
    from openrouter_functions.auth import AuthError, TokenVerifier

    verifier = TokenVerifier(jwt_secret=JWT_SECRET)
    with pytest.raises(AuthError) as missing:
        await verifier.verify(None)
    assert "error=" not in missing.value.headers["WWW-Authenticate"]
    with pytest.raises(AuthError) as bad:
        await verifier.verify("Bearer nonsense")
    assert bad.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_verified_tokens_are_reused_until_ttl(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """A browser sends one token for many calls: its signature is checked once per VERIFIED_TTL."""
    import jwt as pyjwt

    from openrouter_functions.auth import VERIFIED_TTL, TokenVerifier

    calls = []
    real_decode = pyjwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(pyjwt, "decode", counting_decode)
    verifier = TokenVerifier(jwt_secret=JWT_SECRET)
    token = mint()
    first = await verify(verifier, token)
    assert await verify(verifier, token) == first
    assert len(calls) == 1
    other = mint(sub="0b7f3a52-8f43-4a0e-9a3c-2a4cbb7d5e01")
    assert (await verify(verifier, other)).user_id != first.user_id
    assert len(calls) == 2
    clock.advance(VERIFIED_TTL + 1)
    await verify(verifier, token)
    assert len(calls) == 3
    with pytest.raises(AuthError):  # a bad token is never served from the cache
        await verify(verifier, token[:-2] + "xx")

"""Forged, confused and stale access tokens: each is a 401 in the envelope with ``WWW-Authenticate``,
nothing reaches upstream, nothing is fetched from where a token points, and real users go on being served."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hostile_support import HI, Hostile

from helpers import mint
from jwks_support import RSA_KID, b64url, hs256_with, public_pem, rs256, segment

Forge = Callable[[Hostile, rsa.RSAPrivateKey], str]
NOW = int(time.time())


def _claims(attack: Hostile, **claims: object) -> str:
    """A payload segment of a token that would be valid for this project."""
    return mint(iss=attack.issuer, **claims).split(".")[1]


FORGERIES: dict[str, tuple[Forge, str]] = {
    "alg none": (lambda a, k: f"{segment({'alg': 'none', 'typ': 'JWT'})}.{_claims(a)}.", "invalid_token"),
    "alg None, signature kept": (
        lambda a, k: f"{segment({'alg': 'None', 'typ': 'JWT'})}.{_claims(a)}.{b64url(b'sig')}",
        "invalid_token",
    ),
    "HS256 signed with the RSA public key (confusion)": (
        lambda a, k: hs256_with(public_pem(k), {"alg": "HS256", "typ": "JWT", "kid": RSA_KID}, _claims(a)),
        "invalid_token",
    ),
    "HS256 with a guessed secret": (
        lambda a, k: mint("your-super-secret-jwt-token-with-at-least-32-characters", iss=a.issuer),
        "invalid_token",
    ),
    "RS256 by another key under the real kid": (
        lambda a, k: rs256(rsa.generate_private_key(public_exponent=65537, key_size=2048), iss=a.issuer),
        "invalid_token",
    ),
    "RS256 with an unknown kid": (lambda a, k: rs256(k, kid="nobody", iss=a.issuer), "invalid_token"),
    "kid path traversal": (lambda a, k: rs256(k, kid="../../../../etc/passwd", iss=a.issuer), "invalid_token"),
    "jku pointing at the canary": (
        lambda a, k: mint(k, algorithm="RS256", headers={"kid": "x", "jku": a.canary.url + "/jwks"}, iss=a.issuer),  # type: ignore[arg-type]
        "invalid_token",
    ),
    "x5u pointing at the canary": (
        lambda a, k: mint(k, algorithm="RS256", headers={"kid": "x", "x5u": a.canary.url + "/cert"}, iss=a.issuer),  # type: ignore[arg-type]
        "invalid_token",
    ),
    "expired": (lambda a, k: a.token(exp=NOW - 60, iat=NOW - 3660), "token_expired"),
    "expired RS256": (lambda a, k: rs256(k, exp=NOW - 60, iat=NOW - 3660, iss=a.issuer), "token_expired"),
    "wrong audience": (lambda a, k: a.token(aud="anon"), "invalid_token"),
    "no audience": (lambda a, k: a.token(aud=None), "invalid_token"),
    "wrong issuer": (lambda a, k: mint(iss="https://evil.supabase.co/auth/v1"), "invalid_token"),
    "no issuer": (lambda a, k: mint(iss=None), "invalid_token"),
    "anon role key as a user token": (lambda a, k: a.token(role="anon", sub=None), "invalid_token"),
    "no subject": (lambda a, k: a.token(sub=None), "invalid_token"),
    "not yet valid": (lambda a, k: a.token(nbf=NOW + 3600), "invalid_token"),
    "garbage": (lambda a, k: "not.a.token", "invalid_token"),
    "header only": (lambda a, k: segment({"alg": "HS256"}), "invalid_token"),
    "32 KB token": (lambda a, k: "a." + "b" * 32_000 + ".c", "invalid_token"),
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_forged_or_stale_token_is_a_401(attack: Hostile, rsa_key: rsa.RSAPrivateKey, name: str) -> None:
    forge, kind = FORGERIES[name]
    response = attack.call("/chat", HI, token=forge(attack, rsa_key))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == kind
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert attack.chat_requests() == []
    assert attack.canary.connections == 0
    assert attack.bystander_served()


@pytest.mark.parametrize("header", ["", "Bearer", "Basic dXNlcjpwYXNz", "bearer  x y", "Bearer a,Bearer b"])
def test_a_missing_or_malformed_authorization_header_is_a_401(attack: Hostile, header: str) -> None:
    response = attack.http.post(attack.url + "/chat", json=HI, headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.json()["error"]["type"] in {"missing_token", "invalid_token"}
    assert attack.chat_requests() == []


def test_the_real_keys_still_work(attack: Hostile, rsa_key: rsa.RSAPrivateKey) -> None:
    # The control: an RS256 token from the project's JWKS and an HS256 one from its secret are accepted.
    assert attack.call("/chat", HI, token=rs256(rsa_key, iss=attack.issuer)).status_code == 200
    assert attack.call("/chat", HI, token=attack.token()).status_code == 200

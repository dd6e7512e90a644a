"""Who is calling: Supabase access tokens verified locally (HS256 secret or the project's JWKS).

PyJWT is imported on first use, so ``health`` never pays for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from .envelope import ApiError

if TYPE_CHECKING:
    from jwt import PyJWK

__all__ = ["AuthError", "Caller", "TokenVerifier", "bearer_token"]

ASYMMETRIC_ALGORITHMS = ("ES256", "RS256")
VERIFIED_CACHE_SIZE = 4096
VERIFIED_TTL = 300.0


class AuthError(ApiError):
    """401 with ``WWW-Authenticate: Bearer``; raised before any upstream call."""

    def __init__(self, type: str, message: str, *, error: str | None = "invalid_token") -> None:
        challenge = f'Bearer error="{error}"' if error else 'Bearer realm="openrouter-functions"'
        super().__init__(401, type, message, headers={"WWW-Authenticate": challenge})


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified caller: a Supabase user, or a trusted server holding the service-role key."""

    user_id: str
    role: str
    is_anonymous: bool = False
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_service(self) -> bool:
        return self.role == "service_role"


def bearer_token(authorization: str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` header, or :class:`AuthError`."""
    if not authorization:
        # RFC 6750 §3.1: no error code when the request carried no credentials at all.
        raise AuthError("missing_token", "Sign in first: send `Authorization: Bearer <access token>`.", error=None)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(
            "missing_token", "The Authorization header must be `Bearer <access token>`.", error="invalid_request"
        )
    return token


class TokenVerifier:
    """Verifies ``Authorization: Bearer <token>`` headers against the configured keys."""

    def __init__(
        self,
        *,
        jwt_secret: str | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        allow_anonymous: bool = False,
        jwks_ttl: float = 600.0,
        jwks_refresh_floor: float = 30.0,
        http_client: httpx.AsyncClient | None = None,
        leeway: float = 30.0,
    ) -> None:
        self._secret = jwt_secret
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._allow_anonymous = allow_anonymous
        self._jwks_ttl = jwks_ttl
        self._refresh_floor = jwks_refresh_floor
        self._http = http_client
        self._leeway = leeway
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -1e18
        self._fetch_failed = False
        self._lock = asyncio.Lock()
        self.jwks_fetches = 0
        # Verified tokens -> (caller, reuse until): a signed-in browser sends the same token for every
        # call until it refreshes, and a signature check costs ~0.2 ms on our machines.
        self._verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    async def verify(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header, or :class:`AuthError`."""
        token = bearer_token(authorization)
        cached = self._verified.get(token)
        if cached is not None:
            caller, until = cached
            if time.monotonic() < until:
                return caller
            del self._verified[token]

        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "The access token is malformed.") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm == "HS256":
            if not self._secret:
                raise AuthError("invalid_token", "This server does not accept HS256 tokens.")
            key = self._secret
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            jwk = await self._key_for(header.get("kid"))
            if jwk.algorithm_name != algorithm:
                raise AuthError("invalid_token", "The token's algorithm does not match its signing key.")
            key = jwk.key
        else:
            raise AuthError("invalid_token", f"Tokens signed with {algorithm!r} are not accepted.")

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "The access token has expired; refresh the session.") from None
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"The access token is invalid ({exc}).") from None
        caller = self._caller(claims)
        # Reuse until the token expires (exp is required, so it is a number), at most VERIFIED_TTL.
        remaining = float(claims["exp"]) + self._leeway - time.time()
        self._verified[token] = (caller, time.monotonic() + min(remaining, VERIFIED_TTL))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return caller

    def _caller(self, claims: dict[str, Any]) -> Caller:
        role = claims.get("role")
        if role == "service_role":
            # The project's service key: a trusted server calling on a user's behalf (or its own).
            return Caller(user_id=str(claims.get("sub") or "service_role"), role="service_role", claims=claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if "authenticated" not in audiences:
            raise AuthError("invalid_token", "The token is not a signed-in user's access token (aud).")
        if self._issuer and claims.get("iss") != self._issuer:
            raise AuthError("invalid_token", "The token was issued by another project (iss).")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthError("invalid_token", "The token names no user (sub).")
        if role != "authenticated":
            raise AuthError("invalid_token", "Only signed-in users may call this function (role).")
        anonymous = bool(claims.get("is_anonymous"))
        if anonymous and not self._allow_anonymous:
            raise ApiError(403, "anonymous_not_allowed", "Anonymous users may not call this function; sign in.")
        return Caller(user_id=subject, role="authenticated", is_anonymous=anonymous, claims=claims)

    async def _key_for(self, kid: Any) -> PyJWK:
        if self._jwks_url is None:
            raise AuthError("invalid_token", "This server does not accept asymmetric tokens (no JWKS configured).")
        if not isinstance(kid, str):
            raise AuthError("invalid_token", "The token has no key id (kid).")
        now = time.monotonic()
        stale = now - self._fetched_at > self._jwks_ttl
        if kid not in self._keys or stale:
            async with self._lock:
                now = time.monotonic()
                # An unknown kid triggers a refetch (keys rotate), but never more often than the floor.
                if (kid not in self._keys and now - self._fetched_at >= self._refresh_floor) or (
                    now - self._fetched_at > self._jwks_ttl
                ):
                    await self._fetch_jwks()
        jwk = self._keys.get(kid)
        if jwk is None and self._fetch_failed:
            raise ApiError(
                503, "auth_unavailable", "Could not load the project's signing keys; try again.", retry_after=5
            )
        if jwk is None:
            raise AuthError("invalid_token", "The token was signed with an unknown key.")
        return jwk

    async def _fetch_jwks(self) -> None:
        from jwt import PyJWKSet
        from jwt.exceptions import PyJWKSetError

        assert self._jwks_url is not None
        self._fetched_at = time.monotonic()
        self.jwks_fetches += 1
        client = self._http or httpx.AsyncClient()
        try:
            response = await client.get(self._jwks_url, timeout=5.0)
            response.raise_for_status()
            document = response.json()
            if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
                raise ValueError("not a JWK Set")
            if not document["keys"]:
                # An empty set is what HS256-only projects publish.
                self._keys, self._fetch_failed = {}, False
                return
            keys = PyJWKSet.from_dict(document)
        except (httpx.HTTPError, ValueError, PyJWKSetError):
            # Keep serving with the keys we had; with none, callers get 503 until a fetch works. A failed
            # fetch may be retried sooner than the refresh floor.
            self._fetch_failed = True
            self._fetched_at -= max(0.0, self._refresh_floor - 1.0)
            return
        finally:
            if self._http is None:
                await client.aclose()
        self._keys = {k.key_id: k for k in keys.keys if k.key_id}
        self._fetch_failed = False

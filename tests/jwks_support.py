"""Keys, hand-built tokens and a tiny JWKS endpoint on 127.0.0.1, shared by the TokenVerifier unit tests
(tests/test_auth.py) and the in-process function tests (tests/functions/test_auth_functions.py).
Pure helpers only: the fixtures that use them live in the test modules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import ssl
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from helpers import free_port as free_port  # re-exported: the auth tests import it from here
from helpers import mint
from openrouter_functions.auth import TokenVerifier

JWKS_PATH = "/auth/v1/.well-known/jwks.json"
EC_KID = "ec-key-1"
RSA_KID = "rsa-key-1"


# -- token pieces ---------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def payload_of(**claims: Any) -> str:
    """The payload segment of a Supabase-shaped token (same claims as ``mint``)."""
    return mint(**claims).split(".")[1]


def hs256_with(secret: bytes, header: dict[str, Any], payload: str) -> str:
    """An HS256 token signed by hand (PyJWT itself refuses PEM bytes as an HMAC secret)."""
    signing_input = f"{segment(header)}.{payload}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def es256(key: ec.EllipticCurvePrivateKey, kid: str | None = EC_KID, **claims: Any) -> str:
    """A Supabase-shaped ES256 token; ``kid=None`` leaves the kid out of the header."""
    return mint(key, algorithm="ES256", headers={"kid": kid} if kid else None, **claims)  # type: ignore[arg-type]


def rs256(key: rsa.RSAPrivateKey, kid: str = RSA_KID, **claims: Any) -> str:
    return mint(key, algorithm="RS256", headers={"kid": kid}, **claims)  # type: ignore[arg-type]


# -- keys -----------------------------------------------------------------------------------------------


def public_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


# -- a JWKS endpoint --------------------------------------------------------------------------------------


class JwksServer:
    """A Supabase-like JWKS endpoint on 127.0.0.1 (asyncio streams, one request per connection).

    ``fetches`` counts requests and ``paths`` records them; ``keys`` may be changed between requests
    (rotation); ``body``/``status`` override the answer; ``stop()`` and ``start()`` take it down and bring
    it back on the same port. ``aclose()`` stops it and closes the client ``verifier()`` hands out."""

    def __init__(self, keys: list[dict[str, Any]], port: int = 0, path: str = JWKS_PATH) -> None:
        self.keys = list(keys)
        self.port = port
        self.path = path
        self.status = 200
        self.body: bytes | None = None
        self.fetches = 0
        self.paths: list[str] = []
        self._server: asyncio.Server | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def supabase_url(self) -> str:
        """The project URL a function is configured with (``SUPABASE_URL``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` Supabase Auth puts in its tokens for :attr:`supabase_url`."""
        return f"{self.supabase_url}/auth/v1"

    @property
    def url(self) -> str:
        return f"{self.supabase_url}{self.path}"

    @property
    def http(self) -> httpx.AsyncClient:
        """Plain-HTTP client for verifiers under test: loading the CA bundle costs ~40 ms per client."""
        if self._http is None:
            self._http = httpx.AsyncClient(trust_env=False, verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        return self._http

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        kwargs.setdefault("jwks_url", self.url)
        kwargs.setdefault("http_client", self.http)
        return TokenVerifier(**kwargs)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def aclose(self) -> None:
        await self.stop()
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(2):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                parts = request_line.decode("latin-1").split()
                path = parts[1] if len(parts) > 1 else ""
                self.fetches += 1
                self.paths.append(path)
                if path != self.path:
                    status, body = 404, b'{"message":"no Route matched with those values"}'
                else:
                    status = self.status
                    body = self.body if self.body is not None else json.dumps({"keys": self.keys}).encode()
                head = (
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

"""The HTTP transport under the pooled client, chosen by measurement (bench/transport.py).

httpx's own pool (httpcore) scans every pooled connection on each request start and end; at 16
requests in flight it measured about 5x slower than aiohttp on our 2-core machines, 22x at 64, and its
CPU per call stalls every other request on the event loop. So the default is httpx-aiohttp's
transport; ``OPENROUTER_HTTP_TRANSPORT=httpx`` switches back.

httpx-aiohttp maps every aiohttp connection error to ``httpx.ConnectTimeout``; a refused connection or a
dropped one is not a timeout, so the errors are re-mapped here before the retry rule sees them. Invalid
HTTP (a garbled status line, headers or body framing) it does not map at all; here it becomes
``httpx.RemoteProtocolError``, as httpx's own transport calls it. The aiohttp error's text is never
passed on: it quotes our request headers, our key among them.

Neither transport reads a CA bundle until it opens its first TLS connection
(:class:`DeferredTrustContext`): reading certifi's took ~45 ms and ~1.7 MB at every cold start, also
for an ``http://`` base URL that never uses it. Nor does aiohttp's import read one (:func:`_import_aiohttp`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DeferredTrustContext",
    "Sender",
    "default_transport",
    "max_connections",
    "pool_limits",
]

DEFAULT_MAX_CONNECTIONS = 1000


def max_connections() -> int:
    """Upstream connections one process may open (``OPENROUTER_MAX_CONNECTIONS``, default 1000).

    High on purpose: a stream holds its connection for its whole life, and a call that waits for a free
    one waits silently (1,000 streams over 200 connections waited up to 41 s for a first byte). The
    functions refuse calls beyond this at once instead (``MAX_IN_FLIGHT``, capacity.py).
    """
    raw = os.environ.get("OPENROUTER_MAX_CONNECTIONS", "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"OPENROUTER_MAX_CONNECTIONS must be a positive integer, got {raw!r}")
    return value


def pool_limits() -> httpx.Limits:
    """The pooled client's limits: up to :func:`max_connections`, some of them kept alive between calls."""
    limit = max_connections()
    return httpx.Limits(max_connections=limit, max_keepalive_connections=min(limit, 64), keepalive_expiry=60.0)


class DeferredTrustContext(ssl.SSLContext):
    """The SSL context httpx builds by default (``httpx.create_ssl_context()``: certificates and host names
    verified, TLS 1.2 or later), except that the CA bundle is read when the first TLS connection starts.

    The bundle is the one httpx would read, chosen when the context is made: ``SSL_CERT_FILE``, else
    ``SSL_CERT_DIR``, else certifi's. Every TLS connection starts in :meth:`wrap_bio` (asyncio, uvloop,
    anyio) or :meth:`wrap_socket`, which load it first; a path that skipped them would find no trusted
    CA and fail the handshake, never connect unverified.
    """

    _cafile: str | None
    _capath: str | None
    _trust_lock: threading.Lock

    def __new__(cls) -> DeferredTrustContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        # What ssl.create_default_context() sets besides the CA bundle (Python 3.13 added the X.509 flags).
        self.verify_mode = ssl.CERT_REQUIRED
        self.check_hostname = True
        if sys.version_info >= (3, 13):  # pragma: no cover - the version we run is 3.11
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        keylog = os.environ.get("SSLKEYLOGFILE")
        if keylog and not sys.flags.ignore_environment:
            self.keylog_filename = keylog
        # The bundle httpx.create_ssl_context() would read (trust_env on, as httpx-aiohttp passes it).
        cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
        if cafile:
            self._cafile, self._capath = cafile, None
        elif capath:
            self._cafile, self._capath = None, capath
        else:
            import certifi

            self._cafile, self._capath = certifi.where(), None
        self._trust_lock = threading.Lock()

    @property
    def trust_loaded(self) -> bool:
        """Whether the CA bundle has been read."""
        return self._cafile is None and self._capath is None

    def load_trust(self) -> None:
        """Read the CA bundle now, if not yet done (idempotent, thread-safe)."""
        if self.trust_loaded:
            return
        with self._trust_lock:
            if not self.trust_loaded:
                self.load_verify_locations(self._cafile, self._capath)
                self._cafile = self._capath = None

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        self.load_trust()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.load_trust()
        return super().wrap_socket(*args, **kwargs)


@contextlib.contextmanager
def _no_default_ca_on_this_thread() -> Iterator[None]:
    """While inside, ``SSLContext.set_default_verify_paths()`` does nothing when called on this thread.

    That is the call through which ``ssl.create_default_context()`` (via ``load_default_certs``) and a bare
    ``set_default_verify_paths()`` read the system's CA bundle (SSL_CERT_FILE / SSL_CERT_DIR or OpenSSL's
    defaults). A context made here on this thread trusts no CA at all, not even lazily from a directory:
    verifying with it fails every handshake, never passes one. On other threads the original method runs,
    so a context they make meanwhile is as always, and nothing outside the process sees it (unlike
    pointing the SSL_CERT_* variables elsewhere: os.environ is the process's, a concurrent thread's
    context and a child process spawned meanwhile would see them). Restored on the way out, exceptions
    included.
    """
    cls, name, thread = ssl.SSLContext, "set_default_verify_paths", threading.get_ident()
    own = cls.__dict__.get(name)  # normally None: inherited from _ssl._SSLContext
    original = getattr(cls, name)

    def set_default_verify_paths(self: ssl.SSLContext) -> None:
        if threading.get_ident() != thread:
            original(self)

    setattr(cls, name, set_default_verify_paths)
    try:
        yield
    finally:
        if own is None:
            delattr(cls, name)
        else:  # pragma: no cover - someone else's override, put back as found
            setattr(cls, name, own)


_aiohttp_imported = False
_aiohttp_import_lock = threading.Lock()


def _import_aiohttp() -> None:
    """Import aiohttp and httpx-aiohttp. Every use of either in our code calls this first.

    At import, ``aiohttp.connector`` builds two SSL contexts (verified: ``ssl.create_default_context()``;
    unverified: ``set_default_verify_paths()``), each reading the system CA bundle: ~45 ms of CPU, 0.47 G
    instructions (16-19 % of a cold start's, bench/cold_start.py --instructions). Neither is ever used:
    aiohttp takes them only when neither the connector nor the request was given a context, while
    httpx-aiohttp always gives its ``TCPConnector`` ours (:class:`DeferredTrustContext`) and never a
    per-request ``ssl``. A proxy would change nothing (its tunnel and its own TLS take the request's, else
    the connector's context), and there is none: we set none and httpx-aiohttp's session ignores the
    proxy variables (``trust_env`` off). So the first import runs with :func:`_no_default_ca_on_this_thread`:
    the two contexts hold no CA, and if anything ever used the verifying one (another library's own
    ``aiohttp.ClientSession()``) its TLS connections would fail verification, never go unverified. Once
    aiohttp is imported (also when something else imported it first) this does nothing. The first call is
    the first transport's creation, i.e. the first upstream call, on the event loop's thread; the lock
    makes a concurrent first call from another thread wait.
    """
    global _aiohttp_imported
    if _aiohttp_imported:
        return
    with _aiohttp_import_lock:
        if not _aiohttp_imported:
            if "aiohttp.connector" in sys.modules:  # imported before us: its contexts are made already
                importlib.import_module("httpx_aiohttp")
            else:
                with _no_default_ca_on_this_thread():
                    importlib.import_module("httpx_aiohttp")  # imports aiohttp
            _aiohttp_imported = True


def _invalid_http(exc: BaseException) -> bool:
    """True for aiohttp's ways of saying that upstream did not speak valid HTTP."""
    _import_aiohttp()
    import aiohttp
    from aiohttp import http_exceptions

    return isinstance(
        exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError | http_exceptions.HttpProcessingError
    )


def _protocol_error(cause: BaseException) -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError(f"invalid HTTP from upstream ({cause.__class__.__name__})")


def _remap(exc: httpx.HTTPError) -> httpx.HTTPError:
    """The httpx error that says what actually happened to the aiohttp connection."""
    _import_aiohttp()
    import aiohttp

    cause = exc.__cause__
    if isinstance(exc, httpx.ReadError) and isinstance(cause, aiohttp.ClientPayloadError):
        return _protocol_error(cause)  # a body cut short or badly framed: httpx's own transport says so too
    if not isinstance(exc, httpx.ConnectTimeout) or not isinstance(cause, aiohttp.ClientConnectionError):
        return exc
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx.RemoteProtocolError(str(cause) or "server disconnected")
    return httpx.ReadError(str(cause) or cause.__class__.__name__)


class _RemappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.HTTPError as exc:
            raise _remap(exc) from exc.__cause__
        except Exception as exc:
            if _invalid_http(exc):
                raise _protocol_error(exc) from None  # its text quotes our request headers
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _AiohttpTransport(httpx.AsyncBaseTransport):
    """httpx-aiohttp's transport with truthful connection errors."""

    def __init__(self) -> None:
        _import_aiohttp()
        from httpx_aiohttp import AiohttpTransport

        self._inner = AiohttpTransport(verify=DeferredTrustContext(), limits=pool_limits())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.HTTPError as exc:
            raise _remap(exc) from exc.__cause__
        except Exception as exc:
            if _invalid_http(exc):
                raise _protocol_error(exc) from None  # its text quotes our request headers
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _RemappedStream(response.stream)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def default_transport() -> httpx.AsyncBaseTransport:
    """The transport for a new pooled client (limits are set here: httpx ignores them with a custom one)."""
    if os.environ.get("OPENROUTER_HTTP_TRANSPORT", "aiohttp").lower() == "httpx":
        return httpx.AsyncHTTPTransport(verify=DeferredTrustContext(), limits=pool_limits())
    return _AiohttpTransport()


class Sender:
    """POSTs to one URL on one client, the request built from parts made once, straight on the transport.

    ``client.build_request`` + ``client.send`` redo per call what never changes for us (parse the URL,
    merge and normalise the headers, the timeout) and run machinery we never use (auth flow, redirects,
    event hooks, the cookie jar, which builds a ``urllib`` request per answer); measured at ~40 µs of
    build_request alone against ~5 µs here. A client that has any of that set up (auth, event hooks,
    default params or cookies) goes the general way, as before. Proxies and mounts are honoured: the
    transport is the one the client would pick for the URL.
    """

    __slots__ = ("_extensions", "_general", "_headers", "_transport", "_url", "client", "read_bound")

    def __init__(self, client: httpx.AsyncClient, url: str, headers: Mapping[str, str]) -> None:
        self.client = client
        self._url = httpx.URL(url)
        self._general = bool(
            client.auth is not None or any(client.event_hooks.values()) or client.params or client.cookies
        )
        self._transport = client._transport_for_url(self._url)
        self._extensions = {"timeout": client.timeout.as_dict()}
        # Seconds within which one read of an answer's body ends, data or ReadTimeout: the client's read
        # timeout, on a transport known to enforce it per read (None: no such bound is known).
        known = isinstance(self._transport, _AiohttpTransport | httpx.AsyncHTTPTransport) or type(
            self._transport
        ).__module__.startswith("httpx_aiohttp")
        self.read_bound: float | None = client.timeout.read if known else None
        merged = httpx.Headers(client.headers)
        merged.update(headers)
        # Host first, as httpx puts it; Content-Length is added per body.
        self._headers = httpx.Headers([(b"Host", self._url.netloc), *merged.raw])

    def request(self, body: bytes) -> httpx.Request:
        """The POST of ``body`` (reusable: sending it again sends the same bytes)."""
        if self._general:
            return self.client.build_request("POST", self._url, content=body, headers=self._headers)
        request = httpx.Request(
            "POST", self._url, headers=self._headers, extensions=self._extensions, stream=httpx.ByteStream(body)
        )
        request.headers["Content-Length"] = str(len(body))
        request.read()
        return request

    async def send(self, request: httpx.Request) -> httpx.Response:
        """The answer to ``request``, its body not yet read."""
        if self._general:
            return await self.client.send(request, stream=True)
        if self.client.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

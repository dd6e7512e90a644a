"""HTTP/1.1 on asyncio streams, just enough of it: read one request, frame one response or event stream.

Hand-written rather than a framework so the per-request cost stays small and the socket is fully
under control (resets, cuts, hangs are faults the fake must be able to produce).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = [
    "MAX_HEAD",
    "REASONS",
    "BadRequestError",
    "HttpRequest",
    "chunk",
    "dumps",
    "error_body",
    "read_request",
    "response",
    "send_event_stream",
]

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}


class BadRequestError(Exception):
    """The bytes on the connection are not an HTTP/1.x request we accept (answered 400, then closed)."""


@dataclass
class HttpRequest:
    """One parsed request: method, target, version, lower-cased headers, body."""

    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in conn
        return "close" not in conn


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes, as OpenRouter sends them."""
    return json.dumps(obj, separators=(",", ":")).encode()


def error_body(code: int | str, message: str, metadata: Any = None, *, user_id: bool = True) -> bytes:
    """OpenRouter's error envelope ``{"error": {code, message, metadata?}, "user_id"?}``."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    envelope: dict[str, Any] = {"error": error}
    if user_id:
        envelope["user_id"] = "user_fake"
    return dumps(envelope)


def response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: Iterable[tuple[str, str]] = (),
    close: bool = False,
    content_length: int | None = None,
) -> bytes:
    """A whole response; ``content_length`` may claim more than ``body`` holds (the ``cut`` fault)."""
    length = len(body) if content_length is None else content_length
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    ]
    head.extend(f"{name}: {value}\r\n" for name, value in headers)
    if close:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1", "replace") + body


def chunk(data: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


async def send_event_stream(
    writer: asyncio.StreamWriter,
    generation_id: str,
    events: list[tuple[float, bytes]],
    *,
    close: bool,
    terminate: bool = True,
) -> None:
    """Write the SSE head and chunk-encoded events, sleeping before an event whose delay > 0.

    ``terminate=False`` leaves out the final zero-length chunk (a stream cut short).
    """
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        f"Transfer-Encoding: chunked\r\nX-Generation-Id: {generation_id}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    buffer = [head.encode()]
    for delay, data in events:
        if delay > 0:
            writer.write(b"".join(buffer))
            buffer.clear()
            await writer.drain()
            await asyncio.sleep(delay)
        buffer.append(chunk(data))
    if terminate:
        buffer.append(b"0\r\n\r\n")
    writer.write(b"".join(buffer))
    await writer.drain()


async def read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> HttpRequest | None:
    """The next request on the connection, or ``None`` when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequestError("Incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequestError("Request head too large") from None
    lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise BadRequestError("Malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequestError("Unsupported HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequestError("Malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit():
            raise BadRequestError("Invalid Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise BadRequestError("Request body too large")
        body = await reader.readexactly(length) if length else b""
    return HttpRequest(method.upper(), target, version, headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        try:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
        except (ValueError, asyncio.LimitOverrunError):
            raise BadRequestError("Malformed chunked body") from None
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise BadRequestError("Request body too large")
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequestError("Malformed chunked body")

"""A fake OpenRouter HTTP server on loopback, for tests, benchmarks and offline development.

Standard library only (``asyncio.start_server``): a minimal HTTP/1.1 server with keep-alive, so the
per-request server cost stays small and the socket is fully under control (resets, cuts, hangs).

It speaks OpenRouter's wire format (see ``/work/shared/reference/openrouter-api.md``):

* ``POST /api/v1/chat/completions`` - JSON or SSE (``stream: true``) completions that echo the last
  user message, with OpenRouter's ``usage`` (incl. ``cost``), ``provider`` and ``X-Generation-Id``.
* ``GET /api/v1/models`` (no auth) and ``GET /api/v1/key`` (auth).
* The same paths without the ``/api/v1`` prefix.
* Control endpoints (no auth, not recorded): ``POST /_fake/script``, ``GET /_fake/requests``,
  ``POST /_fake/reset``.

Behaviour of chat requests is scripted with a FIFO queue of steps (see :meth:`FakeOpenRouter.script`);
each chat request consumes one step, an empty queue means the default echo reply.

Fault kinds (``{"fault": kind, ...}``; any step may carry ``"repeat": k``, ``"content"``, ``"model"``
and ``"chunk_delay"``):

``reply``          normal reply; optional ``content``, ``usage`` (override), ``finish_reason``, ``model``.
``status``         HTTP ``status`` with the error envelope (+ ``headers``, ``message``, ``metadata``).
``error_200``      HTTP 200 whose body is only ``{"error": {...}}`` (also when streaming was asked).
``finish_error``   HTTP 200 JSON completion, ``finish_reason: "error"``, ``choices[0].error``, partial content.
``empty_choices``  HTTP 200 completion with ``"choices": []`` (stream: only the usage chunk + ``[DONE]``).
``malformed``      HTTP 200 ``application/json`` with truncated JSON.
``midstream_error`` stream ``after`` words then an error chunk (``[DONE]`` only if ``done``).
``cut``            stream ``after`` words then close the socket without the final 0-chunk
                   (non-stream: Content-Length larger than the bytes sent, then close).
``slow``           sleep ``delay`` seconds then answer normally.
``hang``           never answer; returns when the client disconnects or the server stops.
``reset``          abort the connection with a TCP RST, no response.
``keepalive``      stream starts with ``count`` ``: OPENROUTER PROCESSING`` comments (``delay`` between).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import signal
import socket
import string
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any

__all__ = [
    "DEFAULT_MODEL",
    "FAULTS",
    "MODELS",
    "PROVIDER_NAME",
    "FakeOpenRouter",
    "ReceivedRequest",
    "main",
    "minimal_instance",
]

DEFAULT_MODEL = "openai/gpt-4o"
PROVIDER_NAME = "FakeProvider"
API_PREFIX = "/api/v1"
FAULTS = frozenset(
    {
        "reply",
        "status",
        "error_200",
        "finish_error",
        "empty_choices",
        "malformed",
        "midstream_error",
        "cut",
        "slow",
        "hang",
        "reset",
        "keepalive",
    }
)

_ALNUM = string.ascii_letters + string.digits
_WORD_RE = re.compile(r"\S+\s*")
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_COMMENT = b": OPENROUTER PROCESSING\n\n"
_DONE = b"data: [DONE]\n\n"
_MALFORMED_BODY = b'{"id": "gen-broken", "choices": ['
_DEFAULT_STATUS_MESSAGES = {
    400: "Bad Request",
    401: "No auth credentials found",
    402: "Insufficient credits",
    403: "Forbidden",
    408: "Request timed out",
    429: "Rate limit exceeded",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "No available providers",
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------------
# Model catalogue (shape of GET /models, reference section 5)
# --------------------------------------------------------------------------------------------------

_COMMON_PARAMS = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
]


def _model(
    model_id: str,
    name: str,
    *,
    created: int,
    description: str,
    context_length: int,
    prompt: str,
    completion: str,
    tokenizer: str,
    instruct_type: str | None,
    input_modalities: list[str],
    max_completion_tokens: int | None,
    is_moderated: bool,
    hugging_face_id: str,
    extra_params: list[str],
) -> dict[str, Any]:
    return {
        "id": model_id,
        "canonical_slug": model_id.split(":")[0],
        "hugging_face_id": hugging_face_id,
        "name": name,
        "created": created,
        "description": description,
        "context_length": context_length,
        "architecture": {
            "modality": "+".join(input_modalities) + "->text",
            "input_modalities": input_modalities,
            "output_modalities": ["text"],
            "tokenizer": tokenizer,
            "instruct_type": instruct_type,
        },
        "pricing": {
            "prompt": prompt,
            "completion": completion,
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        },
        "top_provider": {
            "context_length": context_length,
            "max_completion_tokens": max_completion_tokens,
            "is_moderated": is_moderated,
        },
        "per_request_limits": None,
        "supported_parameters": sorted(_COMMON_PARAMS + extra_params),
        "default_parameters": {"temperature": None, "top_p": None, "frequency_penalty": None},
        "expiration_date": None,
    }


MODELS: list[dict[str, Any]] = [
    _model(
        "openai/gpt-4o",
        "OpenAI: GPT-4o",
        created=1715367049,
        description="GPT-4o is OpenAI's multimodal flagship model (fake catalogue entry).",
        context_length=128000,
        prompt="0.0000025",
        completion="0.00001",
        tokenizer="GPT",
        instruct_type=None,
        input_modalities=["text", "image", "file"],
        max_completion_tokens=16384,
        is_moderated=True,
        hugging_face_id="",
        extra_params=["tools", "tool_choice", "response_format", "structured_outputs", "logprobs"],
    ),
    _model(
        "openai/gpt-4o-mini",
        "OpenAI: GPT-4o-mini",
        created=1721260800,
        description="GPT-4o mini is a small, cheap GPT-4o (fake catalogue entry).",
        context_length=128000,
        prompt="0.00000015",
        completion="0.0000006",
        tokenizer="GPT",
        instruct_type=None,
        input_modalities=["text", "image", "file"],
        max_completion_tokens=16384,
        is_moderated=True,
        hugging_face_id="",
        extra_params=["tools", "tool_choice", "response_format", "structured_outputs", "logprobs"],
    ),
    _model(
        "anthropic/claude-3-opus",
        "Anthropic: Claude 3 Opus",
        created=1709596800,
        description="Claude 3 Opus is Anthropic's most capable Claude 3 model (fake catalogue entry).",
        context_length=200000,
        prompt="0.000015",
        completion="0.000075",
        tokenizer="Claude",
        instruct_type=None,
        input_modalities=["text", "image"],
        max_completion_tokens=4096,
        is_moderated=True,
        hugging_face_id="",
        extra_params=["tools", "tool_choice", "top_k"],
    ),
    _model(
        "meta-llama/llama-3.3-70b-instruct",
        "Meta: Llama 3.3 70B Instruct",
        created=1733506137,
        description="Llama 3.3 70B instruction-tuned multilingual model (fake catalogue entry).",
        context_length=131072,
        prompt="0.00000013",
        completion="0.0000004",
        tokenizer="Llama3",
        instruct_type="llama3",
        input_modalities=["text"],
        max_completion_tokens=16384,
        is_moderated=False,
        hugging_face_id="meta-llama/Llama-3.3-70B-Instruct",
        extra_params=["tools", "tool_choice", "response_format", "top_k", "min_p", "repetition_penalty"],
    ),
    _model(
        "mistralai/mistral-7b-instruct:free",
        "Mistral: Mistral 7B Instruct (free)",
        created=1716768000,
        description="Mistral 7B Instruct, free variant (fake catalogue entry).",
        context_length=32768,
        prompt="0",
        completion="0",
        tokenizer="Mistral",
        instruct_type="mistral",
        input_modalities=["text"],
        max_completion_tokens=16384,
        is_moderated=False,
        hugging_face_id="mistralai/Mistral-7B-Instruct-v0.3",
        extra_params=["top_k", "min_p", "repetition_penalty"],
    ),
]
MODEL_IDS = frozenset(m["id"] for m in MODELS)


# --------------------------------------------------------------------------------------------------
# Minimal JSON-schema instance
# --------------------------------------------------------------------------------------------------

_STRING_FORMATS = {
    "date-time": "1970-01-01T00:00:00Z",
    "date": "1970-01-01",
    "time": "00:00:00Z",
    "email": "x@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "ipv4": "127.0.0.1",
    "hostname": "example.com",
}


def _resolve_ref(ref: str, root: Any) -> Any:
    if not ref.startswith("#"):
        return {}
    node = root
    for raw in ref[1:].split("/"):
        if not raw:
            continue
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return {}
    return node


def _merge_all_of(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for sub in schema["allOf"]:
        while isinstance(sub, dict) and "$ref" in sub:
            sub = _resolve_ref(str(sub["$ref"]), root)
        if not isinstance(sub, dict):
            continue
        for key, value in sub.items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
            else:
                merged.setdefault(key, value)
    return merged


def minimal_instance(schema: Any, _root: Any = None, _depth: int = 0) -> Any:
    """Return a small instance of a JSON schema.

    object: all required properties (recursively); string: ``"x"`` (or enum[0] / const / a format
    sample / minLength copies); integer/number: ``minimum`` if given else 0; boolean: true;
    array: ``minItems`` copies of the items instance; null: None; anyOf/oneOf: the first branch;
    allOf: merged; local ``$ref`` resolved.
    """
    root = schema if _root is None else _root
    if _depth > 64 or not isinstance(schema, dict):
        return None
    depth = _depth + 1
    if "$ref" in schema:
        return minimal_instance(_resolve_ref(str(schema["$ref"]), root), root, depth)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return minimal_instance(branches[0], root, depth)
    if isinstance(schema.get("allOf"), list):
        return minimal_instance(_merge_all_of(schema, root), root, depth)

    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if non_null else "null"
    if kind is None:
        if "properties" in schema or "required" in schema:
            kind = "object"
        elif "items" in schema:
            kind = "array"

    if kind == "object":
        props = schema.get("properties")
        props = props if isinstance(props, dict) else {}
        required = schema.get("required")
        required = required if isinstance(required, list) else []
        return {str(name): minimal_instance(props.get(name, {}), root, depth) for name in required}
    if kind == "string":
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _STRING_FORMATS:
            return _STRING_FORMATS[fmt]
        min_len = schema.get("minLength")
        max_len = schema.get("maxLength")
        if isinstance(max_len, int) and max_len == 0:
            return ""
        return "x" * (min_len if isinstance(min_len, int) and min_len > 1 else 1)
    if kind in ("integer", "number"):
        value = _minimal_number(schema)
        if kind == "integer":
            return math.ceil(value)
        return value
    if kind == "boolean":
        return True
    if kind == "array":
        min_items = schema.get("minItems")
        count = min_items if isinstance(min_items, int) and min_items > 0 else 0
        return [minimal_instance(schema.get("items", {}), root, depth) for _ in range(count)]
    return None


def _minimal_number(schema: dict[str, Any]) -> int | float:
    def num(key: str) -> int | float | None:
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        return None

    minimum = num("minimum")
    if minimum is not None:
        return minimum
    exclusive_min = num("exclusiveMinimum")
    if exclusive_min is not None:
        return math.floor(exclusive_min) + 1
    maximum = num("maximum")
    if maximum is not None and maximum < 0:
        return maximum
    exclusive_max = num("exclusiveMaximum")
    if exclusive_max is not None and exclusive_max <= 0:
        return math.ceil(exclusive_max) - 1
    return 0


# --------------------------------------------------------------------------------------------------
# Content / usage helpers
# --------------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def _split_words(content: str) -> tuple[list[str], int]:
    """Split into word pieces whose concatenation equals ``content``; also return the word count."""
    pieces = _WORD_RE.findall(content)
    if not pieces:
        return ([content] if content else []), 0
    lead = len(content) - len(content.lstrip())
    if lead:
        pieces[0] = content[:lead] + pieces[0]
    return pieces, len(pieces)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "cost": round(prompt_tokens * 1e-6 + completion_tokens * 2e-6, 10),
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
        "cost_details": {"upstream_inference_cost": None},
    }


def _new_generation_id(now: int) -> str:
    return f"gen-{now}-{''.join(random.choices(_ALNUM, k=20))}"


def _default_content(body: dict[str, Any]) -> str:
    messages: list[Any] = body["messages"]
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = _text_of(message.get("content"))
            break
    else:
        text = _text_of(messages[-1].get("content"))
    response_format = body.get("response_format")
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return json.dumps({"echo": text})
        if kind == "json_schema":
            spec = response_format.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return json.dumps(minimal_instance(schema) if isinstance(schema, dict) else {})
    return "Echo: " + text


def _error_body(code: int | str, message: str, metadata: Any = None, *, user_id: bool = True) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    envelope: dict[str, Any] = {"error": error}
    if user_id:
        envelope["user_id"] = "user_fake"
    return _dumps(envelope)


def _response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    headers: Iterable[tuple[str, str]] = (),
    close: bool = False,
    content_length: int | None = None,
) -> bytes:
    length = len(body) if content_length is None else content_length
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    ]
    head.extend(f"{name}: {value}\r\n" for name, value in headers)
    if close:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1", "replace") + body


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# --------------------------------------------------------------------------------------------------
# Public data types
# --------------------------------------------------------------------------------------------------


@dataclass
class ReceivedRequest:
    """A request the fake received on an API path (control endpoints are not recorded)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.body)


@dataclass
class _HttpRequest:
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


@dataclass
class _Gen:
    id: str
    created: int
    model: str
    content: str
    pieces: list[str]
    finish_reason: str
    usage: dict[str, Any]


class _BadRequestError(Exception):
    pass


def _validate_step(step: Any) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise ValueError(f"script step must be a dict, got {type(step).__name__}")
    fault = step.get("fault", "reply")
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {sorted(FAULTS)}")
    repeat = step.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError("'repeat' must be a positive integer")
    if fault == "status":
        status = step.get("status", 500)
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise ValueError("'status' must be an integer HTTP status in 200..599")
    headers = step.get("headers", {})
    if not isinstance(headers, dict):
        raise ValueError("'headers' must be a dict")
    for key in ("after", "count"):
        value = step.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key!r} must be a non-negative integer")
    for key in ("delay", "chunk_delay"):
        value = step.get(key, 0)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key!r} must be a non-negative number")
    return dict(step)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------


class FakeOpenRouter:
    """Fake OpenRouter API on loopback. Use ``async with FakeOpenRouter() as fake:`` or
    ``with fake.running_in_thread():``; the base URL for clients is :attr:`url`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.received: list[ReceivedRequest] = []
        self.connections = 0  # total TCP connections accepted (to check pooling / keep-alive)
        self.total_cost = 0.0  # summed ``usage.cost`` of completions served (reported by GET /key)
        self._queue: deque[list[Any]] = deque()  # [step, remaining]
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    @property
    def active_connections(self) -> int:
        return len(self._conns)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._handle_connection, self.host, self.port, limit=_MAX_HEAD, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._conns)
        for task, writer in list(self._conns.items()):
            writer.transport.abort()
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> FakeOpenRouter:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @contextmanager
    def running_in_thread(self) -> Iterator[FakeOpenRouter]:
        """Run the server on its own event loop in a daemon thread (for sync clients, benchmarks)."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="fake-openrouter", daemon=True)
        thread.start()
        started.wait()
        if failure:
            thread.join()
            raise failure[0]
        try:
            yield self
        finally:
            future = asyncio.run_coroutine_threadsafe(self.stop(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    # -- scripting -----------------------------------------------------------------------------------

    def script(self, *steps: dict[str, Any]) -> None:
        """Append steps to the FIFO queue; each chat completion request consumes one (``repeat``: k)."""
        validated = [_validate_step(step) for step in steps]
        with self._lock:
            for step in validated:
                self._queue.append([step, step.get("repeat", 1)])

    def reset(self) -> None:
        """Clear the script queue and the received requests."""
        with self._lock:
            self._queue.clear()
        self.received.clear()

    def _next_step(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._queue:
                return None
            entry = self._queue[0]
            entry[1] -= 1
            if entry[1] <= 0:
                self._queue.popleft()
            step: dict[str, Any] = entry[0]
            return step

    # -- HTTP plumbing -------------------------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        self.connections += 1
        try:
            while True:
                try:
                    request = await self._read_request(reader, writer)
                except _BadRequestError as exc:
                    writer.write(_response(400, _error_body(400, str(exc), user_id=False), close=True))
                    await writer.drain()
                    return
                if request is None:
                    return
                try:
                    keep = await self._dispatch(request, reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError):
                    return
                except Exception as exc:  # a bug in the fake: report it, do not kill the loop
                    body = _error_body(500, f"fake server error: {exc!r}", user_id=False)
                    writer.write(_response(500, body, close=True))
                    await writer.drain()
                    return
                await writer.drain()
                if not keep or not request.keep_alive:
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # stop() cancels handlers; end normally because Python 3.11's StreamReaderProtocol
            # done-callback calls task.exception() and would log the CancelledError.
            pass
        finally:
            self._conns.pop(task, None)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _HttpRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                return None
            raise _BadRequestError("Incomplete request head") from None
        except asyncio.LimitOverrunError:
            raise _BadRequestError("Request head too large") from None
        lines = head.decode("latin-1").lstrip("\r\n").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
            raise _BadRequestError("Malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequestError("Unsupported HTTP version")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequestError("Malformed header line")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        else:
            raw_length = headers.get("content-length", "0")
            if not raw_length.isdigit():
                raise _BadRequestError("Invalid Content-Length")
            length = int(raw_length)
            if length > _MAX_BODY:
                raise _BadRequestError("Request body too large")
            body = await reader.readexactly(length) if length else b""
        return _HttpRequest(method.upper(), target, version, headers, body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            try:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip(), 16)
            except (ValueError, asyncio.LimitOverrunError):
                raise _BadRequestError("Malformed chunked body") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return bytes(body)
            if len(body) + size > _MAX_BODY:
                raise _BadRequestError("Request body too large")
            body += await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise _BadRequestError("Malformed chunked body")

    async def _dispatch(
        self, request: _HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Handle one request; return False if the connection must be closed."""
        path = request.target.partition("?")[0]
        if path == API_PREFIX or path.startswith(API_PREFIX + "/"):
            path = path[len(API_PREFIX) :]
        path = path.rstrip("/") or "/"
        close = not request.keep_alive
        method = request.method

        if path.startswith("/_fake/"):
            writer.write(self._control(method, path, request.body, close))
            return True

        self.received.append(ReceivedRequest(method, request.target, request.headers, request.body))
        if path == "/chat/completions":
            if method != "POST":
                writer.write(self._method_not_allowed(close))
                return True
            return await self._chat(request, reader, writer, close)
        if path == "/models":
            if method != "GET":
                writer.write(self._method_not_allowed(close))
                return True
            writer.write(_response(200, _MODELS_BODY, close=close))
            return True
        if path in ("/key", "/auth/key"):
            if method != "GET":
                writer.write(self._method_not_allowed(close))
            elif not self._authorized(request):
                writer.write(self._unauthorized(close))
            else:
                writer.write(_response(200, self._key_body(), close=close))
            return True
        writer.write(_response(404, _error_body(404, "Not Found", user_id=False), close=close))
        return True

    @staticmethod
    def _method_not_allowed(close: bool) -> bytes:
        return _response(
            405, _error_body(405, "Method Not Allowed", user_id=False), close=close, headers=[("Allow", "GET, POST")]
        )

    @staticmethod
    def _unauthorized(close: bool) -> bytes:
        return _response(401, _error_body(401, "No auth credentials found", user_id=False), close=close)

    def _authorized(self, request: _HttpRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.api_key is None or token == self.api_key

    def _key_body(self) -> bytes:
        usage = round(self.total_cost, 10)
        return _dumps(
            {
                "data": {
                    "label": "sk-or-v1-fak...e00",
                    "limit": None,
                    "limit_reset": None,
                    "limit_remaining": None,
                    "include_byok_in_limit": False,
                    "usage": usage,
                    "usage_daily": usage,
                    "usage_weekly": usage,
                    "usage_monthly": usage,
                    "byok_usage": 0,
                    "byok_usage_daily": 0,
                    "byok_usage_weekly": 0,
                    "byok_usage_monthly": 0,
                    "is_free_tier": False,
                    "is_provisioning_key": False,
                    "rate_limit": {"requests": -1, "interval": "10s"},
                }
            }
        )

    def _control(self, method: str, path: str, body: bytes, close: bool) -> bytes:
        if path == "/_fake/script" and method == "POST":
            try:
                steps = json.loads(body or b"[]")
                if isinstance(steps, dict):
                    steps = [steps]
                if not isinstance(steps, list):
                    raise ValueError("body must be a JSON list of steps")
                self.script(*steps)
            except ValueError as exc:
                return _response(400, _error_body(400, str(exc), user_id=False), close=close)
            return _response(200, _dumps({"queued": len(steps)}), close=close)
        if path == "/_fake/requests" and method == "GET":
            records = []
            for rec in list(self.received):
                try:
                    parsed = rec.json()
                except ValueError:
                    parsed = None
                records.append({"method": rec.method, "path": rec.path, "headers": rec.headers, "json": parsed})
            return _response(200, _dumps(records), close=close)
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return _response(200, _dumps({"ok": True}), close=close)
        return _response(404, _error_body(404, "Unknown control endpoint", user_id=False), close=close)

    # -- chat completions ----------------------------------------------------------------------------

    def _validate_chat(self, request: _HttpRequest, close: bool) -> tuple[dict[str, Any], str] | bytes:
        if not self._authorized(request):
            return self._unauthorized(close)
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _response(400, _error_body(400, "Request body must be a JSON object", user_id=False), close=close)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            msg = "'messages' must be a non-empty array of message objects"
            return _response(400, _error_body(400, msg, user_id=False), close=close)
        model = body.get("model")
        if model is None:
            model = DEFAULT_MODEL
        if not isinstance(model, str) or model not in MODEL_IDS:
            msg = f"{model} is not a valid model ID"
            return _response(400, _error_body(400, msg, user_id=False), close=close)
        return body, model

    def _generate(self, body: dict[str, Any], model: str, step: dict[str, Any]) -> _Gen:
        content = step.get("content")
        if not isinstance(content, str):
            content = _default_content(body)
        pieces, words = _split_words(content)
        finish = "stop"
        limit = body.get("max_completion_tokens")
        if limit is None:
            limit = body.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit < words:
            pieces = pieces[: max(limit, 0)]
            if pieces:
                pieces[-1] = pieces[-1].rstrip()
            content = "".join(pieces)
            words = len(pieces)
            finish = "length"
        if isinstance(step.get("finish_reason"), str):
            finish = step["finish_reason"]
        prompt_chars = sum(len(_text_of(m.get("content"))) for m in body["messages"])
        usage = _usage(max(1, prompt_chars // 4), max(1, words))
        override = step.get("usage")
        if isinstance(override, dict):
            usage.update(override)
            pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if isinstance(pt, int) and isinstance(ct, int):
                if "total_tokens" not in override:
                    usage["total_tokens"] = pt + ct
                if "cost" not in override:
                    usage["cost"] = round(pt * 1e-6 + ct * 2e-6, 10)
        step_model = step.get("model")
        now = int(time.time())
        return _Gen(
            id=_new_generation_id(now),
            created=now,
            model=step_model if isinstance(step_model, str) else model,
            content=content,
            pieces=pieces,
            finish_reason=finish,
            usage=usage,
        )

    async def _chat(
        self, request: _HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, close: bool
    ) -> bool:
        checked = self._validate_chat(request, close)
        if isinstance(checked, bytes):
            writer.write(checked)
            return True
        body, model = checked
        stream = body.get("stream") is True
        step = self._next_step() or {}
        fault = step.get("fault", "reply")

        # -- faults that never produce a completion --
        if fault == "hang":
            while await reader.read(65536):
                pass
            return False
        if fault == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if fault == "status":
            status = int(step.get("status", 500))
            default_message = _DEFAULT_STATUS_MESSAGES.get(status, _REASONS.get(status, "Error"))
            headers = [(str(k), str(v)) for k, v in step.get("headers", {}).items()]
            payload = _error_body(status, str(step.get("message", default_message)), step.get("metadata"))
            writer.write(_response(status, payload, headers=headers, close=close))
            return True
        if fault == "error_200":
            message = str(step.get("message", "Provider returned error"))
            payload = _error_body(step.get("code", 502), message, step.get("metadata"), user_id=False)
            writer.write(_response(200, payload, close=close))
            return True
        if fault == "malformed":
            writer.write(_response(200, _MALFORMED_BODY, close=close))
            return True
        if fault == "slow":
            await asyncio.sleep(float(step.get("delay", 1.0)))
        elif fault == "keepalive" and not stream:
            await asyncio.sleep(float(step.get("delay", 0.0)) * int(step.get("count", 1)))

        gen = self._generate(body, model, step)
        gen_headers = [("X-Generation-Id", gen.id)]

        # -- non-streaming answers --
        if fault == "finish_error" or (fault == "midstream_error" and not stream):
            if fault == "midstream_error":
                gen.pieces = gen.pieces[: int(step.get("after", 0))]
            elif "content" not in step:
                gen.pieces = gen.pieces[: max(1, len(gen.pieces) // 2)]
            gen.content = "".join(gen.pieces)
            choice = self._choice(gen.content, "error")
            choice["error"] = self._step_error(step, 502 if fault == "finish_error" else 429)
            self.total_cost += gen.usage.get("cost", 0) or 0
            payload = _dumps(self._completion(gen, [choice]))
            writer.write(_response(200, payload, headers=gen_headers, close=close))
            return True
        if fault == "empty_choices":
            gen.usage = _usage(gen.usage["prompt_tokens"], 0)
            if stream:
                delay = float(step.get("chunk_delay", self.chunk_delay))
                events = [(0.0, _COMMENT), (delay, self._usage_chunk(gen)), (delay, _DONE)]
                await self._send_stream(writer, gen, events, close=close)
            else:
                payload = _dumps(self._completion(gen, []))
                writer.write(_response(200, payload, headers=gen_headers, close=close))
            return True
        if not stream:
            payload = _dumps(self._completion(gen))
            if fault == "cut":
                partial = payload[: len(payload) // 2]
                writer.write(_response(200, partial, headers=gen_headers, content_length=len(payload)))
                await writer.drain()
                return False
            self.total_cost += gen.usage.get("cost", 0) or 0
            writer.write(_response(200, payload, headers=gen_headers, close=close))
            return True

        return await self._chat_stream(writer, gen, step, fault, close)

    async def _chat_stream(
        self, writer: asyncio.StreamWriter, gen: _Gen, step: dict[str, Any], fault: str, close: bool
    ) -> bool:
        delay = float(step.get("chunk_delay", self.chunk_delay))
        events: list[tuple[float, bytes]] = []
        if fault == "keepalive":
            comment_delay = float(step.get("delay", 0.0))
            events.extend((comment_delay if i else 0.0, _COMMENT) for i in range(int(step.get("count", 1))))
        else:
            events.append((0.0, _COMMENT))
        events.append((delay, self._sse(gen, [self._delta_choice({"role": "assistant", "content": ""})])))
        pieces = gen.pieces
        if fault in ("cut", "midstream_error"):
            pieces = pieces[: int(step.get("after", 0))]
        events.extend((delay, self._sse(gen, [self._delta_choice({"content": piece})])) for piece in pieces)

        if fault == "cut":
            await self._send_stream(writer, gen, events, close=close, terminate=False)
            writer.close()
            return False
        if fault == "midstream_error":
            error_choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
            events.append((delay, self._sse(gen, [error_choice], error=self._step_error(step, 429))))
            if step.get("done", False):
                events.append((delay, _DONE))
            await self._send_stream(writer, gen, events, close=close)
            return True

        finish_choice = {
            "index": 0,
            "delta": {},
            "finish_reason": gen.finish_reason,
            "native_finish_reason": gen.finish_reason,
            "logprobs": None,
        }
        events.append((delay, self._sse(gen, [finish_choice])))
        events.append((delay, self._usage_chunk(gen)))
        events.append((delay, _DONE))
        self.total_cost += gen.usage.get("cost", 0) or 0
        await self._send_stream(writer, gen, events, close=close)
        return True

    @staticmethod
    def _step_error(step: dict[str, Any], default_code: int) -> dict[str, Any]:
        """``{code, message, metadata}`` for error-in-completion faults (metadata gets ``error_type``)."""
        code = step.get("code", default_code)
        if code == 429:
            error_type, default_message = "rate_limit_exceeded", "Rate limit exceeded"
        else:
            error_type, default_message = "provider_unavailable", "Provider returned error"
        metadata = {"error_type": error_type, **(step.get("metadata") or {})}
        return {"code": code, "message": str(step.get("message", default_message)), "metadata": metadata}

    @staticmethod
    def _choice(content: str, finish_reason: str) -> dict[str, Any]:
        return {
            "index": 0,
            "logprobs": None,
            "finish_reason": finish_reason,
            "native_finish_reason": finish_reason,
            "message": {"role": "assistant", "content": content, "refusal": None, "reasoning": None},
        }

    def _completion(self, gen: _Gen, choices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "id": gen.id,
            "provider": PROVIDER_NAME,
            "model": gen.model,
            "object": "chat.completion",
            "created": gen.created,
            "system_fingerprint": None,
            "choices": [self._choice(gen.content, gen.finish_reason)] if choices is None else choices,
            "usage": gen.usage,
        }

    @staticmethod
    def _delta_choice(delta: dict[str, Any]) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "finish_reason": None, "native_finish_reason": None, "logprobs": None}

    @staticmethod
    def _sse(gen: _Gen, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        obj: dict[str, Any] = {
            "id": gen.id,
            "provider": PROVIDER_NAME,
            "model": gen.model,
            "object": "chat.completion.chunk",
            "created": gen.created,
        }
        obj.update(extra)
        obj["choices"] = choices
        return b"data: " + _dumps(obj) + b"\n\n"

    def _usage_chunk(self, gen: _Gen) -> bytes:
        return self._sse(gen, [], usage=gen.usage)

    @staticmethod
    async def _send_stream(
        writer: asyncio.StreamWriter,
        gen: _Gen,
        events: list[tuple[float, bytes]],
        *,
        close: bool,
        terminate: bool = True,
    ) -> None:
        """Write the SSE head and chunk-encoded events, sleeping before an event whose delay > 0."""
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            f"Transfer-Encoding: chunked\r\nX-Generation-Id: {gen.id}\r\n"
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
            buffer.append(_chunk(data))
        if terminate:
            buffer.append(b"0\r\n\r\n")
        writer.write(b"".join(buffer))
        await writer.drain()


_MODELS_BODY = _dumps({"data": MODELS})


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


async def _serve(fake: FakeOpenRouter) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    async with fake:
        print(f"fake OpenRouter listening on {fake.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the fake OpenRouter server until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="fake-openrouter", description="Fake OpenRouter API server (loopback).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787, 0 = any free port)")
    parser.add_argument("--api-key", default=None, help="require this bearer token (default: any non-empty)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between SSE chunks")
    args = parser.parse_args(argv)
    fake = FakeOpenRouter(args.host, args.port, api_key=args.api_key, chunk_delay=args.chunk_delay)
    try:
        asyncio.run(_serve(fake))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"fake OpenRouter: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

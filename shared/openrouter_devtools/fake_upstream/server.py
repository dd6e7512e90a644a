"""The fake OpenRouter server: lifecycle (``async with`` or its own thread), connections, routing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import replies
from .catalogue import MODELS_BODY
from .chat import answer_chat
from .replies import Generation
from .script import Script
from .wire import MAX_HEAD, BadRequestError, HttpRequest, dumps, error_body, read_request, response

__all__ = ["API_PREFIX", "FakeOpenRouter", "ReceivedRequest"]

API_PREFIX = "/api/v1"


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


def _not_found(message: str, close: bool) -> bytes:
    return response(404, error_body(404, message, user_id=False), close=close)


def _method_not_allowed(close: bool) -> bytes:
    return response(
        405, error_body(405, "Method Not Allowed", user_id=False), close=close, headers=[("Allow", "GET, POST")]
    )


def _unauthorized(close: bool) -> bytes:
    return response(401, error_body(401, "No auth credentials found", user_id=False), close=close)


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
        self.key_limit: float | None = None  # the key's credit limit in USD (GET /key: limit, limit_remaining)
        self._script = Script()
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
            self._handle_connection, self.host, self.port, limit=MAX_HEAD, reuse_address=True
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
        """Append steps to the FIFO queue; each chat completion request consumes one (``repeat``: k).

        The fault kinds are listed in :mod:`openrouter_devtools.fake_upstream.script`.
        """
        self._script.extend(steps)

    def reset(self) -> None:
        """Clear the script queue and the received requests."""
        self._script.clear()
        self.received.clear()

    def _bill(self, gen: Generation) -> None:
        self.total_cost += gen.usage.get("cost", 0) or 0

    # -- connections and routing ---------------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        self.connections += 1
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except BadRequestError as exc:
                    writer.write(response(400, error_body(400, str(exc), user_id=False), close=True))
                    await writer.drain()
                    return
                if request is None:
                    return
                try:
                    keep = await self._dispatch(request, reader, writer)
                except (ConnectionError, asyncio.IncompleteReadError):
                    return
                except Exception as exc:  # a bug in the fake: report it, do not kill the loop
                    body = error_body(500, f"fake server error: {exc!r}", user_id=False)
                    writer.write(response(500, body, close=True))
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

    async def _dispatch(self, request: HttpRequest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
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
                writer.write(_method_not_allowed(close))
                return True
            if not self._authorized(request):
                writer.write(_unauthorized(close))
                return True
            return await answer_chat(
                request, reader, writer, script=self._script, chunk_delay=self.chunk_delay, bill=self._bill
            )
        if path == "/models":
            writer.write(_method_not_allowed(close) if method != "GET" else response(200, MODELS_BODY, close=close))
            return True
        if path in ("/key", "/auth/key"):
            if method != "GET":
                writer.write(_method_not_allowed(close))
            elif not self._authorized(request):
                writer.write(_unauthorized(close))
            else:
                writer.write(response(200, replies.key_body(self.total_cost, self.key_limit), close=close))
            return True
        writer.write(_not_found("Not Found", close))
        return True

    def _authorized(self, request: HttpRequest) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.api_key is None or token == self.api_key

    def _control(self, method: str, path: str, body: bytes, close: bool) -> bytes:
        """``POST /_fake/script``, ``GET /_fake/requests``, ``POST /_fake/reset`` (no auth, not recorded)."""
        if path == "/_fake/script" and method == "POST":
            try:
                steps = json.loads(body or b"[]")
                if isinstance(steps, dict):
                    steps = [steps]
                if not isinstance(steps, list):
                    raise ValueError("body must be a JSON list of steps")
                self.script(*steps)
            except ValueError as exc:
                return response(400, error_body(400, str(exc), user_id=False), close=close)
            return response(200, dumps({"queued": len(steps)}), close=close)
        if path == "/_fake/requests" and method == "GET":
            records = []
            for rec in list(self.received):
                try:
                    parsed = rec.json()
                except ValueError:
                    parsed = None
                records.append({"method": rec.method, "path": rec.path, "headers": rec.headers, "json": parsed})
            return response(200, dumps(records), close=close)
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return response(200, dumps({"ok": True}), close=close)
        return _not_found("Unknown control endpoint", close)

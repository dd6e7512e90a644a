"""``OpenRouterService``: the OpenRouter chat-completions client every function uses."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .account import KEY_BODY_LIMIT, KeyStatus, key_status
from .attempts import Attempt, Attempts, Deadline, Sleep, settle
from .calllog import CallLog
from .errors import (
    OpenRouterConfigError,
    OpenRouterError,
    OpenRouterResponseError,
    OpenRouterValidationError,
)
from .messages import (
    check_model_params,
    check_response_format,
    normalize_model,
    validate_messages,
)
from .redact import preview
from .retry import RetryPolicy, server_wait_hint
from .settings import (
    DEFAULT_BASE_URL,
    DEFAULT_DEADLINE,
    DEFAULT_FIRST_CHUNK_TIMEOUT,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MODEL,
)
from .stream import ChatStream
from .transport import Sender
from .wire import Completion, check_completion, encode, failure_in, json_object_text, json_or_none, read_capped

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "ChatStream", "Completion", "OpenRouterService", "Prepared"]


logger = logging.getLogger("openrouter_service")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A checked request, as :meth:`OpenRouterService.validate_request` built it: the body to send and
    the response format to enforce."""

    payload: dict[str, Any]
    fmt: dict[str, Any] | None
    stream: bool


class OpenRouterService:
    """Client for OpenRouter's chat completions: validation, retries, structured output, streaming."""

    def __init__(
        self,
        api_key: str | None,
        model_name: str = DEFAULT_MODEL,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_factor: float = 2.0,
        default_system_prompt: str | None = None,
        default_response_format: dict[str, Any] | None = None,
        http_client: httpx.AsyncClient | None = None,
        app_url: str | None = None,
        app_title: str | None = None,
        schema_retries: int = 1,
        retry_policy: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        health_timeout: float = 3.0,
        deadline: float = DEFAULT_DEADLINE,
        first_chunk_timeout: float = DEFAULT_FIRST_CHUNK_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if api_key is None or not api_key.strip():
            raise OpenRouterConfigError(
                "OPENROUTER_API_KEY is not set: create a key at https://openrouter.ai/keys and put it in "
                "the OPENROUTER_API_KEY environment variable."
            )
        if timeout <= 0:
            raise OpenRouterConfigError("OPENROUTER_TIMEOUT must be a positive number of seconds.")
        if max_retries < 0:
            raise OpenRouterConfigError("OPENROUTER_MAX_RETRIES must be zero or more.")
        if deadline <= 0 or first_chunk_timeout <= 0:
            raise OpenRouterConfigError(
                "OPENROUTER_DEADLINE and OPENROUTER_FIRST_CHUNK_TIMEOUT must be positive numbers of seconds."
            )
        if max_response_bytes < 1:
            raise OpenRouterConfigError("OPENROUTER_MAX_RESPONSE_BYTES must be a positive number of bytes.")
        self._api_key = api_key.strip()
        self.model_name = model_name
        self.base_url = base_url
        self.timeout = timeout
        self.deadline = deadline
        self.first_chunk_timeout = first_chunk_timeout
        self.max_response_bytes = max_response_bytes
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries, backoff_factor=backoff_factor)
        self.max_retries = self.retry_policy.max_retries
        self.backoff_factor = self.retry_policy.backoff_factor
        self.default_system_prompt = default_system_prompt
        self.default_response_format = (
            check_response_format(default_response_format) if default_response_format else None
        )
        self.schema_retries = max(0, schema_retries)
        self.health_timeout = health_timeout
        self.call_log = CallLog(self._api_key)
        self._sleep: Sleep = sleep if sleep is not None else asyncio.sleep
        self._http = http_client
        self._owns_http = http_client is None
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if app_url:
            headers["HTTP-Referer"] = app_url
        if app_title:
            headers["X-OpenRouter-Title"] = app_title
            headers["X-Title"] = app_title  # still read by OpenRouter; older dashboards use it
        self._headers = headers
        self._stream_headers = {**headers, "Accept": "text/event-stream"}
        self._senders: tuple[Sender, Sender] | None = None  # (plain, stream) for the current client

    # -- configuration -------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OpenRouterService:
        """Build a service from ``OPENROUTER_*`` and ``DEFAULT_SYSTEM_PROMPT`` (``overrides`` win)."""
        from .settings import ClientSettings

        return ClientSettings.from_env(env).build_service(**overrides)

    @property
    def model_name(self) -> str:
        """The model used when a call does not name one (``openrouter/`` prefix removed)."""
        return self._model_name

    @model_name.setter
    def model_name(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise OpenRouterConfigError("OPENROUTER_MODEL must be a non-empty model id such as openai/gpt-4o.")
        self._model_name = normalize_model(value)

    @property
    def base_url(self) -> str:
        """OpenRouter's API root, e.g. ``https://openrouter.ai/api/v1``."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        if not value.startswith(("http://", "https://")):
            raise OpenRouterConfigError("OPENROUTER_BASE_URL must be an http(s) URL.")
        self._base_url = value.rstrip("/")
        self._senders = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            from .transport import default_transport

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=default_transport(),
            )
        return self._http

    def _sender(self, stream: bool) -> Sender:
        """What POSTs to ``/chat/completions`` on the current client, built once per client."""
        client = self._client()
        senders = self._senders
        if senders is None or senders[0].client is not client:
            url = f"{self.base_url}/chat/completions"
            senders = self._senders = (
                Sender(client, url, self._headers),
                Sender(client, url, self._stream_headers),
            )
        return senders[stream]

    async def aclose(self) -> None:
        """Close the pooled HTTP client (not one that was injected)."""
        if self._http is not None and self._owns_http:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> OpenRouterService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- public calls ---------------------------------------------------------------------------------

    async def chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One chat completion, as OpenRouter returns it (OpenAI shape)."""
        completion = await self.complete(messages, model_params=model_params, response_format=response_format)
        return completion.data

    async def generate_completion(self, prompt: str, **kwargs: Any) -> str:
        """The text the model writes for ``prompt`` (``system``, ``model_params``, ``response_format`` accepted)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise OpenRouterValidationError("prompt: must be a non-empty string")
        system = kwargs.pop("system", None)
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        completion = await self.complete(messages, **kwargs)
        return completion.content or ""

    async def complete(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        prepared: Prepared | None = None,
    ) -> Completion:
        """Like :meth:`chat_completion`, also giving attempts, latency and the parsed structured value.

        ``prepared``: what :meth:`validate_request` returned for these same arguments (not built twice)."""
        if prepared is not None and not prepared.stream:
            payload, fmt = prepared.payload, prepared.fmt
        else:
            payload, fmt = self._prepare(messages, model_params, response_format)
        started = time.perf_counter()
        deadline = Deadline.starting_now(self.deadline)  # one for the call, re-asks included
        attempts = 0
        try:
            data, attempts, body = await self._post_raw_with_retry(payload, deadline=deadline)
            parsed = None
            if fmt is not None:
                body = None  # the data may be a re-ask's
                from .structured import enforce_format  # jsonschema and RE2 load only when asked for

                data, parsed, more = await enforce_format(
                    data,
                    fmt,
                    payload,
                    reasks=self.schema_retries,
                    post=lambda again: self._post_with_retry(again, deadline=deadline),
                )
                attempts += more
        except OpenRouterError as exc:
            # An error after the first answer (a re-ask's) counted only its own attempts; add the first's.
            exc.attempts += attempts
            self._log_error(payload, exc, (time.perf_counter() - started) * 1000.0)
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._log_request(payload, data, latency_ms, attempts)
        return Completion(data=data, attempts=attempts, latency_ms=latency_ms, parsed=parsed, body=body)

    def stream_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
        prepared: Prepared | None = None,
    ) -> ChatStream:
        """Stream a chat completion: ``async for chunk in service.stream_chat_completion(...)``.

        Validation errors raise here, before any network call; upstream errors raise while iterating.
        ``prepared``: what :meth:`validate_request` returned for these same arguments (not built twice).
        """
        if prepared is not None and prepared.stream and prepared.fmt is None:
            return ChatStream(self, prepared.payload)
        payload, _ = self._prepare(messages, model_params, None, stream=True)
        return ChatStream(self, payload)

    def health_check(self) -> bool:
        """Whether OpenRouter accepts our key (``GET /key`` within ``health_timeout``); never raises.

        Through the injected client's transport when it can be used synchronously (``httpx.MockTransport``
        in tests, for one), like every other call; otherwise through a short-lived client of its own.
        """
        transport = getattr(self._http, "_transport", None)
        sync_transport = transport if isinstance(transport, httpx.BaseTransport) else None
        try:
            with (
                httpx.Client(timeout=self.health_timeout, transport=sync_transport) as client,
                client.stream("GET", f"{self.base_url}/key", headers=self._key_headers()) as response,
            ):
                body = bytearray()
                for part in response.iter_bytes():
                    body += part
                    if len(body) > KEY_BODY_LIMIT:
                        return False
                return key_status(response.status_code, bytes(body)).ok
        except Exception:
            logger.debug("health check failed", exc_info=True)
            return False

    async def ahealth_check(self) -> bool:
        """:meth:`health_check` for async callers, on the pooled connection; never raises."""
        return (await self.acheck_key()).ok

    async def acheck_key(self) -> KeyStatus:
        """What OpenRouter says of our key: accepted or not, and the credits left under its limit. Never raises."""
        try:
            client = self._client()
            request = client.build_request(
                "GET", f"{self.base_url}/key", headers=self._key_headers(), timeout=self.health_timeout
            )
            response = await client.send(request, stream=True)
            body = await read_capped(response, KEY_BODY_LIMIT)
            return key_status(response.status_code, body)
        except OpenRouterError:
            return KeyStatus(False, "GET /key answered more than expected")
        except Exception as exc:
            logger.debug("key check failed", exc_info=True)
            return KeyStatus(False, exc.__class__.__name__)

    def _key_headers(self) -> dict[str, str]:
        return {"Authorization": self._headers["Authorization"], "Accept": "application/json"}

    def validate_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> Prepared:
        """Raise the validation error a call with these arguments would raise, without calling; else the
        request they make, which :meth:`complete` (``stream`` false) or :meth:`stream_chat_completion`
        (``stream`` true) take as ``prepared`` instead of building it again."""
        payload, fmt = self._prepare(messages, model_params, response_format, stream=stream)
        return Prepared(payload, fmt, stream)

    # -- request building -----------------------------------------------------------------------------

    def _prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        model_params: Mapping[str, Any] | None,
        response_format: Mapping[str, Any] | None,
        *,
        stream: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        checked = validate_messages(messages)
        params = dict(model_params or {})
        check_model_params(params)
        fmt = check_response_format(response_format) if response_format else self.default_response_format
        if fmt is not None and fmt.get("type") == "text":
            fmt = None
        if fmt is not None and fmt.get("type") == "json_schema":
            from .structured import check_schema

            check_schema(fmt["json_schema"]["schema"])
        return self._build_payload(checked, params, fmt, stream=stream), fmt

    def _build_payload(
        self,
        messages: list[dict[str, Any]],
        model_params: dict[str, Any],
        response_format: dict[str, Any] | None,
        *,
        stream: bool = False,
    ) -> dict[str, Any]:
        params = dict(model_params)
        model = params.pop("model", None)
        payload: dict[str, Any] = {"model": normalize_model(model) if model else self.model_name}
        if self.default_system_prompt and not any(m.get("role") in ("system", "developer") for m in messages):
            messages = [{"role": "system", "content": self.default_system_prompt}, *messages]
        payload["messages"] = messages
        if isinstance(params.get("models"), list):
            params["models"] = [normalize_model(m) if isinstance(m, str) else m for m in params["models"]]
        payload.update(params)
        if response_format is not None:
            payload["response_format"] = response_format
        if stream:
            payload["stream"] = True
        return payload

    # -- the wire -------------------------------------------------------------------------------------

    def attempts(self, deadline: Deadline | None = None) -> Attempts:
        """The attempt loop for one call: ``async for attempt in service.attempts(): with attempt: ...``.

        Without ``deadline``, one starts now: :attr:`deadline` seconds for the call, and
        :attr:`first_chunk_timeout` for a stream's first data chunk.
        """
        if deadline is None:
            deadline = Deadline.starting_now(self.deadline, self.first_chunk_timeout)
        return Attempts(self.retry_policy, self._sleep, timeout=self.timeout, deadline=deadline, secret=self._api_key)

    async def open_event_stream(self, payload: Mapping[str, Any], attempt: Attempt) -> httpx.Response:
        """Send ``payload`` as one streaming request: the open ``text/event-stream`` response, or raise
        the error OpenRouter answered with instead (its headers noted on ``attempt``)."""
        sender = self._sender(True)
        response = await sender.send(sender.request(encode(payload)))
        if response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        raw = await read_capped(response, self.max_response_bytes)
        attempt.headers = response.headers
        raise failure_in(response.status_code, json_or_none(raw)) or OpenRouterResponseError(
            "OpenRouter answered a streaming request without an event stream.", upstream_status=200
        )

    async def _handle_rate_limit(self, error: OpenRouterError, headers: Mapping[str, str] | None, attempt: int) -> None:
        """Wait before retrying a retryable answer, or raise ``error`` at once when the policy gives up
        (a wait longer than ``max_delay`` is not slept: ``retry_after`` says it instead)."""
        server_wait = server_wait_hint(headers) if headers else None
        wait = settle(self.retry_policy, error, attempt, server_wait=server_wait)
        if wait is None:
            raise error
        await self._sleep(wait)

    async def _post_with_retry(
        self, payload: dict[str, Any], *, deadline: Deadline | None = None
    ) -> tuple[dict[str, Any], int]:
        """POST ``payload`` to ``/chat/completions`` with retries: (the validated body, attempts made)."""
        data, attempts, _ = await self._post_raw_with_retry(payload, deadline=deadline)
        return data, attempts

    async def _post_raw_with_retry(
        self, payload: dict[str, Any], *, deadline: Deadline | None = None
    ) -> tuple[dict[str, Any], int, bytes | None]:
        """:meth:`_post_with_retry`, with the body's JSON text when it can be passed on as it is
        (:func:`~.wire.json_object_text`)."""
        sender = self._sender(False)
        request = sender.request(encode(payload))  # the same bytes for every attempt
        async for attempt in self.attempts(deadline):
            with attempt:
                async with attempt.limit():
                    response = await sender.send(request)
                    if response.status_code == 200:
                        attempt.answered()
                    raw = await read_capped(response, self.max_response_bytes)
                data = json_or_none(raw)
                error = failure_in(response.status_code, data)
                if error is not None:
                    attempt.headers = response.headers
                    raise error
                if data is None:
                    raise OpenRouterResponseError(
                        "OpenRouter returned a body that is not JSON.",
                        upstream_status=200,
                        metadata={"body_preview": preview(raw.decode("utf-8", "replace"), 200)},
                    )
                return self._validate_response(data, attempt.number), attempt.number, json_object_text(raw)
        raise AssertionError("the attempt loop ends by returning or raising")  # pragma: no cover

    def _validate_response(self, data: dict[str, Any], attempts: int = 0) -> dict[str, Any]:
        """Check that a 200 body is a usable completion; clear errors instead of ``KeyError``."""
        return check_completion(data, attempts)

    # -- logging ------------------------------------------------------------------------------------

    def _mask_secrets(self, text: str) -> str:
        """``text`` without our API key, bearer tokens or JWTs."""
        return self.call_log.mask(text)

    def _log_request(
        self, payload: Mapping[str, Any], data: Mapping[str, Any], latency_ms: float, attempts: int
    ) -> None:
        """One structured line for a successful call."""
        self.call_log.success(payload, data, latency_ms, attempts)

    def _log_error(self, payload: Mapping[str, Any], error: OpenRouterError, latency_ms: float) -> None:
        """One structured line for a failed call."""
        self.call_log.failure(payload, error, latency_ms)

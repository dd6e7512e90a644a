"""``OpenRouterService``: the OpenRouter chat-completions client every function uses."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import (
    OpenRouterConfigError,
    OpenRouterConnectionError,
    OpenRouterError,
    OpenRouterResponseError,
    OpenRouterSchemaError,
    OpenRouterTimeoutError,
    OpenRouterValidationError,
    error_from_upstream,
)
from .messages import (
    check_model_params,
    check_response_format,
    normalize_model,
    validate_messages,
)
from .redact import mask_secrets, preview
from .retry import RetryPolicy, is_retryable_status, server_wait_hint
from .settings import DEFAULT_BASE_URL, DEFAULT_MODEL
from .sse import DONE, SSEComment, SSEData, iter_sse

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "ChatStream", "Completion", "OpenRouterService"]


logger = logging.getLogger("openrouter_service")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class Completion:
    """A finished chat completion and how it was obtained."""

    data: dict[str, Any]
    attempts: int
    latency_ms: float
    parsed: Any = None

    @property
    def content(self) -> str | None:
        """The first choice's message content."""
        message = self.data["choices"][0].get("message") or {}
        content = message.get("content")
        return content if isinstance(content, str) else None

    @property
    def usage(self) -> dict[str, Any] | None:
        """Token counts and cost as the provider reported them."""
        usage = self.data.get("usage")
        return usage if isinstance(usage, dict) else None


def _add_usage(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    if not more:
        return total
    if not total:
        return dict(more)
    summed = dict(total)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cost"):
        a, b = total.get(key), more.get(key)
        if isinstance(a, int | float) and isinstance(b, int | float):
            summed[key] = a + b
    return summed


def _error_in_body(data: Any) -> OpenRouterError | None:
    """An error OpenRouter hid inside an HTTP 200 body, or ``None``."""
    if not isinstance(data, dict):
        return OpenRouterResponseError("OpenRouter returned a JSON value that is not an object.")
    if data.get("error"):
        return error_from_upstream(200, data)
    choices = data.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        if first.get("finish_reason") == "error":
            return error_from_upstream(200, first.get("error") or {"code": 502, "message": "The provider failed."})
    return None


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
        self._api_key = api_key.strip()
        self.model_name = model_name
        self.base_url = base_url
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries, backoff_factor=backoff_factor)
        self.max_retries = self.retry_policy.max_retries
        self.backoff_factor = self.retry_policy.backoff_factor
        self.default_system_prompt = default_system_prompt
        self.default_response_format = (
            check_response_format(default_response_format) if default_response_format else None
        )
        self.schema_retries = max(0, schema_retries)
        self.health_timeout = health_timeout
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

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            from .transport import default_transport

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                transport=default_transport(),
            )
        return self._http

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
    ) -> Completion:
        """Like :meth:`chat_completion`, also giving attempts, latency and the parsed structured value."""
        payload, fmt = self._prepare(messages, model_params, response_format)
        started = time.perf_counter()
        attempts = 0
        try:
            data, attempts = await self._post_with_retry(payload)
            parsed = None
            if fmt is not None:
                data, parsed, more = await self._enforce_format(payload, data, fmt)
                attempts += more
        except OpenRouterError as exc:
            exc.attempts = exc.attempts or attempts
            self._log_error(payload, exc, (time.perf_counter() - started) * 1000.0)
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        self._log_request(payload, data, latency_ms, attempts)
        return Completion(data=data, attempts=attempts, latency_ms=latency_ms, parsed=parsed)

    def stream_chat_completion(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """Stream a chat completion: ``async for chunk in service.stream_chat_completion(...)``.

        Validation errors raise here, before any network call; upstream errors raise while iterating.
        """
        payload, _ = self._prepare(messages, model_params, None, stream=True)
        return ChatStream(self, payload)

    def health_check(self) -> bool:
        """Whether OpenRouter answers ``GET /models`` within ``health_timeout``; never raises."""
        try:
            with httpx.Client(timeout=self.health_timeout) as client:
                response = client.get(f"{self.base_url}/models", headers={"Accept": "application/json"})
            return response.status_code == 200
        except Exception:
            logger.debug("health check failed", exc_info=True)
            return False

    async def ahealth_check(self) -> bool:
        """:meth:`health_check` for async callers, on the pooled connection; never raises."""
        try:
            response = await self._client().get(
                f"{self.base_url}/models", headers={"Accept": "application/json"}, timeout=self.health_timeout
            )
            return response.status_code == 200
        except Exception:
            logger.debug("health check failed", exc_info=True)
            return False

    def validate_request(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        model_params: Mapping[str, Any] | None = None,
        response_format: Mapping[str, Any] | None = None,
        stream: bool = False,
    ) -> None:
        """Raise the validation error a call with these arguments would raise, without calling."""
        self._prepare(messages, model_params, response_format, stream=stream)

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

    def _transport_error(self, exc: httpx.HTTPError, attempts: int, *, after_chunks: int = 0) -> OpenRouterError:
        if isinstance(exc, httpx.TimeoutException):
            what = f"OpenRouter did not answer within {self.timeout:g} s"
            cls: type[OpenRouterError] = OpenRouterTimeoutError
        else:
            what = f"Could not reach OpenRouter ({exc.__class__.__name__})"
            cls = OpenRouterConnectionError
        if after_chunks:
            what = f"The upstream stream was cut after {after_chunks} chunks ({exc.__class__.__name__})"
        return cls(f"{what}.", attempts=attempts, retry_after=1.0)

    async def _handle_rate_limit(self, error: OpenRouterError, headers: Mapping[str, str] | None, attempt: int) -> None:
        """Wait before retrying a retryable answer, or raise ``error`` at once when the wait is too long."""
        delay = self.retry_policy.delay_for(attempt, headers)
        if self.retry_policy.too_long(delay):
            error.retry_after = delay
            error.attempts = attempt
            raise error
        await self._sleep(delay)

    async def _retry_or_raise(
        self, error: OpenRouterError, status: int, headers: Mapping[str, str], attempt: int
    ) -> None:
        """Return after waiting when attempt ``attempt`` may be retried; otherwise raise ``error`` with
        ``attempts`` and, where waiting helps, ``retry_after`` filled in."""
        error.attempts = attempt
        retry_status = error.upstream_status or status
        if self.retry_policy.should_retry(attempt, status=retry_status):
            await self._handle_rate_limit(error, headers, attempt)
            return
        hint = server_wait_hint(headers)
        if hint is not None:
            error.retry_after = hint
        elif error.status_code in (429, 503) or is_retryable_status(retry_status):
            error.retry_after = self.retry_policy.backoff(attempt, rand=lambda: 0.0)
        raise error

    async def _post_with_retry(self, payload: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """POST ``payload`` to ``/chat/completions`` with retries: (the validated body, attempts made)."""
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        url = f"{self.base_url}/chat/completions"
        client = self._client()
        policy = self.retry_policy
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await client.post(url, content=body, headers=self._headers)
            except httpx.HTTPError as exc:
                if policy.should_retry(attempt, exc=exc):
                    await self._sleep(policy.delay_for(attempt))
                    continue
                raise self._transport_error(exc, attempt) from exc
            status = response.status_code
            data: Any
            try:
                data = json.loads(response.content)
            except ValueError:
                data = None
            if status == 200:
                if data is None:
                    raise OpenRouterResponseError(
                        "OpenRouter returned a body that is not JSON.",
                        upstream_status=200,
                        attempts=attempt,
                        metadata={"body_preview": preview(response.text, 200)},
                    )
                error = _error_in_body(data)
                if error is None:
                    return self._validate_response(data, attempt), attempt
            else:
                error = error_from_upstream(status, data)
            await self._retry_or_raise(error, status, response.headers, attempt)

    def _validate_response(self, data: dict[str, Any], attempts: int = 0) -> dict[str, Any]:
        """Check that a 200 body is a usable completion; clear errors instead of ``KeyError``."""
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise OpenRouterResponseError(
                "OpenRouter returned no choices (the model produced nothing; it may be warming up).",
                upstream_status=200,
                attempts=attempts,
            )
        first = choices[0]
        if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
            raise OpenRouterResponseError(
                "OpenRouter returned a choice without a message.", upstream_status=200, attempts=attempts
            )
        return data

    async def _enforce_format(
        self, payload: dict[str, Any], data: dict[str, Any], fmt: dict[str, Any]
    ) -> tuple[dict[str, Any], Any, int]:
        """Hold the content to ``fmt``, re-asking up to ``schema_retries`` times: (data, parsed, extra attempts)."""
        from .structured import parse_structured, reask_message

        extra_attempts = 0
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
        messages = list(payload["messages"])
        for reask in range(self.schema_retries + 1):
            content = data["choices"][0]["message"].get("content")
            parsed, violations = parse_structured(content if isinstance(content, str) else None, fmt)
            if not violations:
                if reask:
                    # The caller pays for every call we made, so report the sum.
                    data = {**data, "usage": usage}
                return data, parsed, extra_attempts
            if reask == self.schema_retries:
                raw = content if isinstance(content, str) else ""
                raise OpenRouterSchemaError(
                    f"The model's reply did not match the requested format: {violations[0].path}: "
                    f"{violations[0].message}",
                    violations=violations,
                    raw_content=raw,
                    usage=usage,
                    upstream_status=200,
                    attempts=extra_attempts,
                )
            messages += [
                {"role": "assistant", "content": content if isinstance(content, str) else ""},
                {"role": "user", "content": reask_message(violations)},
            ]
            data, attempts = await self._post_with_retry({**payload, "messages": messages})
            extra_attempts += attempts
            usage = _add_usage(usage, data.get("usage") if isinstance(data.get("usage"), dict) else None)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- logging --------------------------------------------------------------------------------------

    def _mask_secrets(self, text: str) -> str:
        """``text`` without our API key, bearer tokens or JWTs."""
        return mask_secrets(text, self._api_key)

    def _prompt_preview(self, payload: Mapping[str, Any]) -> str:
        messages = payload.get("messages") or []
        for message in reversed(messages):
            if message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list):
                    content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
                return preview(self._mask_secrets(str(content)))
        return ""

    def _log_request(
        self, payload: Mapping[str, Any], data: Mapping[str, Any], latency_ms: float, attempts: int
    ) -> None:
        """One structured line for a successful call."""
        if not logger.isEnabledFor(logging.INFO):
            return
        usage = data.get("usage") or {}
        message = (data.get("choices") or [{}])[0].get("message") or {}
        record = {
            "event": "openrouter.call",
            "model": payload.get("model"),
            "served_by": data.get("model"),
            "status": 200,
            "latency_ms": round(latency_ms, 1),
            "attempts": attempts,
            "generation_id": data.get("id"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "cost": usage.get("cost"),
            "prompt_preview": self._prompt_preview(payload),
            "response_preview": preview(self._mask_secrets(str(message.get("content") or ""))),
        }
        logger.info(json.dumps(record, ensure_ascii=False))

    def _log_error(self, payload: Mapping[str, Any], error: OpenRouterError, latency_ms: float) -> None:
        """One structured line for a failed call."""
        if not logger.isEnabledFor(logging.WARNING):
            return
        record = {
            "event": "openrouter.error",
            "model": payload.get("model"),
            "status": error.status_code,
            "type": error.type,
            "upstream_status": error.upstream_status,
            "upstream_code": error.upstream_code,
            "latency_ms": round(latency_ms, 1),
            "attempts": error.attempts,
            "message": preview(self._mask_secrets(error.message)),
            "metadata": json.loads(self._mask_secrets(json.dumps(error.metadata, default=str)))
            if error.metadata
            else None,
            "prompt_preview": self._prompt_preview(payload),
        }
        logger.warning(json.dumps(record, ensure_ascii=False))


DRAIN_SECONDS = 0.5


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body) so the connection can be reused;
    never wait long for it, and never fail a finished stream over it."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in lines:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


class ChatStream:
    """A streamed chat completion: iterate for chunk dicts; ``usage`` is set once the final chunk arrives.

    Opened lazily on first iteration; retried only until the first chunk; closed by ``aclose()``,
    ``async with``, or running to the end.
    """

    def __init__(self, service: OpenRouterService, payload: dict[str, Any]) -> None:
        self._service = service
        self.payload = payload
        self.usage: dict[str, Any] | None = None
        self.generation_id: str | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.attempts = 0
        self.chunks = 0
        self.completed = False
        self.error: OpenRouterError | None = None
        self._response: httpx.Response | None = None
        self._gen: AsyncIterator[dict[str, Any] | SSEComment] | None = None
        self._started = 0.0

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks_only()

    async def _chunks_only(self) -> AsyncIterator[dict[str, Any]]:
        async for item in self.events():
            if isinstance(item, dict):
                yield item

    def events(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        """Chunks and the keep-alive comments between them, for callers that pass the stream on."""
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    async def __aenter__(self) -> ChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and close the upstream connection."""
        gen, self._gen = self._gen, None
        if gen is not None and hasattr(gen, "aclose"):
            await gen.aclose()
        await self._close_response()

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()

    async def _open(self) -> httpx.Response:
        service = self._service
        policy = service.retry_policy
        body = json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()
        client = service._client()
        headers = {**service._headers, "Accept": "text/event-stream"}
        while True:
            self.attempts += 1
            request = client.build_request(
                "POST", f"{service.base_url}/chat/completions", content=body, headers=headers
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as exc:
                if policy.should_retry(self.attempts, exc=exc):
                    await service._sleep(policy.delay_for(self.attempts))
                    continue
                raise service._transport_error(exc, self.attempts) from exc
            content_type = response.headers.get("content-type", "")
            if response.status_code == 200 and content_type.startswith("text/event-stream"):
                return response
            try:
                raw = await response.aread()
            except httpx.HTTPError as exc:
                raise service._transport_error(exc, self.attempts) from exc
            finally:
                await response.aclose()
            try:
                data: Any = json.loads(raw)
            except ValueError:
                data = None
            if response.status_code == 200:
                error = _error_in_body(data) if data is not None else None
                if error is None:
                    error = OpenRouterResponseError(
                        "OpenRouter answered a streaming request without an event stream.",
                        upstream_status=200,
                    )
            else:
                error = error_from_upstream(response.status_code, data)
            await service._retry_or_raise(error, response.status_code, response.headers, self.attempts)

    async def _run(self) -> AsyncIterator[dict[str, Any] | SSEComment]:
        service = self._service
        self._started = time.perf_counter()
        try:
            while True:
                response = self._response = await self._open()
                retry_with: OpenRouterError | None = None
                lines = response.aiter_lines()
                try:
                    async for event in iter_sse(lines):
                        if isinstance(event, SSEComment):
                            yield event
                            continue
                        if event.data == DONE:
                            self.completed = True
                            break
                        chunk = self._parse(event)
                        if chunk.get("error"):
                            error = error_from_upstream(200, chunk, attempts=self.attempts)
                            status = error.upstream_status or 502
                            if self.chunks == 0 and service.retry_policy.should_retry(self.attempts, status=status):
                                retry_with = error
                                break
                            self._note(chunk)
                            raise error
                        self._note(chunk)
                        self.chunks += 1
                        yield chunk
                    if self.completed:
                        await _drain(lines)
                except httpx.HTTPError as exc:
                    if self.chunks == 0 and service.retry_policy.should_retry(self.attempts, exc=exc):
                        retry_with = service._transport_error(exc, self.attempts)
                    else:
                        raise service._transport_error(exc, self.attempts, after_chunks=self.chunks) from exc
                finally:
                    await self._close_response()
                if retry_with is not None:
                    await service._handle_rate_limit(retry_with, None, self.attempts)
                    continue
                if not self.completed and self.finish_reason is None:
                    raise OpenRouterConnectionError(
                        f"The upstream stream ended after {self.chunks} chunks without finishing.",
                        attempts=self.attempts,
                    )
                # OpenRouter always ends with [DONE]; a finished stream missing it still counts as done.
                self.completed = True
                break
        except OpenRouterError as exc:
            self.error = exc
            service._log_error(self.payload, exc, (time.perf_counter() - self._started) * 1000.0)
            raise
        self._log_done()

    def _parse(self, event: SSEData) -> dict[str, Any]:
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise OpenRouterResponseError(
                "OpenRouter sent a stream event that is not JSON.",
                attempts=self.attempts,
                metadata={"event_preview": preview(event.data, 200)},
            ) from None
        if not isinstance(chunk, dict):
            raise OpenRouterResponseError("OpenRouter sent a stream event that is not an object.")
        return chunk

    def _note(self, chunk: dict[str, Any]) -> None:
        if self.generation_id is None and isinstance(chunk.get("id"), str):
            self.generation_id = chunk["id"]
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason

    def _log_done(self) -> None:
        latency_ms = (time.perf_counter() - self._started) * 1000.0
        data = {
            "id": self.generation_id,
            "model": self.model,
            "usage": self.usage or {},
            "choices": [{"message": {"content": f"<streamed {self.chunks} chunks>"}}],
        }
        self._service._log_request(self.payload, data, latency_ms, self.attempts)

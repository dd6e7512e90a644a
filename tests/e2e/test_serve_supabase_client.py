"""The real ``supabase_functions`` client against ``openrouter-functions serve``: the same call shape a
Supabase app uses (``functions.invoke(name, ...)``) reaches each function at ``<base>/<name>``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_procs import FakeUpstream, functions_env, serving
from supabase_functions import SyncFunctionsClient
from supabase_functions.errors import FunctionsHttpError

from helpers import HEALTH_DETAIL, free_port, mint


@pytest.fixture(scope="module")
def functions(serve_url: str) -> Iterator[SyncFunctionsClient]:
    with httpx.Client(timeout=10.0) as http:
        yield SyncFunctionsClient(url=serve_url, headers={"Authorization": f"Bearer {mint()}"}, http_client=http)


def invoke_json(client: SyncFunctionsClient, name: str, options: dict[str, Any]) -> Any:
    raw = client.invoke(name, options)
    assert isinstance(raw, bytes)
    return json.loads(raw)


def test_invoke_chat(functions: SyncFunctionsClient, fake: FakeUpstream) -> None:
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "ping from supabase"}]}
    reply = invoke_json(functions, "chat", {"body": body})

    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"]["content"] == "Echo: ping from supabase"
    assert reply["usage"]["total_tokens"] > 0
    sent = fake.chat_requests()
    assert len(sent) == 1
    assert sent[0]["json"]["messages"] == body["messages"]


def test_invoke_chat_seed_shape(functions: SyncFunctionsClient, fake: FakeUpstream) -> None:
    body = {"messages": [{"role": "user", "content": "seed shape"}], "params": {"temperature": 0.2}}
    reply = invoke_json(functions, "chat", {"body": body})

    assert reply["choices"][0]["message"]["content"] == "Echo: seed shape"
    assert fake.chat_requests()[0]["json"]["temperature"] == 0.2


def test_invoke_completion_json_object(functions: SyncFunctionsClient, fake: FakeUpstream) -> None:
    body = {"prompt": "give me json", "response_format": {"type": "json_object"}}
    reply = invoke_json(functions, "completion", {"body": body})

    assert reply["data"] == {"echo": "give me json"}
    assert json.loads(reply["text"]) == {"echo": "give me json"}
    assert reply["model"] == "openai/gpt-4o"
    assert reply["id"].startswith("gen-")
    assert reply["usage"]["completion_tokens"] >= 1


def test_invoke_completion_text(functions: SyncFunctionsClient, fake: FakeUpstream) -> None:
    reply = invoke_json(functions, "completion", {"body": {"prompt": "just text", "system": "be brief"}})

    assert reply["text"] == "Echo: just text"
    assert reply["data"] is None
    sent = fake.chat_requests()[0]["json"]["messages"]
    assert sent[0] == {"role": "system", "content": "be brief"}


def test_invoke_health_get(functions: SyncFunctionsClient) -> None:
    assert invoke_json(functions, "health", {"method": "GET"}) == {"status": "ok"}  # a user's token: terse
    reply = invoke_json(functions, "health", {"method": "GET", "headers": HEALTH_DETAIL})

    assert reply["status"] == "ok"
    assert reply["offline_mode"] is False
    assert reply["checks"]["upstream"]["ok"] is True


def test_invoke_health_response_type_json(functions: SyncFunctionsClient) -> None:
    reply = functions.invoke("health", {"method": "GET", "responseType": "json"})
    assert isinstance(reply, dict)
    assert reply["status"] == "ok"


def test_invoke_without_token_is_401(serve_url: str, fake: FakeUpstream) -> None:
    with httpx.Client(timeout=10.0) as http:
        anonymous = SyncFunctionsClient(url=serve_url, headers={}, http_client=http)
        with pytest.raises(FunctionsHttpError) as caught:
            anonymous.invoke("chat", {"body": {"messages": [{"role": "user", "content": "hi"}]}})

    assert caught.value.status == 401
    # The client passes the envelope's "error" member on as the message: here the error object.
    message: Any = caught.value.message
    assert isinstance(message, dict)
    assert message["code"] == 401
    assert message["type"]
    assert fake.chat_requests() == []


def test_invoke_with_expired_token_is_401(serve_url: str) -> None:
    expired = mint(exp=1_000_000_000, iat=999_990_000)
    with httpx.Client(timeout=10.0) as http:
        client = SyncFunctionsClient(url=serve_url, headers={"Authorization": f"Bearer {expired}"}, http_client=http)
        with pytest.raises(FunctionsHttpError) as caught:
            client.invoke("completion", {"body": {"prompt": "hi"}})
    assert caught.value.status == 401


def test_invoke_unknown_function_is_404(functions: SyncFunctionsClient) -> None:
    with pytest.raises(FunctionsHttpError) as caught:
        functions.invoke("nope", {"body": {}})
    assert caught.value.status == 404


def test_browser_preflight_allows_supabase_headers(serve_url: str) -> None:
    response = httpx.options(
        f"{serve_url}/chat",
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type",
        },
        timeout=5.0,
    )
    assert response.status_code in (200, 204)
    allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-client-info", "apikey", "content-type"} <= allowed
    assert "POST" in response.headers["access-control-allow-methods"].upper()


@pytest.fixture(scope="module")
def dead_upstream_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``serve`` configured with an OpenRouter URL where nothing listens."""
    env = functions_env(free_port(), tmp_path_factory.mktemp("dead-upstream-ledger"))
    with serving("serve (dead upstream)", env, accept=(503,)) as process:
        yield process.base_url


def test_health_is_503_when_upstream_is_down(dead_upstream_url: str) -> None:
    with httpx.Client(timeout=10.0) as http:
        client = SyncFunctionsClient(url=dead_upstream_url, headers={}, http_client=http)
        with pytest.raises(FunctionsHttpError) as caught:
            client.invoke("health", {"method": "GET"})
    assert caught.value.status == 503

    body = httpx.get(f"{dead_upstream_url}/health", headers=HEALTH_DETAIL, timeout=10.0).json()
    assert body["status"] == "down"
    assert body["down"] == ["upstream"]
    assert body["checks"]["upstream"]["ok"] is False


def test_chat_is_a_retryable_5xx_when_upstream_is_down(dead_upstream_url: str) -> None:
    headers = {"Authorization": f"Bearer {mint()}"}
    with httpx.Client(timeout=10.0) as http:
        client = SyncFunctionsClient(url=dead_upstream_url, headers=headers, http_client=http)
        with pytest.raises(FunctionsHttpError) as caught:
            client.invoke("chat", {"body": {"messages": [{"role": "user", "content": "anyone there?"}]}})
    assert caught.value.status in (502, 503, 504)

    response = httpx.post(
        f"{dead_upstream_url}/chat",
        headers=headers,
        json={"messages": [{"role": "user", "content": "anyone there?"}]},
        timeout=10.0,
    )
    assert response.status_code in (502, 503, 504)
    assert response.json()["error"]["code"] == response.status_code
    assert "retry-after" in response.headers, "waiting helps when the upstream is unreachable"


# -- the path Supabase's own clients call: ${SUPABASE_URL}/functions/v1/<name> ----------------------------


def test_supabase_client_invokes_chat_at_functions_v1(serve_url: str, fake: FakeUpstream) -> None:
    """``create_client(LOCAL_URL, key).functions.invoke`` reaches serve with no proxy in between."""
    from supabase import ClientOptions, create_client

    client = create_client(serve_url, "local-anon-key", ClientOptions(headers={"Authorization": f"Bearer {mint()}"}))
    raw = client.functions.invoke("chat", {"body": {"messages": [{"role": "user", "content": "via supabase-py"}]}})

    assert json.loads(raw)["choices"][0]["message"]["content"] == "Echo: via supabase-py"
    assert len(fake.chat_requests()) == 1


def test_functions_v1_streams_and_serves_every_function(serve_url: str) -> None:
    headers = {"Authorization": f"Bearer {mint()}"}
    with httpx.stream(
        "POST",
        f"{serve_url}/functions/v1/chat",
        headers=headers,
        json={"messages": [{"role": "user", "content": "stream me"}], "stream": True},
        timeout=10.0,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert len(events) > 2

    completion = httpx.post(
        f"{serve_url}/functions/v1/completion", headers=headers, json={"prompt": "hi"}, timeout=10.0
    )
    assert completion.json()["text"] == "Echo: hi"
    assert httpx.get(f"{serve_url}/functions/v1/health", timeout=10.0).json()["status"] == "ok"
    # The openai SDK appends /chat/completions to its base_url; that works under the Supabase path too.
    sdk_path = httpx.post(
        f"{serve_url}/functions/v1/chat/chat/completions",
        headers=headers,
        json={"messages": [{"role": "user", "content": "sdk"}]},
        timeout=10.0,
    )
    assert sdk_path.status_code == 200, sdk_path.text


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/functions/v1/nope"), ("GET", "/functions/v1"), ("PROPFIND", "/functions/v1/chat"), ("GET", "/nope")],
)
def test_browser_can_read_errors_on_any_path(serve_url: str, method: str, path: str) -> None:
    """Unknown functions and odd methods answer the envelope with CORS headers, so a web page sees why."""
    origin = "http://localhost:3000"
    response = httpx.request(method, f"{serve_url}{path}", headers={"Origin": origin}, timeout=5.0)

    assert response.status_code in (404, 405)
    assert response.json()["error"]["code"] == response.status_code
    assert response.headers["access-control-allow-origin"] in (origin, "*")
    exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
    assert {"retry-after", "x-request-id", "www-authenticate"} <= exposed


def test_preflight_on_functions_v1_and_unknown_paths(serve_url: str) -> None:
    for path in ("/functions/v1/chat", "/functions/v1/nope", "/nope"):
        response = httpx.options(
            f"{serve_url}{path}",
            headers={
                "Origin": "http://localhost:3000",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type, x-region",
            },
            timeout=5.0,
        )
        assert response.status_code == 204, path
        allowed = {h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "x-client-info", "apikey", "content-type", "x-region"} <= allowed


def test_a_401_tells_the_browser_why(serve_url: str) -> None:
    response = httpx.post(
        f"{serve_url}/functions/v1/chat",
        headers={"Origin": "http://localhost:3000", "Authorization": "Bearer not-a-jwt"},
        json={"messages": [{"role": "user", "content": "hi"}]},
        timeout=5.0,
    )
    assert response.status_code == 401
    assert "www-authenticate" in response.headers
    assert "www-authenticate" in response.headers["access-control-expose-headers"].lower()

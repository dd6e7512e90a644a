"""Each function on its own, as a deployment runs it: a bare ``functions-framework --target NAME --source
functions/NAME/main.py`` process (gunicorn + uvicorn worker), called at its root URL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from e2e_procs import BIN, FakeUpstream, functions_env
from openai import OpenAI

from helpers import HEALTH_DETAIL, HOST, free_port, mint
from procs import Process, stop_all

NAMES = ("chat", "completion", "health")
MESSAGES = [{"role": "user", "content": "hello bare function"}]


@pytest.fixture(scope="module")
def functions(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """name -> base URL of that function's own functions-framework process (all three start at once)."""
    # One ledger for the three, as deployed functions share one database.
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("functions-ledger"))
    processes: dict[str, Process] = {}
    try:
        for name in NAMES:
            port = free_port()
            argv = [
                str(BIN / "functions-framework"),
                "--target",
                name,
                "--source",
                f"functions/{name}/main.py",
                "--host",
                HOST,
                "--port",
                str(port),
            ]
            processes[name] = Process(f"functions-framework {name}", argv, env, port)
        for process in processes.values():
            # Every path of a bare function reaches the function: health answers GET, the others refuse it.
            process.wait_ready("/", accept=(200,) if process.name.endswith("health") else (405,))
        yield {name: process.base_url for name, process in processes.items()}
    finally:
        stop_all(list(processes.values()))


def test_health_at_root(functions: dict[str, str]) -> None:
    response = httpx.get(functions["health"] + "/", headers=HEALTH_DETAIL, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["upstream"]["ok"] is True


def test_chat_at_root(functions: dict[str, str], fake: FakeUpstream) -> None:
    response = httpx.post(
        functions["chat"] + "/",
        headers={"Authorization": f"Bearer {mint()}"},
        json={"model": "openai/gpt-4o", "messages": MESSAGES},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello bare function"


def test_chat_with_openai_sdk_at_v1(functions: dict[str, str], fake: FakeUpstream) -> None:
    with OpenAI(base_url=functions["chat"] + "/v1", api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        completion = sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
        assert completion.choices[0].message.content == "Echo: hello bare function"

        stream = sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "Echo: hello bare function"

        with pytest.raises(openai.AuthenticationError):
            sdk.chat.completions.create(
                model="openai/gpt-4o", messages=MESSAGES, extra_headers={"Authorization": "Bearer nope"}
            )


def test_chat_with_openai_sdk_at_root(functions: dict[str, str], fake: FakeUpstream) -> None:
    # base_url=<function URL>: the SDK posts to /chat/completions, which the function also answers.
    with OpenAI(base_url=functions["chat"], api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        completion = sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == "Echo: hello bare function"


def test_completion_at_root(functions: dict[str, str], fake: FakeUpstream) -> None:
    response = httpx.post(
        functions["completion"] + "/",
        headers={"Authorization": f"Bearer {mint()}"},
        json={"prompt": "structured please", "response_format": {"type": "json_object"}},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["data"] == {"echo": "structured please"}
    assert body["usage"]["total_tokens"] > 0


def test_completion_without_token_is_401(functions: dict[str, str], fake: FakeUpstream) -> None:
    response = httpx.post(functions["completion"] + "/", json={"prompt": "hi"}, timeout=10.0)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
    assert fake.chat_requests() == []


def test_chat_stream_error_and_retry_after_survive_gunicorn(functions: dict[str, str], fake: FakeUpstream) -> None:
    fake.script(
        {"fault": "midstream_error", "after": 2, "code": 429},
        {"fault": "status", "status": 429, "headers": {"Retry-After": "3600"}, "repeat": 2},
    )
    with OpenAI(base_url=functions["chat"] + "/v1", api_key=mint(), max_retries=0, timeout=10.0) as sdk:
        stream = sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES, stream=True)
        pieces: list[str] = []
        with pytest.raises(openai.APIError), stream:
            for chunk in stream:
                pieces.extend(c.delta.content for c in chunk.choices if c.delta.content)
        assert "".join(pieces) == "Echo: hello "

        with pytest.raises(openai.InternalServerError) as caught:
            sdk.chat.completions.create(model="openai/gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert int(caught.value.response.headers["retry-after"]) >= 3000


# What functions-framework's own router would answer in plain text: methods outside its seven, and
# GET/HEAD of /robots.txt and /favicon.ico. Each must be the function's own answer.
ODD_REQUESTS = [
    ("chat", "TRACE", "/", 405, "method_not_allowed"),
    ("chat", "PROPFIND", "/v1/chat/completions", 405, "method_not_allowed"),
    ("chat", "GET", "/robots.txt", 404, "not_found"),
    ("chat", "GET", "/favicon.ico", 404, "not_found"),
    ("chat", "POST", "/no/such/path", 404, "not_found"),
    ("completion", "CONNECT", "/", 405, "method_not_allowed"),
    ("completion", "GET", "/favicon.ico", 404, "not_found"),
    ("health", "TRACE", "/", 405, "method_not_allowed"),
    ("health", "PROPFIND", "/", 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("name", "method", "path", "status", "kind"), ODD_REQUESTS)
def test_odd_methods_and_framework_paths_get_the_envelope(
    functions: dict[str, str], name: str, method: str, path: str, status: int, kind: str
) -> None:
    response = httpx.request(method, functions[name] + path, headers={"Origin": "https://app.example"}, timeout=10.0)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == status
    assert response.json()["error"]["type"] == kind
    assert response.headers["access-control-allow-origin"] == "*"
    assert len(response.headers["x-request-id"]) == 32


def test_head_of_a_framework_path_is_the_functions_404(functions: dict[str, str]) -> None:
    response = httpx.head(functions["chat"] + "/robots.txt", timeout=10.0)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("name", "method", "path", "body"),
    [
        ("chat", "POST", "/chat", {"messages": [{"role": "user", "content": "via a load balancer"}]}),
        ("chat", "POST", "/chat/chat/completions", {"messages": [{"role": "user", "content": "sdk via LB"}]}),
        ("chat", "POST", "/chat/v1/chat/completions", {"messages": [{"role": "user", "content": "v1 via LB"}]}),
        ("completion", "POST", "/completion", {"prompt": "via a load balancer"}),
        ("health", "GET", "/health", None),
    ],
)
def test_a_load_balancer_that_keeps_the_path_prefix_reaches_the_function(
    functions: dict[str, str], name: str, method: str, path: str, body: dict[str, object] | None
) -> None:
    """Google's URL map sends /chat/* to the chat function without stripping /chat (docs/deploy.md)."""
    response = httpx.request(
        method, functions[name] + path, json=body, headers={"Authorization": f"Bearer {mint()}"}, timeout=10.0
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("name", "path"), [("chat", "/chat/nope"), ("chat", "/completion"), ("health", "/chat")])
def test_other_paths_are_still_unknown(functions: dict[str, str], name: str, path: str) -> None:
    response = httpx.request(
        "POST" if name != "health" else "GET",
        functions[name] + path,
        headers={"Authorization": f"Bearer {mint()}"},
        timeout=10.0,
    )
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found"

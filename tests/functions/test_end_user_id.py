"""OpenRouter's `user` field: a stable pseudonym per signed-in user, so a provider that blocks one abusive end
user blocks only them (reference: "without it one abusive end user can get the whole account's traffic
blocked"), and never the user id itself."""

from __future__ import annotations

import httpx

from helpers import USER_ID, bearer, mint
from openrouter_devtools.fake_upstream import FakeOpenRouter

HI = {"messages": [{"role": "user", "content": "hi"}]}
OTHER_USER = "0b7c2a2e-5d0f-4c8b-9a37-1f6a3e9d2c44"


async def sent_user(
    client: httpx.AsyncClient, fake: FakeOpenRouter, path: str, body: dict[str, object], token: str
) -> object:
    fake.received.clear()
    response = await client.post(path, json=body, headers=bearer(token))
    assert response.status_code == 200, response.text
    return fake.received[-1].json().get("user")


async def test_each_user_gets_a_stable_pseudonym_on_every_function(
    client: httpx.AsyncClient, fake: FakeOpenRouter
) -> None:
    first = await sent_user(client, fake, "/chat", HI, mint())
    again = await sent_user(client, fake, "/completion", {"prompt": "hi"}, mint())
    streamed = await sent_user(client, fake, "/chat", {**HI, "stream": True}, mint())
    other = await sent_user(client, fake, "/chat", HI, mint(sub=OTHER_USER))

    assert isinstance(first, str) and first.startswith("u-") and len(first) == 34
    assert first == again == streamed
    assert other != first
    assert USER_ID not in first and USER_ID.replace("-", "") not in first


async def test_a_caller_cannot_pick_someone_elses_id(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    mine = await sent_user(client, fake, "/chat", HI, mint())
    forged = await sent_user(client, fake, "/chat", {**HI, "user": "u-victim"}, mint())
    assert forged == mine


async def test_a_trusted_server_caller_names_its_own_end_user(client: httpx.AsyncClient, fake: FakeOpenRouter) -> None:
    service = mint(role="service_role", sub=None, aud=None, email=None, is_anonymous=None)
    assert await sent_user(client, fake, "/chat", {**HI, "user": "customer-42"}, service) == "customer-42"
    assert str(await sent_user(client, fake, "/chat", HI, service)).startswith("u-")


def test_pseudonyms_are_remembered_within_a_bound_and_the_same_after_it_starts_over() -> None:
    """The pseudonym is kept per user (no HMAC per request), for at most PSEUDONYMS_KEPT users at once; a
    user forgotten in between gets the same pseudonym again, and another API key gives another one."""
    from openrouter_functions.config import Settings
    from openrouter_functions.runtime import PSEUDONYMS_KEPT, Runtime

    runtime = Runtime(Settings.from_env({"OPENROUTER_API_KEY": "sk-or-v1-" + "a" * 64}))
    first = runtime.end_user_pseudonym(USER_ID)
    for n in range(PSEUDONYMS_KEPT + 10):
        runtime.end_user_pseudonym(f"user-{n}")
        assert len(runtime._pseudonyms) <= PSEUDONYMS_KEPT
    assert USER_ID not in runtime._pseudonyms  # forgotten when the cache started over
    assert runtime.end_user_pseudonym(USER_ID) == first
    other_key = Runtime(Settings.from_env({"OPENROUTER_API_KEY": "sk-or-v1-" + "b" * 64}))
    assert other_key.end_user_pseudonym(USER_ID) != first

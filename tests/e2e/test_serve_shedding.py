"""A full instance sheds load at once: with ``MAX_IN_FLIGHT=2`` and two slow calls running, a third gets
503 ``overloaded`` with ``Retry-After`` immediately, before admission (its quota is untouched)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
from e2e_procs import FakeUpstream, Served, functions_env, serving

from helpers import mint

SLOW_SECONDS = 3.0
MESSAGES = [{"role": "user", "content": "slow one"}]


def _post(url: str, user: str, results: dict[str, httpx.Response]) -> None:
    results[user] = httpx.post(
        url, headers={"Authorization": f"Bearer {mint(sub=user)}"}, json={"messages": MESSAGES}, timeout=15.0
    )


def test_third_call_over_the_limit_is_refused_at_once(fake: FakeUpstream, tmp_path: Path) -> None:
    env = functions_env(fake.port, tmp_path)
    env["MAX_IN_FLIGHT"] = "2"
    fake.script({"fault": "slow", "delay": SLOW_SECONDS, "repeat": 2})
    with serving("serve (MAX_IN_FLIGHT=2)", env) as process:
        served = Served(process.base_url, tmp_path / "ledger.sqlite3")
        url = f"{served.url}/chat"
        results: dict[str, httpx.Response] = {}
        slow_users = [str(uuid.uuid4()) for _ in range(2)]
        threads = [threading.Thread(target=_post, args=(url, user, results)) for user in slow_users]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5.0
        while len(fake.chat_requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(fake.chat_requests()) == 2, "the two slow calls never reached upstream"

        third = str(uuid.uuid4())
        started = time.monotonic()
        refused = httpx.post(
            url,
            headers={"Authorization": f"Bearer {mint(sub=third)}", "Origin": "https://app.example"},
            json={"messages": MESSAGES},
            timeout=15.0,
        )
        took = time.monotonic() - started
        for thread in threads:
            thread.join(15.0)

        assert refused.status_code == 503
        assert refused.json() == {
            "error": {
                "code": 503,
                "type": "overloaded",
                "message": "This server is at capacity; try again in a moment.",
            }
        }
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["access-control-allow-origin"] == "*"
        assert took < SLOW_SECONDS / 2, f"refused after {took:.2f}s: it waited instead of shedding"
        assert len(fake.chat_requests()) == 2  # nothing reached upstream for it
        assert [results[u].status_code for u in slow_users] == [200, 200]

        rows = served.ledger_rows("select status, error_type from request_log where user_id = ?", third)
        assert [tuple(r) for r in rows] == [(503, "overloaded")]
        assert served.ledger_rows("select * from usage_daily where user_id = ?", third, expect=0) == []
        # The slots are free again: a fourth call goes through.
        again = httpx.post(
            url, headers={"Authorization": f"Bearer {mint(sub=third)}"}, json={"messages": MESSAGES}, timeout=15.0
        )
        assert again.status_code == 200, again.text

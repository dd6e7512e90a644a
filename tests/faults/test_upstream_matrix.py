"""Every fault the fake OpenRouter can play (``FAULTS``), plain and streamed, through a real ``serve``
process: no 500 ``internal`` from our code, no hang, exactly one ledger row per request and no
reservation left held. The fault is scripted for every attempt (the first and the retry), so each
request meets it whatever the retry rule decides."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from e2e_procs import FakeUpstream, Served, functions_env, serving
from fault_kit import ledger_query, new_user

from helpers import mint
from openrouter_devtools.fake_upstream import FAULTS

UPSTREAM_TIMEOUT = 1.5  # OPENROUTER_TIMEOUT: how long a hanging upstream holds an attempt
CLIENT_TIMEOUT = 20.0  # a request still running after this is a hang
ATTEMPTS = 2  # OPENROUTER_MAX_RETRIES=1
# Parameters that keep each fault quick; the rest are the fake's defaults.
STEP: dict[str, dict[str, Any]] = {
    "slow": {"delay": 0.3},
    "keepalive": {"count": 3, "delay": 0.1},
    "cut": {"after": 2},
    "midstream_error": {"after": 2},
    "status": {"status": 500},
}


@dataclass(frozen=True)
class Outcome:
    fault: str
    stream: bool
    status: int | None
    kind: str | None  # the error type answered (or carried by the stream's error event)
    seconds: float
    rows: int


@pytest.fixture(scope="module")
def served(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ledger = tmp_path_factory.mktemp("matrix-ledger")
    env = functions_env(upstream.port, ledger)
    env.update(OPENROUTER_TIMEOUT=str(UPSTREAM_TIMEOUT), OPENROUTER_MAX_RETRIES=str(ATTEMPTS - 1))
    with serving("serve (fault matrix)", env) as process:
        yield Served(process.base_url, ledger / "ledger.sqlite3")


def _error_kind(response: httpx.Response, text: str) -> str | None:
    if response.status_code != 200:
        try:
            return str(json.loads(text)["error"]["type"])
        except (ValueError, KeyError, TypeError):
            return "not-an-envelope"
    for line in text.splitlines():
        if line.startswith("data: {") and '"error"' in line:
            return str(json.loads(line[len("data: ") :])["error"]["metadata"]["type"])
    return None


def _play(served: Served, fake: FakeUpstream, fault: str, stream: bool) -> Outcome:
    fake.reset()
    fake.script({"fault": fault, "repeat": ATTEMPTS, **STEP.get(fault, {})})
    user = new_user()
    body = {"model": "openai/gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "one two three"}]}
    started = time.monotonic()
    status: int | None = None
    kind: str | None = "hang"
    try:
        with (
            httpx.Client(timeout=CLIENT_TIMEOUT) as http,
            http.stream(
                "POST", f"{served.url}/chat", json=body, headers={"Authorization": f"Bearer {mint(sub=user)}"}
            ) as response,
        ):
            text = "".join(response.iter_text())
            status, kind = response.status_code, _error_kind(response, text)
    except httpx.TimeoutException:
        pass
    seconds = time.monotonic() - started
    rows = served.ledger_rows("select request_id from request_log where user_id = ?", user)
    return Outcome(fault, stream, status, kind, round(seconds, 2), len(rows))


def test_every_fault_plain_and_streamed(served: Served, upstream: FakeUpstream) -> None:
    outcomes = [_play(served, upstream, fault, stream) for fault in sorted(FAULTS) for stream in (False, True)]
    upstream.reset()

    internal = [o for o in outcomes if o.kind == "internal" or o.status == 500]
    hangs = [o for o in outcomes if o.kind == "hang" or o.status is None]
    lost_or_doubled = [o for o in outcomes if o.rows != 1]
    held = ledger_query(served.ledger, "select count(*) from ledger_reservations")[0][0]
    table = "\n".join(
        f"  {o.fault:16} {'stream' if o.stream else 'plain ':6} {o.status} {o.kind} {o.seconds}s rows={o.rows}"
        for o in outcomes
    )
    print(
        f"\nfault matrix: {len(outcomes)} requests, {len(internal)} 5xx internal, {len(hangs)} hangs, "
        f"{len(lost_or_doubled)} lost or doubled rows, {held} reservations held\n{table}"
    )
    assert len(outcomes) == 2 * len(FAULTS)
    assert internal == [], table
    assert hangs == [], table
    assert lost_or_doubled == [], table
    assert held == 0
    assert all(o.seconds < ATTEMPTS * UPSTREAM_TIMEOUT + 5.0 for o in outcomes), table
    # The control case: a reply is a reply.
    assert [(o.status, o.kind) for o in outcomes if o.fault == "reply"] == [(200, None), (200, None)]

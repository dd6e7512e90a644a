"""A PostgreSQL outage and its end, on a real throwaway server behind a real ``serve`` process: while it
is down every call is a clean, quick 503 ``ledger_unavailable`` (no 500, no waiting out a timeout); once
it answers again the first call is admitted within a second or two, not after the breaker's and the
pool's reconnect backoff (before: 4.5 s after this 10.5 s outage, up to 24 s after longer ones)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_procs import FakeUpstream, functions_env, serving

from helpers import mint
from pgcluster import PgCluster, running_cluster

OUTAGE_SECONDS = 10.5
RECOVERY_BOUND = 3.0  # the target is 1-2 s; generous for a loaded machine
PROBE_EVERY = 0.1
CALL_TIMEOUT = 15.0
MESSAGES = [{"role": "user", "content": "during the outage"}]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with running_cluster("faults_outage") as cluster:
        if cluster.datadir is None:
            pytest.skip("TEST_DATABASE_URL points at a shared server: no outage can be staged")
        yield cluster


def _call(http: httpx.Client, url: str, user: str) -> tuple[int, str | None, float]:
    started = time.monotonic()
    response = http.post(url, headers={"Authorization": f"Bearer {mint(sub=user)}"}, json={"messages": MESSAGES})
    took = time.monotonic() - started
    kind = response.json()["error"]["type"] if response.status_code != 200 else None
    return response.status_code, kind, took


def test_outage_is_503_and_recovery_takes_seconds(pg: PgCluster, fake: FakeUpstream, tmp_path: Path) -> None:
    env = functions_env(fake.port, tmp_path)
    env.update(DATABASE_URL=pg.dsn, LEDGER_FAILURE_MODE="closed")
    user = str(uuid.uuid4())
    with serving("serve (postgres outage)", env) as process, httpx.Client(timeout=CALL_TIMEOUT) as http:
        url = f"{process.base_url}/chat"
        assert _call(http, url, user)[0] == 200  # the pool holds a connection from before the outage

        pg.stop_server()
        during: list[tuple[int, str | None, float]] = []
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            during.append(_call(http, url, user))
            time.sleep(PROBE_EVERY)
        pg.start_server()
        back = time.monotonic()

        after: list[tuple[int, str | None, float]] = []
        recovered_after: float | None = None
        for _ in range(int(10.0 / PROBE_EVERY)):
            after.append(_call(http, url, user))
            if after[-1][0] == 200:
                recovered_after = time.monotonic() - back
                break
            time.sleep(PROBE_EVERY)

    print(
        f"\nPostgreSQL outage {OUTAGE_SECONDS:.1f}s: {len(during)} calls during it, slowest {max(t for *_, t in during):.2f}s; "
        f"first 200 {recovered_after if recovered_after is None else round(recovered_after, 2)}s after it answered again"
    )
    assert {(status, kind) for status, kind, _ in during} == {(503, "ledger_unavailable")}
    assert max(t for *_, t in during) < 2.0  # each refused at once, none waits out a pool or call timeout
    assert recovered_after is not None, after
    assert recovered_after <= RECOVERY_BOUND, (recovered_after, after)
    # Nothing admitted during the outage, every admitted call settled: no reservation held.
    assert pg.psql("select count(*) from public.ledger_reservations").strip() == "0"
    assert pg.psql(f"select count(*) from public.request_log where user_id = '{user}' and status = 200").strip() == "2"

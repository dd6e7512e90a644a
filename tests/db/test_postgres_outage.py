"""The direct-Postgres ledger through a server restart: while the server is down a call fails at once
(no wait for the pool), and the first call after it is back succeeds at once (no wait for the pool's
reconnect backoff, which grows to 32 s), with no connection from before the restart handed out."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from openrouter_functions.ledger import LedgerUnavailable, Limits
from openrouter_functions.ledger.postgres import PostgresLedger
from pgcluster import PgCluster


@pytest.fixture
def restartable(pg: PgCluster) -> Iterator[PgCluster]:
    if pg.datadir is None:
        pytest.skip("TEST_DATABASE_URL points at a shared server: no restart can be staged")
    try:
        yield pg
    finally:
        try:
            pg.psql("select 1")
        except subprocess.CalledProcessError:  # the test stopped with the server down
            pg.start_server()


async def test_a_restart_costs_no_backoff(restartable: PgCluster) -> None:
    pg = restartable
    ledger = PostgresLedger(pg.dsn, pool_size=2)
    user = str(uuid.uuid4())
    try:
        for i in range(2):  # the pool now holds connections that will die with the server
            assert (await ledger.begin(f"outage-{i}-{user}", user, 0, Limits())).admitted

        pg.stop_server()
        for i in range(3):
            started = time.monotonic()
            with pytest.raises(LedgerUnavailable):
                await ledger.begin(f"down-{i}-{user}", user, 0, Limits())
            assert time.monotonic() - started < 1.0
        pg.start_server()

        started = time.monotonic()
        admission = await ledger.begin(f"back-{user}", user, 0, Limits())
        took = time.monotonic() - started
        assert admission.admitted
        assert took < 1.0, took
        # Back on a fresh pool: the next calls use it.
        assert await ledger.check()
        assert (await ledger.begin(f"after-{user}", user, 0, Limits())).admitted
    finally:
        await ledger.aclose()

"""The database tests' one fixture: a throwaway PostgreSQL with the Supabase stand-in and our migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pgcluster import PgCluster, PgUnavailable


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One cluster for the session; pgTAP files roll back and concurrency tests use their own users."""
    try:
        cluster = PgCluster.start()
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            raise  # CI installs postgresql-15: a missing server there is a broken build, not a skip
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()

"""The database tests' one fixture: a throwaway PostgreSQL with the Supabase stand-in and our migrations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgcluster import PgCluster, running_cluster


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    """One cluster for the session; pgTAP files roll back and concurrency tests use their own users."""
    with running_cluster() as cluster:
        yield cluster

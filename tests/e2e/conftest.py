"""End-to-end fixtures: a fake OpenRouter process and an ``openrouter-functions serve`` process, once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_procs import UPSTREAM_KEY, FakeUpstream, Served, clean_env, cli, functions_env, serving

from helpers import free_port
from procs import Process


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    port = free_port()
    process = Process(
        "fake-upstream", cli("fake-upstream", "--port", str(port), "--api-key", UPSTREAM_KEY), clean_env(), port
    )
    try:
        process.wait_ready("/api/v1/models")
        upstream = FakeUpstream(process)
        try:
            yield upstream
        finally:
            upstream.close()
    finally:
        process.stop()


@pytest.fixture
def fake(fake_upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The session's fake upstream with an empty script and request log, reset again afterwards."""
    fake_upstream.reset()
    yield fake_upstream
    fake_upstream.reset()


@pytest.fixture(scope="session")
def served(fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``openrouter-functions serve`` (``/chat``, ``/completion``, ``/health``, ``/metrics``) on the fake upstream."""
    ledger = tmp_path_factory.mktemp("serve-ledger")
    with serving("serve", functions_env(fake_upstream.port, ledger)) as process:
        yield Served(process.base_url, ledger / "ledger.sqlite3")


@pytest.fixture(scope="session")
def serve_url(served: Served) -> str:
    return served.url

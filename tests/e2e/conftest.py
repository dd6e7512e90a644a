"""End-to-end fixtures: a fake OpenRouter process and an ``openrouter-functions serve`` process, once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_procs import FakeUpstream, Served, fake_upstream_process, functions_env, serving


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    with fake_upstream_process() as upstream:
        yield upstream


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

"""Edge front door fixtures: the fake OpenRouter, a real ``openrouter-functions serve`` on it, and the Deno
front door (``openrouter-functions edge``) forwarding to that serve, each a process of its own.

The process plumbing is the end-to-end tests' (``tests/e2e/e2e_procs.py``), reached by path so that this
folder runs alone as well as in the whole run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # e2e_procs: the process helpers

from e2e_procs import FakeUpstream, Served, fake_upstream_process, functions_env, serving
from edge_support import ALLOWED_ORIGIN, RPM, edge_process


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream_process("fake-upstream (edge)") as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    """The fake OpenRouter with an empty script and request log, reset again afterwards."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture(scope="session")
def served(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The Python functions the front door forwards to (``helpers.mint()`` tokens, SQLite ledger)."""
    ledger = tmp_path_factory.mktemp("edge-serve-ledger")
    env = functions_env(upstream.port, ledger)
    env.update(ALLOWED_ORIGINS=ALLOWED_ORIGIN, DEFAULT_RPM=str(RPM))
    with serving("serve (behind edge)", env) as process:
        yield Served(process.base_url, ledger / "ledger.sqlite3")


@pytest.fixture(scope="session")
def edge(served: Served) -> Iterator[str]:
    """The front door's base URL: what a web app has as ``SUPABASE_URL`` (``/functions/v1/<name>`` below it)."""
    with edge_process(served.url) as process:
        process.wait_ready("/functions/v1/health")
        yield process.base_url

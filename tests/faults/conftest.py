"""Fault suite fixtures: one fake OpenRouter process for the session; each test starts its own servers.

The process plumbing is shared with the end-to-end tests (``tests/e2e/e2e_procs.py``), which this suite
reaches by path: it runs alone as well as in the whole run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from e2e_procs import FakeUpstream, fake_upstream_process


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    """The fake OpenRouter, reset before each use by ``fake``."""
    with fake_upstream_process("fake-upstream (faults)") as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> Iterator[FakeUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()

"""In-process function tests: the real functions/<name>/main.py apps over httpx.ASGITransport,
talking to the fake OpenRouter on loopback. Nothing sleeps for real (retry sleeps are recorded)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from helpers import HEALTH_TOKEN, JWT_SECRET, ROOT, UPSTREAM_KEY, Sleeps
from openrouter_devtools.fake_upstream import FakeOpenRouter
from openrouter_devtools.serve import FunctionsRouter, build_app
from openrouter_functions.config import Settings
from openrouter_functions.runtime import Runtime, reset_runtime


@pytest.fixture(scope="session")
def router() -> FunctionsRouter:
    """The three real function files, loaded once through functions-framework."""
    return build_app(ROOT / "functions")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenRouter]:
    async with FakeOpenRouter(api_key=UPSTREAM_KEY) as server:
        yield server


Configure = Callable[..., Runtime]


@pytest.fixture
async def configure(fake: FakeOpenRouter, sleeps: Sleeps, tmp_path: Path) -> AsyncIterator[Configure]:
    """Install a runtime built from env-style settings (defaults: fake upstream + HS256 secret)."""
    runtimes: list[Runtime] = []

    def install(**env: str | None) -> Runtime:
        values: dict[str, str] = {
            "OPENROUTER_API_KEY": UPSTREAM_KEY,
            "OPENROUTER_BASE_URL": fake.url,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "HEALTH_CACHE_SECONDS": "0",
            "HEALTH_TOKEN": HEALTH_TOKEN,
            "LEDGER_SQLITE_PATH": str(tmp_path / "ledger.sqlite3"),
        }
        for key, value in env.items():
            if value is None:
                values.pop(key.upper(), None)
            else:
                values[key.upper()] = value
        runtime = reset_runtime(Settings.from_env(values))
        assert runtime is not None
        runtime.sleep = sleeps
        runtimes.append(runtime)
        return runtime

    yield install
    for runtime in runtimes:
        await runtime.aclose()
    reset_runtime()


@pytest.fixture
async def client(router: FunctionsRouter, configure: Configure) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the functions at /chat, /completion, /health (runtime from `configure`)."""
    configure()
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://functions.test") as http:
        yield http
    reset_runtime()

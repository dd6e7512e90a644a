"""`openrouter-functions serve` with DATABASE_URL: chat (plain and streamed) and completion through the
openai SDK, then the rows and sums read back from a real PostgreSQL with the real migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from e2e_procs import FakeUpstream, functions_env, serving
from openai import OpenAI

from helpers import mint
from pgcluster import PgCluster, running_cluster


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    with running_cluster("serve_e2e") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def serve_pg(pg: PgCluster, fake_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = functions_env(fake_upstream.port, tmp_path_factory.mktemp("unused-sqlite"))
    env.update(DATABASE_URL=pg.dsn, DEFAULT_DAILY_REQUESTS="3")
    with serving("serve-postgres", env) as process:
        yield process.base_url


def test_rows_and_sums_land_in_postgres(serve_pg: str, pg: PgCluster, fake: FakeUpstream) -> None:
    user = str(uuid.uuid4())
    sdk = OpenAI(base_url=f"{serve_pg}/chat", api_key=mint(sub=user), max_retries=0, timeout=10.0)
    plain = sdk.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "one two"}])
    chunks = list(
        sdk.chat.completions.create(
            model="openai/gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "three four five"}]
        )
    )
    streamed_usage = chunks[-1].usage
    assert plain.usage is not None
    assert streamed_usage is not None
    import openai

    sdk.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "six"}])
    with pytest.raises(openai.RateLimitError):  # DEFAULT_DAILY_REQUESTS=3
        sdk.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "seven"}])

    rows = pg.psql(
        f"select model, status, prompt_tokens, completion_tokens, cost_usd from public.request_log "
        f"where user_id = '{user}' order by created_at"
    ).split()
    parsed = [r.split("|") for r in rows]
    assert [(p[0], p[1]) for p in parsed] == [
        ("openai/gpt-4o", "200"),
        ("openai/gpt-4o-mini", "200"),
        ("openai/gpt-4o", "200"),
        ("openai/gpt-4o", "429"),
    ]
    assert (int(parsed[1][2]), int(parsed[1][3])) == (streamed_usage.prompt_tokens, streamed_usage.completion_tokens)
    day = (
        pg.psql(
            f"select requests, completion_tokens, reserved_usd, in_flight from public.usage_daily "
            f"where user_id = '{user}'"
        )
        .strip()
        .split("|")
    )
    assert int(day[0]) == 3
    assert int(day[1]) == plain.usage.completion_tokens + streamed_usage.completion_tokens + 2
    assert (float(day[2]), int(day[3])) == (0.0, 0)

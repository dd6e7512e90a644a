"""The direct-Postgres thread store end to end, on a real PostgreSQL with the migrations applied.

What each SQL function answers is pinned down in supabase/tests/database/03_threads.test.sql; here the
store drives them as the server would, several instances (connections) at once where it matters, and a
signed-in user's own session (the `authenticated` role, as PostgREST sets it) tries what it must not.
Every test uses fresh user ids, so they share the session's cluster without interfering.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from helpers import mint
from openrouter_functions.threads import (
    MessageEnd,
    StopAnswer,
    ThreadBusy,
    ThreadNotFound,
    ThreadStoreUnavailable,
    Turn,
    TurnRequest,
    estimate_tokens,
)
from openrouter_functions.threads.postgres import PostgresThreadStore
from openrouter_functions.threads.rest import SupabaseRestThreadStore
from pgcluster import PgCluster
from postgrest_stand_in import PostgrestStandIn

SUPABASE_URL = "https://abcdefghijklmnop.supabase.co"
SERVICE_ROLE_KEY = mint(
    role="service_role", sub=None, aud=None, email=None, is_anonymous=None, iss="supabase", exp=None
)
TIMEOUT = 20.0  # seconds for a test's concurrent work: a deadlock or a lost wake-up fails, never hangs


def new_user() -> str:
    return str(uuid.uuid4())


def request(
    user: str, thread: str | None, text: str, *, max_messages: int = 50, max_tokens: int = 16_000, **more: Any
) -> TurnRequest:
    return TurnRequest(
        user_id=user,
        thread_id=thread,
        user_text=text,
        model=more.pop("model", "test/model"),
        request_id=f"req-{uuid.uuid4()}",
        max_messages=max_messages,
        max_tokens=max_tokens,
        stale_seconds=more.pop("stale_seconds", 60),
        **more,
    )


@pytest.fixture
async def store(pg: PgCluster) -> AsyncIterator[PostgresThreadStore]:
    threads = PostgresThreadStore(pg.dsn, pool_size=8)
    yield threads
    await threads.aclose()


async def rows(pg: PgCluster, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(pg.dsn, autocommit=True) as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def messages(pg: PgCluster, thread_id: str) -> list[tuple[Any, ...]]:
    return await rows(
        pg, "select seq, role, content, status, model from public.messages where thread_id = %s order by seq", thread_id
    )


async def test_a_new_thread_and_its_next_turn(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()

    first = await store.begin_turn(request(user, None, "What is RLS?\nIn short.", system="Be brief."))

    assert first.created
    assert first.history == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is RLS?\nIn short."},
    ]
    assert await rows(
        pg, "select user_id::text, title, model, system_prompt from public.threads where id = %s", first.thread_id
    ) == [
        (user, "What is RLS?", "test/model", "Be brief.")  # the title: title_for(the first message)
    ]
    assert await store.progress(first.message_id, "Row level") is True
    assert await store.finish(first.message_id, MessageEnd("complete", "Row level security.", model="served/model"))

    second = await store.begin_turn(request(user, first.thread_id, "And views?", model="other/model"))

    assert (second.thread_id, second.created, second.dropped) == (first.thread_id, False, 0)
    assert second.history == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is RLS?\nIn short."},
        {"role": "assistant", "content": "Row level security."},
        {"role": "user", "content": "And views?"},
    ]
    assert await messages(pg, first.thread_id) == [
        (1, "user", "What is RLS?\nIn short.", "complete", None),
        (2, "assistant", "Row level security.", "complete", "served/model"),
        (3, "user", "And views?", "complete", None),
        (4, "assistant", "", "streaming", "other/model"),
    ]
    ids = await rows(pg, "select id::text from public.messages where thread_id = %s order by seq", first.thread_id)
    assert (second.user_message_id, second.message_id) == (ids[2][0], ids[3][0])


async def test_the_history_budget_over_30_turns(store: PostgresThreadStore) -> None:
    user = new_user()
    first = await store.begin_turn(request(user, None, "u1", system="Be brief."))
    await store.finish(first.message_id, MessageEnd("complete", "a1" * 20))
    for k in range(2, 31):
        turn = await store.begin_turn(request(user, first.thread_id, f"u{k}"))
        await store.finish(turn.message_id, MessageEnd("complete", f"a{k}" * 20))

    # Ten messages: nine earlier ones fit by count (turn 26's answer .. turn 30's), but a history does not
    # start with an answer: whole turns 27..30, then the new message.
    by_count = await store.begin_turn(request(user, first.thread_id, "next", max_messages=10))
    assert by_count.history[0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in by_count.history[1:]] == [
        text for k in range(27, 31) for text in (f"u{k}", f"a{k}" * 20)
    ] + ["next"]
    assert by_count.dropped == 60 - 8
    await store.finish(by_count.message_id, MessageEnd("failed", "", error_type="upstream_error"))

    # Tokens: the system prompt, the new message and the latest three whole turns fit exactly; one token
    # less and the oldest of them goes, and its answer with it. The failed turn just above is not sent,
    # but its question is.
    earlier = ["next", *(text for k in (30, 29, 28) for text in (f"a{k}" * 20, f"u{k}"))]
    exact = sum(estimate_tokens(text) for text in ["Be brief.", "again", *earlier])
    fits = await store.begin_turn(request(user, first.thread_id, "again", max_tokens=exact))
    assert [m["content"] for m in fits.history] == ["Be brief.", *reversed(earlier), "again"]
    assert fits.dropped == 61 - 7
    await store.finish(fits.message_id, MessageEnd("complete", "ok"))

    tight = await store.begin_turn(request(user, first.thread_id, "again", max_tokens=exact))
    # The same budget a turn later: the new turn ("again", "ok") takes the room of the oldest one kept above.
    assert tight.history[1] == {"role": "user", "content": "u29"}
    await store.finish(tight.message_id, MessageEnd("complete", "ok"))

    alone = await store.begin_turn(request(user, first.thread_id, "x" * 10_000, max_tokens=100))
    assert alone.history == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x" * 10_000}]
    assert alone.dropped == 60 + 1 + 4  # the failed answer is not counted: it could not have been sent


async def test_a_running_generation_makes_the_thread_busy_until_it_ends(store: PostgresThreadStore) -> None:
    user = new_user()
    first = await store.begin_turn(request(user, None, "one"))

    with pytest.raises(ThreadBusy) as busy:
        await store.begin_turn(request(user, first.thread_id, "two"))
    assert busy.value.message_id == first.message_id

    await store.finish(first.message_id, MessageEnd("complete", "1"))
    second = await store.begin_turn(request(user, first.thread_id, "two"))
    assert second.history[-1] == {"role": "user", "content": "two"}


async def test_a_dead_instances_generation_does_not_block_the_thread(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()
    first = await store.begin_turn(request(user, None, "one"))
    await store.progress(first.message_id, "half")
    await rows(
        pg, "update public.messages set updated_at = now() - interval '90 seconds' where id = %s", first.message_id
    )

    with pytest.raises(ThreadBusy):  # not stale for a 120-second limit
        await store.begin_turn(request(user, first.thread_id, "two", stale_seconds=120))
    second = await store.begin_turn(request(user, first.thread_id, "two", stale_seconds=60))

    assert [m["content"] for m in second.history] == ["one", "two"]
    assert await rows(
        pg, "select status, error_type, content from public.messages where id = %s", first.message_id
    ) == [("failed", "interrupted", "half")]


async def test_concurrent_turns_on_one_thread_one_runs_the_others_are_busy(
    pg: PgCluster, store: PostgresThreadStore
) -> None:
    """Eight instances start a turn on one thread at the same moment (all queued on its row lock first):
    exactly one turn starts, the seven others are told which message runs, never two are streaming."""
    user = new_user()
    first = await store.begin_turn(request(user, None, "start"))
    await store.finish(first.message_id, MessageEnd("complete", "ok"))

    for round_ in range(3):
        async with await psycopg.AsyncConnection.connect(pg.dsn) as holder:
            await holder.execute("select 1 from public.threads where id = %s for update", (first.thread_id,))
            calls = [
                asyncio.ensure_future(store.begin_turn(request(user, first.thread_id, f"r{round_}-{i}")))
                for i in range(8)
            ]
            async with asyncio.timeout(TIMEOUT):
                while await lock_waiters(pg) < 8:
                    await asyncio.sleep(0.01)
            await holder.commit()
        async with asyncio.timeout(TIMEOUT):
            results = await asyncio.gather(*calls, return_exceptions=True)

        started = [r for r in results if isinstance(r, Turn)]
        refused = [r for r in results if isinstance(r, ThreadBusy)]
        assert (len(started), len(refused)) == (1, 7), results
        assert {r.message_id for r in refused} == {started[0].message_id}
        assert await rows(
            pg, "select count(*) from public.messages where thread_id = %s and status = 'streaming'", first.thread_id
        ) == [(1,)]
        assert await store.finish(started[0].message_id, MessageEnd("complete", "done"))

    assert len(await messages(pg, first.thread_id)) == 2 + 3 * 2


async def lock_waiters(pg: PgCluster) -> int:
    """How many thread_turn_begin calls wait on a lock (the thread row held by the test)."""
    [(waiting,)] = await rows(
        pg,
        "select count(*) from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock'"
        " and query like %s",
        "%thread_turn_begin%",
    )
    return int(waiting)


async def test_stop_reaches_the_running_generation(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()
    turn = await store.begin_turn(request(user, None, "Tell me a long story"))
    assert await store.progress(turn.message_id, "Once") is True

    answer = await store.stop(user, turn.thread_id, None, 60)

    assert answer == StopAnswer(turn.thread_id, turn.message_id, "streaming", stop_requested=True)
    assert await store.progress(turn.message_id, "Once upon") is False  # the running instance sees it
    assert await store.finish(turn.message_id, MessageEnd("stopped", "Once upon")) is True
    assert await store.finish(turn.message_id, MessageEnd("complete", "Once upon a time")) is False  # idempotent
    assert await store.progress(turn.message_id, "Once upon a time") is False
    assert await rows(pg, "select status, content from public.messages where id = %s", turn.message_id) == [
        ("stopped", "Once upon")
    ]
    again = await store.stop(user, turn.thread_id, turn.message_id, 60)
    assert (again.message_id, again.status, again.stop_requested) == (turn.message_id, "stopped", True)


async def test_a_stale_generation_is_stopped_at_once(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()
    turn = await store.begin_turn(request(user, None, "Hello"))
    await rows(
        pg, "update public.messages set updated_at = now() - interval '5 minutes' where id = %s", turn.message_id
    )

    answer = await store.stop(user, turn.thread_id, None, 60)

    assert (answer.message_id, answer.status) == (turn.message_id, "stopped")
    assert await store.finish(turn.message_id, MessageEnd("complete", "too late")) is False


async def test_another_users_thread_is_not_found(store: PostgresThreadStore) -> None:
    alice, bob = new_user(), new_user()
    turn = await store.begin_turn(request(alice, None, "Mine"))

    with pytest.raises(ThreadNotFound):
        await store.begin_turn(request(bob, turn.thread_id, "Mine now"))
    with pytest.raises(ThreadNotFound):
        await store.stop(bob, turn.thread_id, None, 60)
    with pytest.raises(ThreadNotFound):
        await store.stop(bob, turn.thread_id, turn.message_id, 60)
    with pytest.raises(ThreadNotFound):
        await store.begin_turn(request(alice, str(uuid.uuid4()), "Nowhere"))
    assert (await store.stop(alice, turn.thread_id, None, 60)).stop_requested  # Alice's own stop works


async def test_a_signed_in_user_cannot_forge_an_answer_or_its_cost(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()
    turn = await store.begin_turn(request(user, None, "Hi"))
    await store.finish(turn.message_id, MessageEnd("complete", "Hello", cost_usd=0.5))
    claims = json.dumps({"sub": user, "role": "authenticated"})
    forge = (
        "insert into public.messages (thread_id, user_id, seq, role, content, status)"
        " values (%s, %s, 99, 'assistant', 'forged', 'complete')"
    )

    async with await psycopg.AsyncConnection.connect(pg.dsn) as conn:
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        own = await (await conn.execute("select content from public.messages order by seq")).fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(forge, (turn.thread_id, user))
        await conn.rollback()
        await conn.execute("set local role authenticated")
        await conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("update public.messages set cost_usd = 0 where id = %s", (turn.message_id,))
        await conn.rollback()

    assert own == [("Hi",), ("Hello",)]  # the session is the user's, reading their own messages
    assert await rows(pg, "select content, cost_usd::float8 from public.messages where id = %s", turn.message_id) == [
        ("Hello", 0.5)
    ]


async def test_erasing_a_user_removes_their_threads(pg: PgCluster, store: PostgresThreadStore) -> None:
    user, other = new_user(), new_user()
    one = await store.begin_turn(request(user, None, "one"))
    await store.finish(one.message_id, MessageEnd("complete", "1"))
    await store.begin_turn(request(user, one.thread_id, "two"))
    await store.begin_turn(request(user, None, "another thread"))
    kept = await store.begin_turn(request(other, None, "not erased"))

    [(erased,)] = await rows(pg, "select public.erase_user_data(%s)", user)

    assert (erased["threads"], erased["messages"]) == (2, 6)
    assert await rows(pg, "select count(*) from public.threads where user_id = %s", user) == [(0,)]
    assert await rows(pg, "select count(*) from public.messages where user_id = %s", user) == [(0,)]
    assert len(await messages(pg, kept.thread_id)) == 2
    with pytest.raises(ThreadNotFound):
        await store.begin_turn(request(user, one.thread_id, "three"))


async def test_a_deleted_user_is_refused_as_unavailable(pg: PgCluster, store: PostgresThreadStore) -> None:
    user = new_user()
    await rows(pg, "insert into public.erased_users (user_id) values (%s)", user)
    try:
        with pytest.raises(ThreadStoreUnavailable, match="user was deleted"):
            await store.begin_turn(request(user, None, "still here?"))
    finally:
        await rows(pg, "delete from public.erased_users where user_id = %s", user)
    assert await rows(pg, "select count(*) from public.threads where user_id = %s", user) == [(0,)]


async def test_a_new_thread_started_while_its_user_is_deleted_does_not_survive(
    pg: PgCluster, store: PostgresThreadStore
) -> None:
    """The deletion (tombstone + erase_user_data, as the auth.users trigger runs them) holds the user's lock
    until it commits: a turn that starts meanwhile waits, then sees the tombstone; nothing is left behind."""
    user = new_user()
    async with await psycopg.AsyncConnection.connect(pg.dsn) as deleting:
        await deleting.execute("insert into public.erased_users (user_id) values (%s)", (user,))
        await deleting.execute("select public.erase_user_data(%s)", (user,))
        starting = asyncio.create_task(store.begin_turn(request(user, None, "racing the deletion")))
        for _ in range(200):  # bounded: until the turn waits on the deletion's lock
            if await lock_waiters(pg):
                break
            await asyncio.sleep(0.02)
        assert await lock_waiters(pg) == 1
        await deleting.commit()
    with pytest.raises(ThreadStoreUnavailable, match="user was deleted"):
        await asyncio.wait_for(starting, TIMEOUT)
    try:
        assert await rows(pg, "select count(*) from public.threads where user_id = %s", user) == [(0,)]
    finally:
        await rows(pg, "delete from public.erased_users where user_id = %s", user)


async def test_nothing_outlives_a_statement_so_a_transaction_pooler_is_safe(pg: PgCluster) -> None:
    threads = PostgresThreadStore(pg.dsn, pool_size=1)  # one connection: every call below runs on it
    user = new_user()
    turn = await threads.begin_turn(request(user, None, "hello"))
    for i in range(8):  # psycopg prepares a statement on the server from its 5th run, unless told not to
        await threads.progress(turn.message_id, f"text {i}")

    pool = await threads._get_pool()
    async with pool.connection() as conn:
        assert conn.autocommit
        prepared = await (await conn.execute("select count(*) from pg_prepared_statements")).fetchone()
    assert prepared == (0,)
    await threads.aclose()


async def test_an_unreachable_database_is_unavailable() -> None:
    broken = PostgresThreadStore("postgresql://postgres@127.0.0.1:9/none", connect_timeout=1.0)
    user = new_user()

    with pytest.raises(ThreadStoreUnavailable, match="^postgres thread_turn_begin: "):
        await broken.begin_turn(request(user, None, "hello"))
    with pytest.raises(ThreadStoreUnavailable):
        await broken.stop(user, str(uuid.uuid4()), None, 60)
    await broken.aclose()


async def test_the_rest_store_drives_the_same_functions_through_postgrest(pg: PgCluster) -> None:
    """The REST store's argument names and types against the real functions (a PostgREST stand-in that
    calls them as the key's role): a whole turn, a stop, the next turn, and a user key refused."""
    stand_in = PostgrestStandIn(pg.dsn, connections=4)
    await stand_in.open()
    client = httpx.AsyncClient(transport=httpx.MockTransport(stand_in.handler))
    rest = SupabaseRestThreadStore(SUPABASE_URL, SERVICE_ROLE_KEY, http_client=client)
    user, other = new_user(), new_user()
    try:
        first = await rest.begin_turn(request(user, None, "Hi", system="Be brief."))
        assert (first.created, first.history[0]) == (True, {"role": "system", "content": "Be brief."})
        assert await rest.progress(first.message_id, "Hel") is True
        stopped = await rest.stop(user, first.thread_id, None, 60)
        assert (stopped.message_id, stopped.status, stopped.stop_requested) == (first.message_id, "streaming", True)
        assert await rest.progress(first.message_id, "Hello") is False
        end = MessageEnd("stopped", "Hello", model="served/model", total_tokens=7, cost_usd=0.00012345678)
        assert await rest.finish(first.message_id, end) is True
        assert await rest.finish(first.message_id, end) is False
        second = await rest.begin_turn(request(user, first.thread_id, "Again"))
        assert [m["content"] for m in second.history] == ["Be brief.", "Hi", "Hello", "Again"]
        with pytest.raises(ThreadNotFound):
            await rest.begin_turn(request(other, first.thread_id, "Mine now"))
        with pytest.raises(ThreadBusy):
            await rest.begin_turn(request(user, first.thread_id, "Too soon"))

        as_user = SupabaseRestThreadStore(SUPABASE_URL, mint(sub=user), http_client=client)
        with pytest.raises(ThreadStoreUnavailable, match="42501"):
            await as_user.progress(second.message_id, "forged")
    finally:
        await client.aclose()
        await stand_in.aclose()
    assert await rows(
        pg, "select status, content, model, cost_usd::text from public.messages where id = %s", first.message_id
    ) == [("stopped", "Hello", "served/model", "0.00012346")]

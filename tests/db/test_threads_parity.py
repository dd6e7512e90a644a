"""The SQLite thread store keeps the tables of supabase/migrations/20261202070000_threads.sql, and answers
its four operations as the SQL functions do (docs/threads.md): the same turn, history and stop answers."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path

from openrouter_functions.threads import MessageEnd, ThreadBusy, ThreadNotFound, TurnRequest
from openrouter_functions.threads.postgres import PostgresThreadStore
from openrouter_functions.threads.sqlite import THREAD_TABLES, SQLiteThreadStore
from pgcluster import PgCluster


async def test_the_sqlite_thread_tables_have_the_columns_of_the_migration(pg: PgCluster, tmp_path: Path) -> None:
    store = SQLiteThreadStore(tmp_path / "ledger.sqlite3")
    await store.rows("threads")
    await store.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as conn:
        sqlite_tables = {
            table: [row[1] for row in conn.execute(f"pragma table_info({table})")] for table in THREAD_TABLES
        }
    postgres_tables = {
        table: columns.split(",")
        for table, columns in (
            line.split("|")
            for line in pg.psql(
                "select table_name, string_agg(column_name, ',' order by ordinal_position)"
                " from information_schema.columns where table_schema = 'public'"
                " and table_name in ('threads', 'messages') group by table_name"
            ).split()
        )
    }
    assert sqlite_tables == postgres_tables


async def test_both_stores_answer_a_script_of_turns_alike(pg: PgCluster, tmp_path: Path) -> None:
    """Thirty turns with answers of every ending, a tight budget, a busy thread and a stop: what each store
    sends upstream, drops and answers is the same."""
    sqlite_store = SQLiteThreadStore(tmp_path / "ledger.sqlite3")
    postgres_store = PostgresThreadStore(pg.dsn)
    try:
        transcripts = []
        for store in (sqlite_store, postgres_store):
            user = str(uuid.uuid4())
            transcript: list[object] = []
            thread_id = None
            for n in range(30):
                text = f"question {n} " + "x" * (n * 37 % 300)
                request = TurnRequest(user, thread_id, text, "m/model", f"req-{user}-{n}", 7, 600, 300, "System.")
                turn = await store.begin_turn(request)
                thread_id = turn.thread_id
                transcript.append((turn.history, turn.dropped, turn.created))
                if n % 5 == 1:  # a second turn while this one runs is refused
                    try:
                        await store.begin_turn(request)
                    except ThreadBusy as busy:
                        transcript.append(("busy", busy.message_id == turn.message_id))
                status = ("complete", "stopped", "failed", "complete")[n % 4]
                content = "" if n % 7 == 3 else f"answer {n}"
                assert await store.progress(turn.message_id, content[:3]) is True
                if n % 6 == 2:
                    stop = await store.stop(user, thread_id, None, 300)
                    transcript.append(("stop", stop.status, stop.stop_requested, stop.message_id == turn.message_id))
                    assert await store.progress(turn.message_id, content) is False
                assert await store.finish(turn.message_id, MessageEnd(status, content)) is True
                assert await store.finish(turn.message_id, MessageEnd("complete", "again")) is False
            stop = await store.stop(user, thread_id, None, 300)
            transcript.append(("idle", stop.status))
            try:
                await store.stop(str(uuid.uuid4()), thread_id, None, 300)
            except ThreadNotFound:
                transcript.append("stranger: not found")
            transcripts.append(transcript)
        assert transcripts[0] == transcripts[1]
    finally:
        await sqlite_store.aclose()
        await postgres_store.aclose()

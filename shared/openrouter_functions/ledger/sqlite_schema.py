"""The embedded ledger's tables: the SQL migrations' tables, in SQLite.

Same names, columns and meaning as ``supabase/migrations`` (``tests/db/test_ledger_migrations.py``
compares them), with timestamps as UTC ISO-8601 text, days as ``YYYY-MM-DD`` and money as reals.
"""

from __future__ import annotations

import sqlite3

__all__ = ["PREVIEW_CHARS", "SCHEMA_VERSION", "TABLES", "create_tables"]

PREVIEW_CHARS = 512  # like the SQL CHECK on the previews

# Kept in ``pragma user_version``. Files written before it existed (version 0) have another layout: a
# per-minute rate_windows table, no admission or total_tokens columns. Version 2 has version 1's columns
# in ``WITHOUT ROWID`` tables (see _SCHEMA); a version 1 file is migrated, its rows kept.
SCHEMA_VERSION = 2

TABLES = ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations")

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"  # the SQL tables' `default now()`, for rows added by hand

# A ledger call's cost is mostly the pages it changes: each is written to the WAL whole at the commit.
# So (version 2) every table but request_log is ``WITHOUT ROWID``: its primary key *is* the table, where
# a rowid table keeps the row in one b-tree and the key in another, and each write touches one page
# fewer. request_log stays a rowid table: its rows (with previews of up to 512 characters, twice) are too
# large for a b-tree clustered on a random key. And ledger_reservations has no index on (user_id,
# created_at), unlike the SQL table: it holds only the requests running right now, which the stale
# sweep's lookup reads whole faster than it would keep an index up to date on every begin and finish.
# A request's begin and finish went from ~13.3 pages to ~9.3.
_SCHEMA = (
    f"""create table request_log (
      request_id        text primary key,
      user_id           text not null,
      function          text,
      model             text,
      status            integer,
      error_type        text,
      outcome           text,
      latency_ms        integer,
      attempts          integer,
      prompt_tokens     integer,
      completion_tokens integer,
      total_tokens      integer,
      cost_usd          real,
      generation_id     text,
      prompt_preview    text check (length(prompt_preview) <= {PREVIEW_CHARS}),
      response_preview  text check (length(response_preview) <= {PREVIEW_CHARS}),
      created_at        text not null default {_NOW})""",
    "create index request_log_user_id_created_at_idx on request_log (user_id, created_at desc)",
    f"""create table usage_daily (
      user_id           text not null,
      day               text not null,
      requests          integer not null default 0 check (requests >= 0),
      in_flight         integer not null default 0 check (in_flight >= 0),
      prompt_tokens     integer not null default 0,
      completion_tokens integer not null default 0,
      total_tokens      integer not null default 0,
      cost_usd          real not null default 0,
      reserved_usd      real not null default 0 check (reserved_usd >= 0),
      updated_at        text not null default {_NOW},
      primary key (user_id, day)) without rowid""",
    f"""create table user_limits (
      user_id        text primary key,
      rpm            integer check (rpm >= 0),
      daily_requests integer check (daily_requests >= 0),
      daily_cost_usd real check (daily_cost_usd >= 0),
      updated_at     text not null default {_NOW}) without rowid""",
    """create table rate_windows (
      user_id      text primary key,
      window_start text not null,
      requests     integer not null default 0 check (requests >= 0)) without rowid""",
    f"""create table ledger_reservations (
      request_id text primary key,
      user_id    text not null,
      day        text not null,
      amount_usd real not null check (amount_usd >= 0),
      admission  text not null,
      created_at text not null default {_NOW}) without rowid""",
)


# The tables version 2 made WITHOUT ROWID (same columns, same order as version 1).
_WITHOUT_ROWID_SINCE_2 = ("usage_daily", "user_limits", "rate_windows", "ledger_reservations")


def _statements_for(table: str) -> list[str]:
    """The statements of _SCHEMA that create ``table`` and its indexes."""
    return [s for s in _SCHEMA if s.startswith(f"create table {table} (") or f" on {table} (" in s]


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the tables, migrate a version 1 file, or recreate the tables of any other version.

    The file is a local development ledger (the deployed functions keep theirs in Postgres), so a file
    from before version 1 is started afresh instead of migrated: its counts and logs are dropped. A
    version 1 file has version 2's columns: its tables are rebuilt as WITHOUT ROWID tables, rows kept.
    Under ``BEGIN IMMEDIATE``, so two processes opening one file do it once.
    """
    conn.execute("begin immediate")
    try:
        (version,) = conn.execute("pragma user_version").fetchone()
        if version == 1:
            for table in _WITHOUT_ROWID_SINCE_2:
                # The old table's indexes go with it (their names are needed for the new ones).
                indexes = conn.execute(
                    "select name from sqlite_master where type = 'index' and tbl_name = ? and sql is not null",
                    (table,),
                ).fetchall()
                for (index,) in indexes:
                    conn.execute(f'drop index "{index}"')
                conn.execute(f"alter table {table} rename to {table}_v1")
                for statement in _statements_for(table):
                    conn.execute(statement)
                columns = ", ".join(row[1] for row in conn.execute(f"pragma table_info({table})"))
                conn.execute(f"insert into {table} ({columns}) select {columns} from {table}_v1")  # noqa: S608
                conn.execute(f"drop table {table}_v1")
            conn.execute(f"pragma user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            for table in TABLES:
                conn.execute(f"drop table if exists {table}")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"pragma user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")

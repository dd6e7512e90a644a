"""The embedded ledger's tables: the SQL migrations' tables, in SQLite.

Same names, columns and meaning as ``supabase/migrations`` (``tests/db/test_ledger_migrations.py``
compares them), with timestamps as UTC ISO-8601 text, days as ``YYYY-MM-DD`` and money as reals.
"""

from __future__ import annotations

import sqlite3

__all__ = ["PREVIEW_CHARS", "SCHEMA_VERSION", "TABLES", "create_tables"]

PREVIEW_CHARS = 512  # like the SQL CHECK on the previews

# Kept in ``pragma user_version``. Files written before it existed (version 0) have another layout: a
# per-minute rate_windows table, no admission or total_tokens columns.
SCHEMA_VERSION = 1

TABLES = ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations")

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"  # the SQL tables' `default now()`, for rows added by hand

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
      primary key (user_id, day))""",
    f"""create table user_limits (
      user_id        text primary key,
      rpm            integer check (rpm >= 0),
      daily_requests integer check (daily_requests >= 0),
      daily_cost_usd real check (daily_cost_usd >= 0),
      updated_at     text not null default {_NOW})""",
    """create table rate_windows (
      user_id      text primary key,
      window_start text not null,
      requests     integer not null default 0 check (requests >= 0))""",
    f"""create table ledger_reservations (
      request_id text primary key,
      user_id    text not null,
      day        text not null,
      amount_usd real not null check (amount_usd >= 0),
      admission  text not null,
      created_at text not null default {_NOW})""",
    "create index ledger_reservations_user_id_created_at_idx on ledger_reservations (user_id, created_at)",
)


def create_tables(conn: sqlite3.Connection) -> None:
    """Create the tables, or recreate them when the file holds another schema version.

    The file is a local development ledger (the deployed functions keep theirs in Postgres), so a
    file from an earlier version is started afresh instead of migrated: its counts and logs are
    dropped. Under ``BEGIN IMMEDIATE``, so two processes opening one file do it once.
    """
    conn.execute("begin immediate")
    try:
        (version,) = conn.execute("pragma user_version").fetchone()
        if version != SCHEMA_VERSION:
            for table in TABLES:
                conn.execute(f"drop table if exists {table}")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"pragma user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("rollback")
        raise
    conn.execute("commit")

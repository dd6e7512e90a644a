"""Where the ledger migrations leave a database, and the SQLite ledger's mirror of it.

A project that ran the first ledger migration and one that starts fresh end with the same ledger_begin:
20261127000000_ledger.sql once created an eight-argument ``ledger_begin`` (with ``p_function`` and
``p_model``); 20261202000000_ledger_begin_signature.sql drops that and creates the six-argument one.
The test database was built fresh; here, inside a transaction that is rolled back, its ledger_begin is
swapped for the old signature and the new migration run again (then 20261202060000_ledger_fast_path.sql,
which redefines the function once more), and what results must equal what the fresh build made: the
signature, the body, the settings, the owner's rights, the grants and the comment.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from openrouter_functions.ledger.sqlite import TABLES, SQLiteLedger
from pgcluster import ROOT, PgCluster

NEW_MIGRATION = ROOT / "supabase" / "migrations" / "20261202000000_ledger_begin_signature.sql"
# Redefines ledger_begin again (same signature, faster body): an upgraded project runs it after NEW_MIGRATION.
FAST_PATH_MIGRATION = ROOT / "supabase" / "migrations" / "20261202060000_ledger_fast_path.sql"

# Everything that makes up public.ledger_begin, as a JSON array on one line (one element per overload).
FINGERPRINT = """
select coalesce(jsonb_agg(jsonb_build_object(
         'signature', p.oid::regprocedure::text, 'body', p.prosrc, 'settings', p.proconfig,
         'security_definer', p.prosecdef, 'grants', p.proacl::text[], 'comment', obj_description(p.oid, 'pg_proc'))
         order by p.oid::regprocedure::text), '[]')
  from pg_catalog.pg_proc p
 where p.proname = 'ledger_begin' and p.pronamespace = 'public'::regnamespace;
"""

# What the first version of 20261127000000_ledger.sql left behind (its body does not matter here).
FIRST_VERSION = """
drop function public.ledger_begin(text, uuid, numeric, integer, integer, numeric);
create function public.ledger_begin(
  p_request_id text, p_user_id uuid, p_function text, p_model text, p_reserve_usd numeric,
  p_default_rpm integer, p_default_daily_requests integer, p_default_daily_cost_usd numeric
) returns jsonb language sql security definer set search_path = '' as $$ select '{}'::jsonb $$;
revoke execute on function public.ledger_begin(text, uuid, text, text, numeric, integer, integer, numeric)
  from public, anon, authenticated;
grant execute on function public.ledger_begin(text, uuid, text, text, numeric, integer, integer, numeric)
  to service_role;
"""


def test_an_upgraded_database_ends_like_a_fresh_one(pg: PgCluster) -> None:
    output = pg.psql(
        "begin;\n"
        + FINGERPRINT
        + FIRST_VERSION
        + FINGERPRINT
        + f"\\i {NEW_MIGRATION}\n\\i {FAST_PATH_MIGRATION}\n"
        + FINGERPRINT
        + "rollback;\n"
    )
    fresh, first_version, upgraded = (json.loads(line) for line in output.splitlines() if line)

    assert [f["signature"] for f in first_version] == [
        "ledger_begin(text,uuid,text,text,numeric,integer,integer,numeric)"
    ]
    assert upgraded == fresh
    assert [f["signature"] for f in fresh] == ["ledger_begin(text,uuid,numeric,integer,integer,numeric)"]
    assert fresh[0]["settings"] == ['search_path=""', "lock_timeout=3s"]
    assert fresh[0]["security_definer"] is True


async def test_the_sqlite_tables_have_the_columns_of_the_migrations(pg: PgCluster, tmp_path: Path) -> None:
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite3")
    assert await ledger.check()
    await ledger.aclose()
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite3")) as conn:
        sqlite_tables = {
            table: [row[1] for row in conn.execute(f"pragma table_info({table})")]
            for (table,) in conn.execute("select name from sqlite_master where type = 'table' order by name")
        }
    postgres_tables = {
        table: columns.split(",")
        for table, columns in (
            line.split("|")
            for line in pg.psql(
                "select table_name, string_agg(column_name, ',' order by ordinal_position)"
                " from information_schema.columns where table_schema = 'public'"
                f" and table_name in ({', '.join(repr(table) for table in TABLES)}) group by table_name"
            ).split()
        )
    }

    assert sorted(sqlite_tables) == sorted(TABLES)
    assert sqlite_tables == postgres_tables

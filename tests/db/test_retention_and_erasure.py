"""request_log retention and per-user erasure on a real PostgreSQL with the migrations applied
(supabase/migrations/20261202030000_retention_and_erasure.sql). Each test runs in a transaction that
rolls back, so the shared cluster is left as it was."""

from __future__ import annotations

import json
import subprocess

import pytest

from pgcluster import ROOT, PgCluster

MIGRATION = ROOT / "supabase" / "migrations" / "20261202030000_retention_and_erasure.sql"
ALICE = "a11ce000-0000-4000-8000-000000000001"
BOB = "b0b00000-0000-4000-8000-000000000002"

# Rows aged 40, 29 and 0 days for one user, written the way ledger_finish writes them.
SEED = """
insert into public.request_log (request_id, user_id, function, status, prompt_preview, created_at) values
  ('old-{u}', '{u}', 'chat', 200, 'a prompt from long ago', now() - interval '40 days'),
  ('month-{u}', '{u}', 'chat', 200, 'a prompt from last month', now() - interval '29 days'),
  ('new-{u}', '{u}', 'chat', 200, 'a prompt from today', now());
insert into public.usage_daily (user_id, day, requests) values ('{u}', current_date, 3);
insert into public.user_limits (user_id, rpm) values ('{u}', 5);
insert into public.rate_windows (user_id, window_start, requests) values ('{u}', date_trunc('minute', now()), 1);
insert into public.ledger_reservations (request_id, user_id, day, amount_usd, admission)
  values ('running-{u}', '{u}', current_date, 0.01, '{{}}'::jsonb);
"""


def run(pg: PgCluster, sql: str) -> list[str]:
    """``sql`` after seeding Alice and Bob, in a transaction rolled back afterwards; the output lines."""
    seed = SEED.format(u=ALICE) + SEED.format(u=BOB)
    return [line for line in pg.psql(f"begin;\n{seed}\n{sql}\nrollback;\n").splitlines() if line]


def refused(pg: PgCluster, sql: str) -> str:
    """What PostgreSQL said when ``sql`` (after the seed) failed."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run(pg, sql)
    return str(failed.value.stderr)


def log_ids(user: str) -> str:
    return f"select string_agg(request_id, ',' order by request_id) from public.request_log where user_id = '{user}';"


def test_the_purge_deletes_only_rows_older_than_30_days_by_default(pg: PgCluster) -> None:
    purged, alice, bob = run(pg, "select public.purge_request_log();" + log_ids(ALICE) + log_ids(BOB))
    assert purged == "2"  # one per user
    assert alice == f"month-{ALICE},new-{ALICE}"
    assert bob == f"month-{BOB},new-{BOB}"


def test_the_retention_period_is_a_setting(pg: PgCluster) -> None:
    purged, alice = run(
        pg,
        "update public.ledger_settings set request_log_retention_days = 7;"
        "select public.purge_request_log();" + log_ids(ALICE),
    )
    assert (purged, alice) == ("4", f"new-{ALICE}")


def test_the_purge_takes_an_explicit_period_and_refuses_nonsense(pg: PgCluster) -> None:
    assert run(pg, "select public.purge_request_log(365);") == ["0"]
    assert "at least 1 day" in refused(pg, "select public.purge_request_log(0);")
    assert "request_log_retention_days_check" in refused(
        pg, "update public.ledger_settings set request_log_retention_days = 0;"
    )


def test_erasing_a_user_removes_every_row_of_theirs_and_nothing_else(pg: PgCluster) -> None:
    counts, *rest = run(
        pg,
        f"select public.erase_user_data('{ALICE}');"
        + "".join(
            f"select count(*) filter (where user_id = '{ALICE}') || '/' || count(*) from public.{table};"
            for table in ("request_log", "usage_daily", "user_limits", "rate_windows", "ledger_reservations")
        ),
    )
    assert json.loads(counts) == {
        "request_log": 3,
        "usage_daily": 1,
        "user_limits": 1,
        "rate_windows": 1,
        "ledger_reservations": 1,
        "threads": 0,  # their conversations go too (tests/db/test_threads_postgres.py erases some)
        "messages": 0,
    }
    bob_rows = {"request_log": 3, "usage_daily": 1, "user_limits": 1, "rate_windows": 1, "ledger_reservations": 1}
    for line, kept in zip(rest, bob_rows.values(), strict=True):
        mine, total = line.split("/")
        assert int(mine) == 0
        assert int(total) >= kept  # Bob's rows (and any other test's) are still there


def test_deleting_the_supabase_user_erases_their_rows(pg: PgCluster) -> None:
    lines = run(
        pg,
        f"insert into auth.users (id) values ('{ALICE}'), ('{BOB}');"
        f"delete from auth.users where id = '{ALICE}';"
        f"select count(*) from public.request_log where user_id = '{ALICE}';"
        f"select count(*) from public.usage_daily where user_id = '{ALICE}';"
        f"select count(*) from public.request_log where user_id = '{BOB}';",
    )
    assert lines == ["0", "0", "3"]


@pytest.mark.parametrize("call", ["select public.purge_request_log()", f"select public.erase_user_data('{ALICE}')"])
@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_only_the_server_may_purge_or_erase(pg: PgCluster, role: str, call: str) -> None:
    assert "permission denied for function" in refused(pg, f"set local role {role}; {call};")


def test_users_cannot_read_or_change_the_retention_setting(pg: PgCluster) -> None:
    assert "permission denied for table ledger_settings" in refused(
        pg, "set local role authenticated; select * from public.ledger_settings;"
    )


def test_a_deleted_user_gets_no_new_rows_while_their_tokens_may_still_be_valid(pg: PgCluster) -> None:
    """A request admitted before the deletion (or made with a token that has not expired) cannot recreate
    the rows the deletion erased: its writes are refused, and other users are not affected."""
    deleted = f"insert into auth.users (id) values ('{ALICE}'); delete from auth.users where id = '{ALICE}';"
    late_finish = (
        f"select public.ledger_finish('late-{ALICE}', '{ALICE}', "
        """'{"function": "chat", "status": 200, "admitted": true, "prompt_preview": "still here?"}'::jsonb);"""
    )
    assert "was deleted" in refused(pg, deleted + late_finish)
    assert "was deleted" in refused(
        pg, deleted + f"select public.ledger_begin('new-{ALICE}', '{ALICE}', 0.01, 60, null, 1.0);"
    )
    admitted = run(pg, deleted + f"select public.ledger_begin('bob-1', '{BOB}', 0.01, 60, null, 1.0)->>'admitted';")
    assert admitted[-1] == "true"
    # A day later every token of theirs has expired: the tombstone no longer refuses anything.
    aged = run(
        pg,
        deleted
        + "update public.erased_users set erased_at = now() - interval '2 days';"
        + late_finish.replace("late-", "later-")
        + f"select count(*) from public.request_log where user_id = '{ALICE}';",
    )
    assert aged[-1] == "1"


@pytest.mark.parametrize(
    "call",
    [
        # A duplicate finish (its log row exists) is refused too, not answered "duplicate".
        f"""select public.ledger_finish('new-{ALICE}', '{ALICE}', '{{"status": 200, "admitted": true}}'::jsonb);""",
        # A repeated begin (its reservation exists) and a new one on a day whose usage row exists.
        f"select public.ledger_begin('running-{ALICE}', '{ALICE}', 0.01, 60, null, 1.0);",
        f"select public.ledger_begin('another-{ALICE}', '{ALICE}', 0.01, 60, null, 1.0);",
        # A request refused over a limit writes nothing either (no usage row for today is made).
        f"delete from public.usage_daily where user_id = '{ALICE}';"
        f"select public.ledger_begin('limited-{ALICE}', '{ALICE}', 0.01, 0, null, 1.0);",
    ],
)
def test_the_tombstone_refuses_every_ledger_call_whatever_rows_exist(pg: PgCluster, call: str) -> None:
    """The ledger functions check the tombstone themselves (20261202060000_ledger_fast_path.sql), on every
    path, not only where a row is inserted."""
    assert "was deleted" in refused(pg, f"insert into public.erased_users (user_id) values ('{ALICE}');" + call)


def test_the_ledger_tables_carry_no_row_triggers(pg: PgCluster) -> None:
    """Each trigger call cost every request time (up to four per request); the functions check instead."""
    triggers = run(
        pg,
        "select count(*) from pg_catalog.pg_trigger t where not t.tgisinternal and t.tgrelid in ("
        "'public.request_log'::regclass, 'public.usage_daily'::regclass,"
        " 'public.ledger_reservations'::regclass, 'public.rate_windows'::regclass);",
    )
    assert triggers == ["0"]

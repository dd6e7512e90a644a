"""The optional health-ping migration: a real pg_cron job on PostgreSQL 15, pg_net and Vault stood in.

On Supabase the job calls pg_net's ``net.http_get`` with the base URL kept in Vault. Here a throwaway
cluster preloads Debian's pg_cron (``postgresql-15-cron``); ``net.http_get`` (pg_net's signature) records
each request in a table, and ``vault.decrypted_secrets`` is a plain table. Everywhere else (the shared
test cluster, which does not preload pg_cron) the migration must change nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgcluster import ROOT, PgCluster, PgUnavailable

MIGRATION = ROOT / "supabase" / "migrations" / "20261127000100_health_ping.sql"
JOB = "openrouter-functions-health"
DBNAME = "health_ping_test"
PG_CRON_CONTROL = Path("/usr/share/postgresql/15/extension/pg_cron.control")

# TEST-ONLY stand-ins for pg_net and Supabase Vault: same names and signatures as the real ones
# (pg_net: net.http_get(url text, params jsonb, headers jsonb, timeout_milliseconds integer) returns
# bigint, strict), recording instead of sending.
STAND_INS = """
create schema net;
create table net.recorded_requests (
  id bigserial primary key,
  method text not null,
  url text not null,
  params jsonb,
  headers jsonb,
  timeout_milliseconds integer
);
create function net.http_get(
  url text,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{}'::jsonb,
  timeout_milliseconds integer default 5000
) returns bigint language sql strict as $$
  insert into net.recorded_requests (method, url, params, headers, timeout_milliseconds)
  values ('GET', url, params, headers, timeout_milliseconds)
  returning id
$$;
create schema vault;
create table vault.decrypted_secrets (name text primary key, decrypted_secret text not null);
"""


def _cron_unavailable_reason(cluster: PgCluster) -> str | None:
    if cluster.datadir is None:
        return "TEST_DATABASE_URL is set: preloading pg_cron needs a cluster of our own"
    if not cluster.psql("select 1 from pg_available_extensions where name = 'pg_cron'").strip():
        return "the pg_cron extension is not installed (apt-get install postgresql-15-cron)"
    return None


def _restart(cluster: PgCluster) -> None:
    """Restart with the same command-line options (pg_ctl keeps them) so postgresql.auto.conf is read again."""
    assert cluster.datadir is not None and cluster.socket_dir is not None
    argv = [
        str(cluster.bindir / "pg_ctl"),
        "--pgdata",
        str(cluster.datadir),
        "--log",
        str(cluster.socket_dir / "server.log"),
        "--mode=fast",
        "--wait",
        "--timeout=30",
        "restart",
    ]
    if os.geteuid() == 0:  # the cluster belongs to the postgres OS user (see pgcluster)
        runuser = shutil.which("runuser")
        assert runuser is not None
        argv = [runuser, "-u", "postgres", "--", *argv]
    result = subprocess.run(argv, cwd=cluster.socket_dir, capture_output=True, text=True, timeout=90, check=False)
    if result.returncode != 0:
        log = cluster.socket_dir / "server.log"
        raise PgUnavailable(
            f"restart failed: {result.stderr}\n{log.read_text(errors='replace') if log.exists() else ''}"
        )


@pytest.fixture(scope="module")
def cron_cluster() -> Iterator[PgCluster]:
    """A cluster of our own whose server preloads pg_cron, with cron.database_name = our test database."""
    try:
        cluster = PgCluster.start(dbname=DBNAME)
    except PgUnavailable as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL to test against: {exc}")
    try:
        reason = _cron_unavailable_reason(cluster)
        if reason is not None:
            if os.environ.get("CI") and cluster.datadir is not None:
                pytest.fail(reason)
            pytest.skip(reason)
        # cron.database_name exists only once pg_cron is loaded, and both settings need a restart.
        cluster.psql("alter system set shared_preload_libraries = 'pg_cron'")
        _restart(cluster)
        cluster.psql(f"alter system set cron.database_name = '{DBNAME}'")
        _restart(cluster)
        assert cluster.psql("show cron.database_name").strip() == DBNAME
        assert "pg_cron" in cluster.psql("show shared_preload_libraries")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cron_db(cron_cluster: PgCluster) -> PgCluster:
    """The pg_cron database with neither pg_cron, pg_net nor Vault installed yet."""
    cron_cluster.psql(
        "drop extension if exists pg_cron cascade;\n"
        "drop schema if exists net cascade;\n"
        "drop schema if exists vault cascade;\n"
    )
    return cron_cluster


def _jobs(db: PgCluster) -> list[tuple[str, ...]]:
    if db.psql("select to_regclass('cron.job') is null").strip() == "t":
        return []
    out = db.psql("select jobname, schedule, database, active, username from cron.job order by jobid")
    return [tuple(line.split("|")) for line in out.splitlines() if line]


def _command(db: PgCluster) -> str:
    return db.psql(f"select command from cron.job where jobname = '{JOB}'").strip()


def _requests(db: PgCluster) -> list[str]:
    out = db.psql("select method, url, params, headers, timeout_milliseconds from net.recorded_requests order by id")
    return [line for line in out.splitlines() if line]


def test_changes_nothing_where_pg_cron_cannot_load(pg: PgCluster) -> None:
    # The shared test cluster got every migration applied without an error; pg_cron is not preloaded there,
    # so the health-ping migration must have left no trace (no extension, no cron schema).
    assert pg.psql("select count(*) from pg_extension where extname in ('pg_cron', 'pg_net')").strip() == "0"
    assert pg.psql("select to_regnamespace('cron') is null").strip() == "t"
    if pg.datadir is not None and PG_CRON_CONTROL.is_file():
        # pg_cron is installed but not loadable: the path that catches `create extension pg_cron` failing.
        assert "pg_cron" not in pg.psql("show shared_preload_libraries")
        assert pg.psql("select count(*) from pg_available_extensions where name = 'pg_cron'").strip() == "1"


def test_schedules_the_health_job_every_five_minutes(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS)
    cron_db.apply(MIGRATION)

    assert _jobs(cron_db) == [(JOB, "*/5 * * * *", DBNAME, "t", "postgres")]
    command = _command(cron_db)
    # The URL comes from Vault when the job runs: nothing about the deployment is baked into the job.
    assert "vault.decrypted_secrets" in command
    assert "functions_base_url" in command
    assert "http" not in command.replace("net.http_get", "")


def test_the_job_requests_base_url_health_with_a_3s_timeout(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS)
    cron_db.apply(MIGRATION)
    cron_db.psql(
        "insert into vault.decrypted_secrets (name, decrypted_secret) "
        "values ('functions_base_url', 'https://europe-west1-demo-project.cloudfunctions.net/')"
    )

    cron_db.psql(_command(cron_db))  # what pg_cron runs every five minutes

    assert _requests(cron_db) == ["GET|https://europe-west1-demo-project.cloudfunctions.net/health|{}|{}|3000"]


def test_the_job_sends_nothing_until_the_vault_secret_exists(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS)
    cron_db.apply(MIGRATION)

    cron_db.psql(_command(cron_db))

    assert _requests(cron_db) == []


def test_reapplying_keeps_one_job(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS)
    cron_db.apply(MIGRATION)
    cron_db.apply(MIGRATION)

    assert [job[0] for job in _jobs(cron_db)] == [JOB]


def test_no_job_without_pg_net(cron_db: PgCluster) -> None:
    cron_db.psql("create schema vault; create table vault.decrypted_secrets (name text, decrypted_secret text);")
    cron_db.apply(MIGRATION)  # pg_cron loads here, but pg_net is neither installed nor available

    assert cron_db.psql("select count(*) from pg_extension where extname = 'pg_cron'").strip() == "1"
    assert _jobs(cron_db) == []


def test_no_job_without_vault(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS + "drop schema vault cascade;")
    cron_db.apply(MIGRATION)

    assert _jobs(cron_db) == []


def test_changes_nothing_in_a_database_pg_cron_does_not_serve(cron_cluster: PgCluster) -> None:
    # pg_cron is preloaded, but its extension can only be created in cron.database_name.
    other = "health_ping_other"
    cron_cluster.psql(f'drop database if exists "{other}"; create database "{other}"')
    dsn = cron_cluster.dsn.rsplit("/", 1)[0] + "/" + other
    psql = [str(cron_cluster.bindir / "psql"), "--no-psqlrc", "--set=ON_ERROR_STOP=1", "--dbname", dsn]
    subprocess.run(
        [*psql, "--single-transaction", "--file", str(MIGRATION)], check=True, capture_output=True, timeout=60
    )
    result = subprocess.run(
        [
            *psql,
            "--tuples-only",
            "--no-align",
            "--command",
            "select count(*) from pg_extension where extname = 'pg_cron'",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "0"


# -- the daily request_log purge (20261202030100_purge_schedule.sql), same pg_cron rules -------------------

PURGE = ROOT / "supabase" / "migrations" / "20261202030100_purge_schedule.sql"
PURGE_JOB = "openrouter-functions-purge-request-log"


def test_schedules_the_daily_purge_and_its_command_purges(cron_db: PgCluster) -> None:
    cron_db.apply(PURGE)
    cron_db.apply(PURGE)  # idempotent: one job

    [job] = [j for j in _jobs(cron_db) if j[0] == PURGE_JOB]
    assert job == (PURGE_JOB, "17 3 * * *", DBNAME, "t", "postgres")
    command = cron_db.psql(f"select command from cron.job where jobname = '{PURGE_JOB}'").strip()
    out = cron_db.psql(
        "begin;"
        "insert into public.request_log (request_id, user_id, created_at) values"
        " ('ancient', '00000000-0000-0000-0000-000000000000', now() - interval '31 days'),"
        " ('recent', '00000000-0000-0000-0000-000000000000', now() - interval '1 day');"
        f"{command};"
        "select string_agg(request_id, ',') from public.request_log where request_id in ('ancient', 'recent');"
        "rollback;"
    )
    assert out.split() == ["1", "recent"]


def test_the_purge_schedule_changes_nothing_where_pg_cron_cannot_load(pg: PgCluster) -> None:
    pg.apply(PURGE)
    assert pg.psql("select to_regnamespace('cron') is null").strip() == "t"


# -- the ping's HEALTH_TOKEN (20261202040000_health_ping_token.sql) -----------------------------------------

TOKEN = ROOT / "supabase" / "migrations" / "20261202040000_health_ping_token.sql"


def test_the_ping_sends_the_health_token_from_vault(cron_db: PgCluster) -> None:
    cron_db.psql(STAND_INS)
    cron_db.apply(MIGRATION)
    cron_db.apply(TOKEN)
    cron_db.apply(TOKEN)  # idempotent

    assert [job for job in _jobs(cron_db) if job[0] == JOB] == [(JOB, "*/5 * * * *", DBNAME, "t", "postgres")]
    assert _command(cron_db) == "select public.functions_health_ping()"
    cron_db.psql(_command(cron_db))  # no base URL yet: nothing sent
    assert _requests(cron_db) == []

    cron_db.psql(
        "insert into vault.decrypted_secrets (name, decrypted_secret) values"
        " ('functions_base_url', 'https://fns.example/'), ('functions_health_token', 'tok-123')"
    )
    cron_db.psql(_command(cron_db))
    assert _requests(cron_db) == ['GET|https://fns.example/health|{}|{"Authorization": "Bearer tok-123"}|3000']

    cron_db.psql("delete from vault.decrypted_secrets where name = 'functions_health_token'")
    cron_db.psql(_command(cron_db))
    assert _requests(cron_db)[-1] == "GET|https://fns.example/health|{}|{}|3000"


def test_the_token_migration_changes_nothing_without_a_scheduled_ping(pg: PgCluster) -> None:
    pg.apply(TOKEN)
    assert pg.psql("select to_regnamespace('cron') is null").strip() == "t"
    assert pg.psql("select to_regprocedure('public.functions_health_ping()') is not null").strip() == "t"

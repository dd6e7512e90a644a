-- The daily request_log purge (public.purge_request_log, 20261202030000_retention_and_erasure.sql) as a
-- pg_cron job at 03:17 UTC.
--
-- Created only where pg_cron can run it: it must be preloaded and this must be the database named by
-- cron.database_name, as `postgres` is on Supabase (enable pg_cron under Database -> Extensions). Anywhere
-- else this file raises a warning and changes nothing; enable pg_cron and run it again (it is idempotent:
-- cron.schedule replaces a job of the same name):
--
--   psql "$DATABASE_URL" -f supabase/migrations/20261202030100_purge_schedule.sql
--
-- Without pg_cron, run `select public.purge_request_log();` daily from any scheduler with the service role.

do $purge_job$
begin
  if not exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    if not exists (select from pg_catalog.pg_available_extensions where name = 'pg_cron') then
      raise warning 'request_log purge not scheduled: the pg_cron extension is not available on this server';
      return;
    end if;
    begin
      create extension if not exists pg_cron;
    exception when others then
      raise warning 'request_log purge not scheduled: pg_cron cannot be created here (%)', sqlerrm;
      return;
    end;
  end if;
  perform cron.schedule('openrouter-functions-purge-request-log', '17 3 * * *',
                        'select public.purge_request_log()');
end
$purge_job$;

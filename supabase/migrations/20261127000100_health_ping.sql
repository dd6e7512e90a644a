-- OPTIONAL: Supabase pings the deployed `health` function every 5 minutes (pg_cron + pg_net + Vault),
-- so a dead deploy shows up in `net._http_response` and `cron.job_run_details` even when nobody calls it.
--
-- No secret and no URL lives in this file. The job reads the functions' base URL from Vault each time it
-- runs; until that secret exists the job runs and sends nothing. To turn the ping on, once per project:
--
--   select vault.create_secret('https://REGION-PROJECT.cloudfunctions.net', 'functions_base_url');
--
-- (a DigitalOcean app URL works too: the job requests <base>/health). To change it later:
--
--   select vault.update_secret(id, 'https://new-base') from vault.secrets where name = 'functions_base_url';
--
-- Results: `select * from net._http_response order by created desc limit 5;` and
-- `select * from cron.job_run_details order by start_time desc limit 5;`. To stop the ping:
-- `select cron.unschedule('openrouter-functions-health');`.
--
-- The job is created only where it can work: pg_cron must load (it must be in shared_preload_libraries,
-- and this must be the database named by cron.database_name, as `postgres` is on Supabase), pg_net's
-- net.http_get and Vault's vault.decrypted_secrets must exist. Anywhere else (a plain PostgreSQL, the
-- test clusters) this migration only raises a warning and changes nothing. Re-running it updates the job
-- in place (cron.schedule replaces a job of the same name).

do $health_ping$
begin
  if not exists (select from pg_catalog.pg_extension where extname = 'pg_cron') then
    if not exists (select from pg_catalog.pg_available_extensions where name = 'pg_cron') then
      raise warning 'health ping not scheduled: the pg_cron extension is not available on this server';
      return;
    end if;
    begin
      -- Fails unless pg_cron is preloaded and this is cron.database_name; the subtransaction undoes it.
      create extension if not exists pg_cron;
    exception when others then
      raise warning 'health ping not scheduled: pg_cron cannot be created here (%)', sqlerrm;
      return;
    end;
  end if;

  if to_regprocedure('net.http_get(text, jsonb, jsonb, integer)') is null
    and exists (select from pg_catalog.pg_available_extensions where name = 'pg_net')
  then
    begin
      if to_regnamespace('extensions') is not null then
        create extension if not exists pg_net with schema extensions;  -- where Supabase keeps extensions
      else
        create extension if not exists pg_net;
      end if;
    exception when others then
      raise warning 'health ping not scheduled: pg_net cannot be created here (%)', sqlerrm;
      return;
    end;
  end if;
  if to_regprocedure('net.http_get(text, jsonb, jsonb, integer)') is null then
    raise warning 'health ping not scheduled: pg_net (net.http_get) is not installed';
    return;
  end if;

  if to_regclass('vault.decrypted_secrets') is null then
    raise warning 'health ping not scheduled: Supabase Vault (vault.decrypted_secrets) is not installed';
    return;
  end if;

  perform cron.schedule(
    'openrouter-functions-health',
    '*/5 * * * *',
    $job$
    select net.http_get(
      url := rtrim(secret.decrypted_secret, '/') || '/health',
      timeout_milliseconds := 3000
    ) as request_id
    from vault.decrypted_secrets as secret
    where secret.name = 'functions_base_url'
    $job$
  );
end
$health_ping$;

-- The scheduled health ping (20261127000100_health_ping.sql) sends the functions' HEALTH_TOKEN when Vault
-- holds one, so each answer in net._http_response says which check failed, not only "down". Without the
-- secret the ping works as before and gets the public answer ({"status": ...}). To add the token once:
--
--   select vault.create_secret('<the functions'' HEALTH_TOKEN>', 'functions_health_token');
--
-- The request is made by public.functions_health_ping(), which the cron job calls; the job is switched to
-- it here where it exists (pg_cron present and the ping scheduled), and nothing changes elsewhere. Running
-- 20261127000100_health_ping.sql again puts back the ping without the token: run this file after it.

create or replace function public.functions_health_ping() returns bigint
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_base  text;
  v_token text;
begin
  select s.decrypted_secret into v_base from vault.decrypted_secrets s where s.name = 'functions_base_url';
  if v_base is null then
    return null;  -- not configured yet: send nothing
  end if;
  select s.decrypted_secret into v_token from vault.decrypted_secrets s where s.name = 'functions_health_token';
  return net.http_get(
    url := rtrim(v_base, '/') || '/health',
    headers := case when v_token is null then '{}'::jsonb
                    else jsonb_build_object('Authorization', 'Bearer ' || v_token) end,
    timeout_milliseconds := 3000
  );
end;
$$;

comment on function public.functions_health_ping() is
  'GET <functions_base_url>/health with the HEALTH_TOKEN from Vault when there is one (the cron job''s request).';

revoke execute on function public.functions_health_ping() from public, anon, authenticated;

do $health_ping_token$
declare
  v_scheduled boolean;
begin
  if to_regclass('cron.job') is null then
    return;  -- no pg_cron here
  end if;
  -- Dynamic SQL: a static reference to cron.job would not even plan where pg_cron is missing.
  execute 'select exists (select from cron.job where jobname = $1)' into v_scheduled
    using 'openrouter-functions-health';
  if v_scheduled then
    execute 'select cron.schedule($1, $2, $3)'
      using 'openrouter-functions-health', '*/5 * * * *', 'select public.functions_health_ping()';
  end if;
end
$health_ping_token$;

-- Retention and erasure (docs/ledger.md): request_log rows expire, and a user's rows can be erased.
--
-- request_log keeps one row per request, with masked previews of the prompt and the answer when
-- LOG_PROMPTS is on. Rows older than the retention period (30 days unless changed below) are deleted by
-- public.purge_request_log(), which a pg_cron job runs every day at 03:17 UTC
-- (20261202030100_purge_schedule.sql, where pg_cron is available). To change the period:
--
--   update public.ledger_settings set request_log_retention_days = 90;
--
-- Erasure: public.erase_user_data(user_id) deletes everything the ledger holds about one user (request
-- log, daily usage, limits, rate window, reservations) and says how many rows went. It runs by itself
-- when the user is deleted from auth.users (Dashboard -> Authentication -> delete user, or
-- supabase.auth.admin.deleteUser), so deleting an account erases its usage history too. usage_daily
-- (counts, tokens and cost per day, no text) is not purged by age: quotas and billing read it; it goes
-- when its user does. Trusted server callers' rows (the nil uuid) have no auth.users row: erase them by
-- calling the function.

-- ledger_settings: one row, read by the purge. ---------------------------------------------------------

create table public.ledger_settings (
  id                         boolean primary key default true check (id),
  request_log_retention_days integer not null default 30 check (request_log_retention_days between 1 and 3650),
  updated_at                 timestamptz not null default now()
);

comment on table public.ledger_settings is
  'Ledger policy (one row): how many days request_log rows are kept before purge_request_log deletes them.';

insert into public.ledger_settings (id) values (true);

alter table public.ledger_settings enable row level security;  -- no policy: only the server reads it
revoke all on public.ledger_settings from anon, authenticated;

-- The purge finds old rows by age alone.
create index request_log_created_at_idx on public.request_log (created_at);

-- purge_request_log: delete request_log rows older than the retention period. ---------------------------

create function public.purge_request_log(p_retention_days integer default null) returns integer
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_days    integer;
  v_deleted integer;
begin
  v_days := coalesce(p_retention_days, (select s.request_log_retention_days from public.ledger_settings s), 30);
  if v_days < 1 then
    raise exception 'purge_request_log: the retention period must be at least 1 day, got %', v_days
      using errcode = '22023';
  end if;
  delete from public.request_log r where r.created_at < now() - make_interval(days => v_days);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end;
$$;

comment on function public.purge_request_log(integer) is
  'Delete request_log rows older than the retention period (ledger_settings, or the given days); returns how many.';

revoke execute on function public.purge_request_log(integer) from public, anon, authenticated;
grant execute on function public.purge_request_log(integer) to service_role;

-- erase_user_data: everything the ledger holds about one user. ------------------------------------------
--
-- Lock order as in ledger_begin/ledger_finish: the user's usage_daily rows first, reservations after.

create function public.erase_user_data(p_user_id uuid) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_log          integer;
  v_usage        integer;
  v_limits       integer;
  v_windows      integer;
  v_reservations integer;
begin
  if p_user_id is null then
    raise exception 'erase_user_data: p_user_id is required' using errcode = '22004';
  end if;
  perform 1 from public.usage_daily u where u.user_id = p_user_id order by u.day desc for update;
  delete from public.ledger_reservations r where r.user_id = p_user_id;
  get diagnostics v_reservations = row_count;
  delete from public.usage_daily u where u.user_id = p_user_id;
  get diagnostics v_usage = row_count;
  delete from public.request_log r where r.user_id = p_user_id;
  get diagnostics v_log = row_count;
  delete from public.user_limits l where l.user_id = p_user_id;
  get diagnostics v_limits = row_count;
  delete from public.rate_windows w where w.user_id = p_user_id;
  get diagnostics v_windows = row_count;
  return jsonb_build_object(
    'request_log', v_log, 'usage_daily', v_usage, 'user_limits', v_limits,
    'rate_windows', v_windows, 'ledger_reservations', v_reservations);
end;
$$;

comment on function public.erase_user_data(uuid) is
  'Delete every ledger row of one user (request log, usage, limits, rate window, reservations); returns counts.';

revoke execute on function public.erase_user_data(uuid) from public, anon, authenticated;
grant execute on function public.erase_user_data(uuid) to service_role;

-- Deleting a Supabase user erases their ledger rows. ----------------------------------------------------

create function public.erase_deleted_user_data() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.erase_user_data(old.id);
  return old;
end;
$$;

revoke execute on function public.erase_deleted_user_data() from public, anon, authenticated;

do $erase_on_delete$
begin
  if to_regclass('auth.users') is null then
    raise warning 'no auth.users here: deleting a user will not erase their ledger rows by itself';
    return;
  end if;
  create trigger erase_ledger_data_after_user_delete
    after delete on auth.users
    for each row execute function public.erase_deleted_user_data();
end
$erase_on_delete$;

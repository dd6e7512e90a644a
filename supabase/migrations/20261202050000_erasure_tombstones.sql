-- A deleted user stays erased (docs/ledger.md, "Retention and erasure").
--
-- Deleting a user from auth.users erases their ledger rows (20261202030000_retention_and_erasure.sql), but
-- their access tokens stay valid until they expire (an hour by default) and a request may be running:
-- either would write new rows for them. So the deletion also leaves a tombstone, and for a day after it
-- every ledger write for that user is refused (SQLSTATE 23514: the functions answer that request 503 and
-- write nothing; an answer already on its way is logged as usage_unrecorded, not stored). After a day no
-- token of theirs is valid any more; purge_request_log's daily run clears old tombstones.

create table public.erased_users (
  user_id   uuid primary key,
  erased_at timestamptz not null default now()
);

comment on table public.erased_users is
  'Users deleted from auth.users in the last day: the ledger refuses new rows for them (then cleared).';

alter table public.erased_users enable row level security;  -- no policy: only the server reads it
revoke all on public.erased_users from anon, authenticated;

create or replace function public.erase_deleted_user_data() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.erased_users (user_id) values (old.id)
  on conflict (user_id) do update set erased_at = excluded.erased_at;
  perform public.erase_user_data(old.id);
  return old;
end;
$$;

create function public.ledger_refuse_erased_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if exists (select 1 from public.erased_users e
              where e.user_id = new.user_id and e.erased_at > now() - interval '1 day') then
    raise exception 'ledger: user % was deleted; nothing more is recorded for them', new.user_id
      using errcode = '23514';
  end if;
  return new;
end;
$$;

revoke execute on function public.ledger_refuse_erased_user() from public, anon, authenticated;

create trigger refuse_erased_user before insert on public.request_log
  for each row execute function public.ledger_refuse_erased_user();
create trigger refuse_erased_user before insert on public.usage_daily
  for each row execute function public.ledger_refuse_erased_user();
create trigger refuse_erased_user before insert on public.ledger_reservations
  for each row execute function public.ledger_refuse_erased_user();
create trigger refuse_erased_user before insert on public.rate_windows
  for each row execute function public.ledger_refuse_erased_user();

-- Tombstones older than a day protect nothing (every token of theirs has expired): the daily purge drops them.
create or replace function public.purge_request_log(p_retention_days integer default null) returns integer
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
  delete from public.erased_users e where e.erased_at < now() - interval '7 days';
  return v_deleted;
end;
$$;

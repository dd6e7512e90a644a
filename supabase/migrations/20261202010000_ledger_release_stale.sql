-- ledger_release_stale: give a user back what crashed instances still hold (docs/ledger.md).
--
-- A reservation is released by ledger_finish. When the instance that took it dies first (a crash, an
-- out-of-memory kill, a deploy that cut it off), ledger_begin's own sweep frees it after 15 minutes: the
-- longest any instance could still be running a call. Until then it counts against the user's daily
-- requests and cost. The functions know their own bound (OPENROUTER_DEADLINE plus the shutdown drain),
-- so when a begin is refused over a daily quota they call this with that bound and, if anything was
-- released, try the begin again: a crash costs the user minutes at most, never a quarter of an hour,
-- and the common path pays nothing (only a refusal triggers the extra round trip).
--
-- Lock order, as in ledger_begin and ledger_finish: usage_daily rows first (today, then older days in
-- descending order), ledger_reservations rows after.

create function public.ledger_release_stale(
  p_user_id uuid,
  p_older_than_seconds integer
) returns integer
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_now          timestamptz := now();
  v_day          date := (now() at time zone 'utc')::date;
  v_stale_before timestamptz;
  v_released     integer;
begin
  if p_user_id is null or p_older_than_seconds is null or p_older_than_seconds < 0 then
    raise exception 'ledger_release_stale: p_user_id and p_older_than_seconds >= 0 are required'
      using errcode = '22023';
  end if;
  v_stale_before := v_now - make_interval(secs => p_older_than_seconds);

  -- Nothing older than the bound: no lock taken (the usual answer after a refusal).
  if not exists (select 1 from public.ledger_reservations r
                  where r.user_id = p_user_id and r.created_at < v_stale_before) then
    return 0;
  end if;

  perform 1 from public.usage_daily u where u.user_id = p_user_id and u.day = v_day for update;
  perform 1
     from public.usage_daily u
    where u.user_id = p_user_id
      and u.day < v_day
      and u.day in (select r.day from public.ledger_reservations r
                     where r.user_id = p_user_id and r.created_at < v_stale_before)
    order by u.day desc
      for update;

  with released as (
    delete from public.ledger_reservations r
     where r.user_id = p_user_id and r.created_at < v_stale_before
    returning r.day, r.amount_usd
  ), per_day as (
    select released.day, count(*)::integer as requests, sum(released.amount_usd) as amount_usd
      from released
     group by released.day
  ), updated as (
    update public.usage_daily u
       set in_flight = greatest(u.in_flight - per_day.requests, 0),
           reserved_usd = greatest(u.reserved_usd - per_day.amount_usd, 0),
           updated_at = v_now
      from per_day
     where u.user_id = p_user_id and u.day = per_day.day
    returning per_day.requests
  )
  select coalesce(sum(updated.requests), 0)::integer into v_released from updated;

  return v_released;
end;
$$;

comment on function public.ledger_release_stale(uuid, integer) is
  'Release one user''s reservations older than the given age (their instance died before finishing).';

revoke execute on function public.ledger_release_stale(uuid, integer) from public, anon, authenticated;
grant execute on function public.ledger_release_stale(uuid, integer) to service_role;

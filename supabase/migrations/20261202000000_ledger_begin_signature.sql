-- ledger_begin without its unused p_function/p_model parameters (docs/ledger.md).
--
-- The definition moved here from 20261127000000_ledger.sql rather than being changed there: a project
-- that already applied that file keeps the old eight-argument function until this migration drops it,
-- and a fresh database never creates it. Both end in the same state, and the body exists in this file
-- only.
--
-- Callers of the old signature (functions deployed before this change) fail with "function does not
-- exist" until they are redeployed: push this migration and redeploy the functions in one go.

drop function if exists public.ledger_begin(text, uuid, text, text, numeric, integer, integer, numeric);

-- ledger_begin: admission and reservation in one round trip. ----------------------------------------
--
-- Atomicity comes from one row lock: the user's usage_daily row for today is locked `for update`
-- before anything is read. Concurrent begins for the same user therefore run one after another, each
-- seeing the in_flight and reserved_usd the previous one committed, so N parallel requests can never
-- all pass a check that only one of them should pass. Different users lock different rows and never
-- wait for each other.
--
-- Lock order, to stay deadlock-free with ledger_finish: usage_daily rows first (today, then older days
-- in descending order), ledger_reservations rows after. ledger_finish also locks its usage_daily row
-- before it deletes its reservation.

create function public.ledger_begin(
  p_request_id text,
  p_user_id uuid,
  p_reserve_usd numeric,
  p_default_rpm integer,
  p_default_daily_requests integer,
  p_default_daily_cost_usd numeric
) returns jsonb
language plpgsql
security definer
set search_path = ''
-- A user's usage row can be locked by someone else (an operator's open transaction): fail fast, so the
-- function answers 503 instead of hanging every request of that user.
set lock_timeout = '3s'
as $$
declare
  v_now            timestamptz := now();
  v_day            date := (now() at time zone 'utc')::date;
  v_window         timestamptz := date_trunc('minute', now() at time zone 'utc') at time zone 'utc';
  v_next_midnight  timestamptz := ((now() at time zone 'utc')::date + 1)::timestamp at time zone 'utc';
  v_stale_before   timestamptz := now() - interval '15 minutes';
  v_reserve        numeric := round(coalesce(p_reserve_usd, 0), 8);
  v_usage          public.usage_daily;
  v_limits         public.user_limits;
  v_rpm            integer;
  v_daily_requests integer;
  v_daily_cost     numeric;
  v_window_count   integer;
  v_answer         jsonb;
begin
  if p_request_id is null or p_user_id is null then
    raise exception 'ledger_begin: p_request_id and p_user_id are required' using errcode = '22004';
  end if;
  if v_reserve < 0 then
    raise exception 'ledger_begin: p_reserve_usd must be >= 0, got %', p_reserve_usd using errcode = '22023';
  end if;

  -- The per-user lock (see above). The insert makes sure there is a row to lock; `on conflict do
  -- nothing` waits for a concurrent first insert to commit instead of failing.
  insert into public.usage_daily (user_id, day) values (p_user_id, v_day) on conflict do nothing;
  select u.* into v_usage
    from public.usage_daily u
   where u.user_id = p_user_id and u.day = v_day
     for update;

  -- Release reservations whose instance died between begin and finish (older than 15 minutes).
  -- Lock the older days' usage rows first, newest to oldest, to keep the lock order.
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
  )
  update public.usage_daily u
     set in_flight = greatest(u.in_flight - per_day.requests, 0),
         reserved_usd = greatest(u.reserved_usd - per_day.amount_usd, 0),
         updated_at = v_now
    from per_day
   where u.user_id = p_user_id and u.day = per_day.day;

  if found then
    select u.* into v_usage from public.usage_daily u where u.user_id = p_user_id and u.day = v_day;
  end if;

  -- A repeated begin (a retried call) gets the first admission back and reserves nothing more.
  select r.admission into v_answer
    from public.ledger_reservations r
   where r.request_id = p_request_id and r.user_id = p_user_id;
  if found then
    return v_answer;
  end if;

  -- Limits: the user's override, else the function's default; null means unlimited.
  select l.* into v_limits from public.user_limits l where l.user_id = p_user_id;
  v_rpm := coalesce(v_limits.rpm, p_default_rpm);
  v_daily_requests := coalesce(v_limits.daily_requests, p_default_daily_requests);
  v_daily_cost := coalesce(v_limits.daily_cost_usd, p_default_daily_cost_usd);

  select case when w.window_start = v_window then w.requests else 0 end into v_window_count
    from public.rate_windows w
   where w.user_id = p_user_id;
  v_window_count := coalesce(v_window_count, 0);

  if v_rpm is not null and v_window_count >= v_rpm then
    return jsonb_build_object(
      'admitted', false, 'reason', 'rate_limited', 'limit', 'rpm',
      'retry_after', greatest(1, ceil(extract(epoch from (v_window + interval '1 minute') - v_now)))::integer);
  end if;

  -- In-flight requests count against the daily quota: otherwise a burst of parallel requests would
  -- all see the same settled count and overshoot it.
  if v_daily_requests is not null and v_usage.requests + v_usage.in_flight >= v_daily_requests then
    return jsonb_build_object(
      'admitted', false, 'reason', 'quota_exceeded', 'limit', 'daily_requests',
      'retry_after', greatest(1, ceil(extract(epoch from v_next_midnight - v_now)))::integer);
  end if;

  if v_daily_cost is not null and v_usage.cost_usd + v_usage.reserved_usd + v_reserve > v_daily_cost then
    return jsonb_build_object(
      'admitted', false, 'reason', 'quota_exceeded', 'limit', 'daily_cost_usd',
      'retry_after', greatest(1, ceil(extract(epoch from v_next_midnight - v_now)))::integer);
  end if;

  -- Admitted: count the request in its minute window and take the reservation.
  insert into public.rate_windows as w (user_id, window_start, requests)
  values (p_user_id, v_window, 1)
  on conflict (user_id) do update
     set requests = case when w.window_start = excluded.window_start then w.requests + 1 else 1 end,
         window_start = excluded.window_start;

  update public.usage_daily u
     set in_flight = u.in_flight + 1,
         reserved_usd = u.reserved_usd + v_reserve,
         updated_at = v_now
   where u.user_id = p_user_id and u.day = v_day;

  v_answer := jsonb_build_object(
    'admitted', true,
    'day', v_day,
    'reserved_usd', trim_scale(v_reserve),
    'limits', jsonb_build_object(
      'rpm', v_rpm,
      'daily_requests', v_daily_requests,
      'daily_cost_usd', trim_scale(v_daily_cost)));

  insert into public.ledger_reservations (request_id, user_id, day, amount_usd, admission, created_at)
  values (p_request_id, p_user_id, v_day, v_reserve, v_answer, v_now);

  return v_answer;
end;
$$;

comment on function public.ledger_begin(text, uuid, numeric, integer, integer, numeric) is
  'Admit a request (rpm window, daily requests, daily cost) and reserve its cost, atomically per user.';

revoke execute on function public.ledger_begin(text, uuid, numeric, integer, integer, numeric)
  from public, anon, authenticated;
grant execute on function public.ledger_begin(text, uuid, numeric, integer, integer, numeric)
  to service_role;

-- The ledger's fast path (docs/ledger.md): the same rules in fewer statements per call.
--
-- ledger_begin and ledger_finish are each a round trip of their own; inside them, every statement and
-- every trigger call costs time too. This migration redefines both with the same answers, the same locks
-- in the same order, and the same refusals:
--
-- * The erased-user tombstone (20261202050000_erasure_tombstones.sql) is checked once per call, inside
--   the functions, instead of by a row trigger on each of the four inserts (up to four trigger calls per
--   request). The triggers go: the ledger functions are the only writers of these tables (the API roles
--   have no write rights; erase_user_data and ledger_release_stale only delete and update). The check
--   reads a fresh snapshot after the call's first write, as the triggers' checks did, so the window in
--   which a deletion committing at the same moment cannot be seen is the same sub-millisecond one.
-- * ledger_begin locks the user's usage row first and inserts it only when it is missing (the first
--   request of the day), instead of an insert-on-conflict on every call; reads what it needs (tombstone,
--   stale reservations, a repeated begin's first answer, the user's limits, the minute window) in one
--   statement; and runs the stale sweep only when there is something stale. Admission's three writes are
--   one statement.
-- * ledger_finish writes its log row only when no tombstone stands (one statement; the tombstone is
--   looked at again only when no row was written), finds and locks the reservation's usage row in one
--   statement, and releases the reservation and settles the usage in one.
--
-- Re-runnable (create or replace, drop ... if exists): tests/db/test_ledger_migrations.py applies it again
-- after replaying 20261202000000_ledger_begin_signature.sql on an upgraded database.

drop trigger if exists refuse_erased_user on public.request_log;
drop trigger if exists refuse_erased_user on public.usage_daily;
drop trigger if exists refuse_erased_user on public.ledger_reservations;
drop trigger if exists refuse_erased_user on public.rate_windows;
drop function if exists public.ledger_refuse_erased_user();

-- ledger_begin ---------------------------------------------------------------------------------------
--
-- Atomicity comes from one row lock: the user's usage_daily row for today is locked `for update` before
-- anything is read. Concurrent begins for the same user therefore run one after another, each seeing
-- the in_flight and reserved_usd the previous one committed. Different users never wait for each other.
--
-- Lock order, to stay deadlock-free with ledger_finish and ledger_release_stale: usage_daily rows first
-- (today, then older days in descending order), ledger_reservations rows after.

create or replace function public.ledger_begin(
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
  v_erased         boolean;
  v_stale          boolean;
  v_first          jsonb;
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

  -- The per-user lock (see above). Only the day's first request finds no row: it inserts one (`on
  -- conflict do nothing` waits for a concurrent first insert to commit instead of failing) and locks it.
  select u.* into v_usage
    from public.usage_daily u
   where u.user_id = p_user_id and u.day = v_day
     for update;
  if not found then
    insert into public.usage_daily (user_id, day) values (p_user_id, v_day) on conflict do nothing;
    select u.* into v_usage
      from public.usage_daily u
     where u.user_id = p_user_id and u.day = v_day
       for update;
  end if;

  -- Everything else begin reads, in one statement, under the lock: the tombstone, whether stale
  -- reservations exist, a first admission under this request id, the user's limits, their window.
  select exists (select 1 from public.erased_users e
                  where e.user_id = p_user_id and e.erased_at > v_now - interval '1 day'),
         exists (select 1 from public.ledger_reservations r
                  where r.user_id = p_user_id and r.created_at < v_stale_before),
         (select r.admission from public.ledger_reservations r
           where r.request_id = p_request_id and r.user_id = p_user_id),
         coalesce(l.rpm, p_default_rpm),
         coalesce(l.daily_requests, p_default_daily_requests),
         coalesce(l.daily_cost_usd, p_default_daily_cost_usd),
         coalesce((select case when w.window_start = v_window then w.requests else 0 end
                     from public.rate_windows w where w.user_id = p_user_id), 0)
    into v_erased, v_stale, v_first, v_rpm, v_daily_requests, v_daily_cost, v_window_count
    from (select) as one
    left join public.user_limits l on l.user_id = p_user_id;

  if v_erased then
    raise exception 'ledger: user % was deleted; nothing more is recorded for them', p_user_id
      using errcode = '23514';
  end if;

  -- Release reservations whose instance died between begin and finish (older than 15 minutes). Lock the
  -- older days' usage rows first, newest to oldest, to keep the lock order. The sweep may release
  -- today's usage or this very request's first reservation: read both again.
  if v_stale then
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

    select u.* into v_usage from public.usage_daily u where u.user_id = p_user_id and u.day = v_day;
    select r.admission into v_first
      from public.ledger_reservations r
     where r.request_id = p_request_id and r.user_id = p_user_id;
  end if;

  -- A repeated begin (a retried call) gets the first admission back and reserves nothing more.
  if v_first is not null then
    return v_first;
  end if;

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

  v_answer := jsonb_build_object(
    'admitted', true,
    'day', v_day,
    'reserved_usd', trim_scale(v_reserve),
    'limits', jsonb_build_object(
      'rpm', v_rpm,
      'daily_requests', v_daily_requests,
      'daily_cost_usd', trim_scale(v_daily_cost)));

  -- Admitted: count the request in its minute window and take the reservation, in one statement (the
  -- three writes touch three tables; the usage row is ours already).
  with counted as (
    insert into public.rate_windows as w (user_id, window_start, requests)
    values (p_user_id, v_window, 1)
    on conflict (user_id) do update
       set requests = case when w.window_start = excluded.window_start then w.requests + 1 else 1 end,
           window_start = excluded.window_start
  ), reserved as (
    update public.usage_daily u
       set in_flight = u.in_flight + 1,
           reserved_usd = u.reserved_usd + v_reserve,
           updated_at = v_now
     where u.user_id = p_user_id and u.day = v_day
  )
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

-- ledger_finish --------------------------------------------------------------------------------------
--
-- Idempotent by request id: the log row's primary key decides which finish is first. A concurrent
-- duplicate waits on that key until the first commits, then inserts nothing and reports a duplicate,
-- so usage is settled exactly once. Usage is settled for a request that holds a reservation, or that
-- the function says ran (p_row.admitted); a refused request (429 from ledger_begin) leaves just its
-- log row.

create or replace function public.ledger_finish(
  p_request_id text,
  p_user_id uuid,
  p_row jsonb
) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_prompt_tokens     bigint := (p_row ->> 'prompt_tokens')::numeric;
  v_completion_tokens bigint := (p_row ->> 'completion_tokens')::numeric;
  v_total_tokens      bigint := (p_row ->> 'total_tokens')::numeric;
  v_cost_usd          numeric := round((p_row ->> 'cost_usd')::numeric, 8);
  v_day               date;
  v_settled           boolean := false;
begin
  if p_request_id is null or p_user_id is null then
    raise exception 'ledger_finish: p_request_id and p_user_id are required' using errcode = '22004';
  end if;

  -- The log row, unless a tombstone stands for the user.
  insert into public.request_log (
    request_id, user_id, function, model, status, error_type, outcome, latency_ms, attempts,
    prompt_tokens, completion_tokens, total_tokens, cost_usd, generation_id,
    prompt_preview, response_preview)
  select
    p_request_id, p_user_id, p_row ->> 'function', p_row ->> 'model',
    (p_row ->> 'status')::numeric, p_row ->> 'error_type', p_row ->> 'outcome',
    round((p_row ->> 'latency_ms')::numeric), (p_row ->> 'attempts')::numeric,
    v_prompt_tokens, v_completion_tokens, v_total_tokens, v_cost_usd, p_row ->> 'generation_id',
    -- Previews are truncated here rather than rejected by the CHECK: losing the log row (and the usage
    -- settlement with it) over a long preview would be the worse failure.
    left(p_row ->> 'prompt_preview', 512), left(p_row ->> 'response_preview', 512)
   where not exists (select 1 from public.erased_users e
                      where e.user_id = p_user_id and e.erased_at > now() - interval '1 day')
  on conflict (request_id) do nothing;

  if not found then
    -- No row: a duplicate finish, or a deleted user (refused whether or not the row exists).
    if exists (select 1 from public.erased_users e
                where e.user_id = p_user_id and e.erased_at > now() - interval '1 day') then
      raise exception 'ledger: user % was deleted; nothing more is recorded for them', p_user_id
        using errcode = '23514';
    end if;
    return jsonb_build_object('recorded', false, 'duplicate', true);
  end if;

  -- Same lock order as ledger_begin: the reservation's usage row first, then the reservation.
  select u.day into v_day
    from public.ledger_reservations r
    join public.usage_daily u on u.user_id = r.user_id and u.day = r.day
   where r.request_id = p_request_id and r.user_id = p_user_id
     for update of u;

  if found then
    -- The reservation released and its usage settled in one statement. No row means ledger_begin
    -- released it as stale while we waited for the lock. Settled on the reservation's day: a request
    -- that crosses midnight counts where it began.
    with released as (
      delete from public.ledger_reservations r
       where r.request_id = p_request_id and r.user_id = p_user_id
      returning r.amount_usd
    )
    update public.usage_daily u
       set requests = u.requests + 1,
           prompt_tokens = u.prompt_tokens + coalesce(v_prompt_tokens, 0),
           completion_tokens = u.completion_tokens + coalesce(v_completion_tokens, 0),
           total_tokens = u.total_tokens + coalesce(v_total_tokens, 0),
           cost_usd = u.cost_usd + coalesce(v_cost_usd, 0),
           reserved_usd = greatest(u.reserved_usd - released.amount_usd, 0),
           in_flight = greatest(u.in_flight - 1, 0),
           updated_at = now()
      from released
     where u.user_id = p_user_id and u.day = v_day;
    v_settled := found;
  end if;

  -- A request that ran but holds no reservation any more (it outlived the 15-minute stale sweep, or it
  -- was served while ledger_begin was failing and LEDGER_FAILURE_MODE=open) is still counted, on today.
  if not v_settled and coalesce((p_row ->> 'admitted')::boolean, false) then
    v_day := (now() at time zone 'utc')::date;
    insert into public.usage_daily (user_id, day) values (p_user_id, v_day) on conflict do nothing;
    update public.usage_daily u
       set requests = u.requests + 1,
           prompt_tokens = u.prompt_tokens + coalesce(v_prompt_tokens, 0),
           completion_tokens = u.completion_tokens + coalesce(v_completion_tokens, 0),
           total_tokens = u.total_tokens + coalesce(v_total_tokens, 0),
           cost_usd = u.cost_usd + coalesce(v_cost_usd, 0),
           updated_at = now()
     where u.user_id = p_user_id and u.day = v_day;
  end if;

  return jsonb_build_object('recorded', true);
end;
$$;

comment on function public.ledger_finish(text, uuid, jsonb) is
  'Write a request''s log row and settle its usage from the provider-reported numbers; idempotent by request id.';

revoke execute on function public.ledger_finish(text, uuid, jsonb) from public, anon, authenticated;
grant execute on function public.ledger_finish(text, uuid, jsonb) to service_role;

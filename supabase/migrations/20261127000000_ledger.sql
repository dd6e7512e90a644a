-- The ledger (docs/ledger.md): every request logged, usage counted per user and UTC day, and
-- per-user limits enforced by two security-definer functions that only the server may call.
--
-- user_id columns are plain uuids with no foreign key to auth.users: trusted server callers without
-- a Supabase user are accounted under the nil uuid (00000000-0000-0000-0000-000000000000), and a
-- log must outlive the user it describes.
--
-- Grants: Supabase's default privileges give anon, authenticated and service_role every right on new
-- tables and functions in public. Row level security restricts reads; the explicit revokes below make
-- every write go through ledger_finish/ledger_begin, so a signed-in user can never forge their usage.

-- request_log: one row per request, written once by ledger_finish. ----------------------------------

create table public.request_log (
  request_id        text primary key,
  user_id           uuid not null,
  function          text,
  model             text,
  status            integer,
  error_type        text,
  outcome           text,
  latency_ms        integer,
  attempts          integer,
  prompt_tokens     integer,
  completion_tokens integer,
  total_tokens      integer,
  cost_usd          numeric(14, 8),
  generation_id     text,
  prompt_preview    text check (char_length(prompt_preview) <= 512),
  response_preview  text check (char_length(response_preview) <= 512),
  created_at        timestamptz not null default now()
);

comment on table public.request_log is
  'One row per request through the functions; written only by public.ledger_finish.';

-- A user's own history, newest first: what the dashboard query and the RLS filter both need.
create index request_log_user_id_created_at_idx on public.request_log (user_id, created_at desc);

alter table public.request_log enable row level security;

create policy "users read their own request log"
  on public.request_log for select to authenticated
  using (user_id = (select auth.uid()));  -- (select ...) so auth.uid() runs once per query, not per row

revoke insert, update, delete, truncate, references, trigger on public.request_log from anon, authenticated;

-- usage_daily: per user and UTC day, settled usage plus what is in flight. --------------------------

create table public.usage_daily (
  user_id           uuid not null,
  day               date not null,
  requests          integer not null default 0 check (requests >= 0),
  in_flight         integer not null default 0 check (in_flight >= 0),
  prompt_tokens     bigint not null default 0,
  completion_tokens bigint not null default 0,
  total_tokens      bigint not null default 0,
  cost_usd          numeric(14, 8) not null default 0,
  reserved_usd      numeric(14, 8) not null default 0 check (reserved_usd >= 0),
  updated_at        timestamptz not null default now(),
  primary key (user_id, day)
);

comment on table public.usage_daily is
  'Usage per user and UTC day. Its row is also the per-user lock that serializes ledger_begin.';

alter table public.usage_daily enable row level security;

create policy "users read their own daily usage"
  on public.usage_daily for select to authenticated
  using (user_id = (select auth.uid()));

revoke insert, update, delete, truncate, references, trigger on public.usage_daily from anon, authenticated;

-- user_limits: per-user overrides of the functions' default limits (null = use the default). -------

create table public.user_limits (
  user_id        uuid primary key,
  rpm            integer check (rpm >= 0),
  daily_requests integer check (daily_requests >= 0),
  daily_cost_usd numeric(14, 8) check (daily_cost_usd >= 0),
  updated_at     timestamptz not null default now()
);

comment on table public.user_limits is
  'Per-user limits; a null column falls back to the default the function passes to ledger_begin.';

alter table public.user_limits enable row level security;

-- Users may see their limits (to show "x of y left"), never change them: only service_role or the
-- owner (dashboard, SQL) manage this table.
create policy "users read their own limits"
  on public.user_limits for select to authenticated
  using (user_id = (select auth.uid()));

revoke insert, update, delete, truncate, references, trigger on public.user_limits from anon, authenticated;

-- rate_windows: the current fixed one-minute window per user (one row per user, overwritten). -------

create table public.rate_windows (
  user_id      uuid primary key,
  window_start timestamptz not null,
  requests     integer not null default 0 check (requests >= 0)
);

comment on table public.rate_windows is
  'Requests admitted in each user''s current one-minute window; internal to ledger_begin.';

-- Internal bookkeeping: RLS on with no policy at all, and no rights for the API roles, so nothing
-- but the ledger functions (and service_role, which bypasses RLS) ever sees it.
alter table public.rate_windows enable row level security;

revoke all on public.rate_windows from anon, authenticated;

-- ledger_reservations: admitted requests whose finish has not arrived yet. --------------------------

create table public.ledger_reservations (
  request_id text primary key,
  user_id    uuid not null,
  day        date not null,  -- the day the request settles on, even if it finishes after midnight
  amount_usd numeric(14, 8) not null check (amount_usd >= 0),
  admission  jsonb not null,  -- ledger_begin's answer, returned again to a repeated begin
  created_at timestamptz not null default now()
);

comment on table public.ledger_reservations is
  'Cost reserved by ledger_begin and released by ledger_finish (or, after 15 minutes, by the next begin).';

-- The stale-reservation sweep in ledger_begin looks up one user's oldest reservations.
create index ledger_reservations_user_id_created_at_idx on public.ledger_reservations (user_id, created_at);

alter table public.ledger_reservations enable row level security;

revoke all on public.ledger_reservations from anon, authenticated;

-- ledger_begin: admission and reservation in one round trip. It is defined in
-- 20261202000000_ledger_begin_signature.sql (its signature changed after this migration shipped; the
-- body lives there only, so a fresh database and an upgraded one end up with the same function).

-- ledger_finish: the log row, and usage settled from what the provider reported. --------------------
--
-- Idempotent by request id: the log row's primary key decides which finish is first. A concurrent
-- duplicate waits on that key until the first commits, then inserts nothing and reports a duplicate,
-- so usage is settled exactly once. Usage is settled for a request that holds a reservation, or that
-- the function says ran (p_row.admitted); a refused request (429 from ledger_begin) leaves just its
-- log row.

create function public.ledger_finish(
  p_request_id text,
  p_user_id uuid,
  p_row jsonb
) returns jsonb
language plpgsql
security definer
set search_path = ''
-- A user's usage row can be locked by someone else (an operator's open transaction): fail fast, so the
-- function answers 503 instead of hanging every request of that user.
set lock_timeout = '3s'
as $$
declare
  v_prompt_tokens     bigint := (p_row ->> 'prompt_tokens')::numeric;
  v_completion_tokens bigint := (p_row ->> 'completion_tokens')::numeric;
  v_total_tokens      bigint := (p_row ->> 'total_tokens')::numeric;
  v_cost_usd          numeric := round((p_row ->> 'cost_usd')::numeric, 8);
  v_day               date;
  v_reserved          numeric;
  v_settled           boolean := false;
begin
  if p_request_id is null or p_user_id is null then
    raise exception 'ledger_finish: p_request_id and p_user_id are required' using errcode = '22004';
  end if;

  insert into public.request_log (
    request_id, user_id, function, model, status, error_type, outcome, latency_ms, attempts,
    prompt_tokens, completion_tokens, total_tokens, cost_usd, generation_id,
    prompt_preview, response_preview)
  values (
    p_request_id, p_user_id, p_row ->> 'function', p_row ->> 'model',
    (p_row ->> 'status')::numeric, p_row ->> 'error_type', p_row ->> 'outcome',
    round((p_row ->> 'latency_ms')::numeric), (p_row ->> 'attempts')::numeric,
    v_prompt_tokens, v_completion_tokens, v_total_tokens, v_cost_usd, p_row ->> 'generation_id',
    -- Previews are truncated here rather than rejected by the CHECK: losing the log row (and the usage
    -- settlement with it) over a long preview would be the worse failure.
    left(p_row ->> 'prompt_preview', 512), left(p_row ->> 'response_preview', 512))
  on conflict (request_id) do nothing;

  if not found then
    return jsonb_build_object('recorded', false, 'duplicate', true);
  end if;

  select r.day into v_day
    from public.ledger_reservations r
   where r.request_id = p_request_id and r.user_id = p_user_id;

  if found then
    -- Same lock order as ledger_begin: the usage row first, then the reservation.
    perform 1 from public.usage_daily u where u.user_id = p_user_id and u.day = v_day for update;

    delete from public.ledger_reservations r
     where r.request_id = p_request_id and r.user_id = p_user_id
    returning r.amount_usd into v_reserved;
    v_settled := found;

    -- Not found here means ledger_begin released it as stale while we waited for the lock.
    if v_settled then
      -- Settled on the reservation's day: a request that crosses midnight counts where it began.
      update public.usage_daily u
         set requests = u.requests + 1,
             prompt_tokens = u.prompt_tokens + coalesce(v_prompt_tokens, 0),
             completion_tokens = u.completion_tokens + coalesce(v_completion_tokens, 0),
             total_tokens = u.total_tokens + coalesce(v_total_tokens, 0),
             cost_usd = u.cost_usd + coalesce(v_cost_usd, 0),
             reserved_usd = greatest(u.reserved_usd - v_reserved, 0),
             in_flight = greatest(u.in_flight - 1, 0),
             updated_at = now()
       where u.user_id = p_user_id and u.day = v_day;
    end if;
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

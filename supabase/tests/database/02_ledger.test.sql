-- What ledger_begin and ledger_finish do (docs/ledger.md). The whole file is one transaction, so now()
-- stands still: every begin falls in the same minute window and the same UTC day.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(63);

-- Helpers that read like the sentences below; they live in pg_temp and vanish with the transaction.
create function pg_temp.begin_request(
  request_id text, user_id uuid, reserve_usd numeric default 0.01,
  rpm integer default null, daily_requests integer default null, daily_cost_usd numeric default null
) returns jsonb language sql as $$
  select public.ledger_begin(request_id, user_id, reserve_usd, rpm, daily_requests, daily_cost_usd)
$$;

create function pg_temp.finish_request(
  request_id text, user_id uuid, cost_usd numeric default 0.002, status integer default 200
) returns jsonb language sql as $$
  select public.ledger_finish(request_id, user_id, jsonb_build_object(
    'function', 'chat', 'model', 'test/model', 'status', status, 'outcome', 'ok', 'latency_ms', 812.6,
    'attempts', 1, 'prompt_tokens', 10, 'completion_tokens', 5, 'total_tokens', 15, 'cost_usd', cost_usd,
    'generation_id', 'gen-' || request_id, 'prompt_preview', 'Hello', 'response_preview', 'Hi!'))
$$;

create function pg_temp.today(user_id uuid) returns public.usage_daily language sql as $$
  select u.* from public.usage_daily u where u.user_id = $1 and u.day = (now() at time zone 'utc')::date
$$;

create function pg_temp.seconds_to_minute_end() returns integer language sql as $$
  select greatest(1, ceil(extract(epoch from
    date_trunc('minute', now() at time zone 'utc') + interval '1 minute' - (now() at time zone 'utc'))))::integer
$$;

create function pg_temp.seconds_to_utc_midnight() returns integer language sql as $$
  select greatest(1, ceil(extract(epoch from
    ((now() at time zone 'utc')::date + 1)::timestamp - (now() at time zone 'utc'))))::integer
$$;

create temp table answer (name text primary key, body jsonb not null) on commit drop;

-- Admission takes a reservation (6) ------------------------------------------------------------------
-- user 1 = 10000000-…-01

insert into answer select 'u1', pg_temp.begin_request('u1-a', '10000000-0000-4000-8000-000000000001', 0.01, 60, 100, 1.0);

select is((select body from answer where name = 'u1'),
          jsonb_build_object('admitted', true, 'day', (now() at time zone 'utc')::date, 'reserved_usd', 0.01,
                             'limits', '{"rpm": 60, "daily_requests": 100, "daily_cost_usd": 1.0}'::jsonb),
          'a request within every limit is admitted with its day, reservation and limits');
select is((select body ->> 'day' from answer where name = 'u1'), to_char(now() at time zone 'utc', 'YYYY-MM-DD'),
          'the day is today''s UTC date as YYYY-MM-DD');
select is((pg_temp.today('10000000-0000-4000-8000-000000000001')).in_flight, 1,
          'an admitted request is counted in flight');
select is((pg_temp.today('10000000-0000-4000-8000-000000000001')).reserved_usd, 0.01,
          'an admitted request reserves its cost');
select results_eq($$ select request_id, day, amount_usd from public.ledger_reservations
                      where user_id = '10000000-0000-4000-8000-000000000001' $$,
                  $$ values ('u1-a', (now() at time zone 'utc')::date, 0.01::numeric) $$,
                  'the reservation is recorded with its request id, day and amount');
select is((select requests from public.rate_windows where user_id = '10000000-0000-4000-8000-000000000001'), 1,
          'an admitted request is counted in the current minute window');

-- Finishing releases the reservation and settles the reported usage (6) ---------------------------

select is(pg_temp.finish_request('u1-a', '10000000-0000-4000-8000-000000000001', 0.0042), '{"recorded": true}'::jsonb,
          'the first finish is recorded');
select is_empty($$ select 1 from public.ledger_reservations where request_id = 'u1-a' $$,
                'finishing releases the reservation');
select results_eq($$ select requests, in_flight, prompt_tokens, completion_tokens, total_tokens, cost_usd, reserved_usd
                       from public.usage_daily where user_id = '10000000-0000-4000-8000-000000000001' $$,
                  $$ values (1, 0, 10::bigint, 5::bigint, 15::bigint, 0.0042::numeric, 0::numeric) $$,
                  'usage is settled from the reported numbers, not the reservation');
select results_eq($$ select function, model, status, outcome, latency_ms, attempts, total_tokens, cost_usd, generation_id
                       from public.request_log where request_id = 'u1-a' $$,
                  $$ values ('chat', 'test/model', 200, 'ok', 813, 1, 15, 0.0042::numeric, 'gen-u1-a') $$,
                  'the log row holds the request''s outcome (latency rounded to whole ms)');
select is(public.ledger_finish('u1-long', '10000000-0000-4000-8000-000000000001',
            jsonb_build_object('prompt_preview', repeat('p', 2000), 'response_preview', repeat('r', 600))),
          '{"recorded": true}'::jsonb, 'a finish with over-long previews is still recorded');
select results_eq($$ select char_length(prompt_preview), char_length(response_preview), function, status
                       from public.request_log where request_id = 'u1-long' $$,
                  $$ values (512, 512, null::text, null::integer) $$,
                  'previews are cut to 512 characters and missing keys are stored as null');

-- Requests per minute (5) ---------------------------------------------------------------------------
-- user 2: rpm 2

insert into answer select 'u2-1', pg_temp.begin_request('u2-1', '10000000-0000-4000-8000-000000000002', rpm => 2);
insert into answer select 'u2-2', pg_temp.begin_request('u2-2', '10000000-0000-4000-8000-000000000002', rpm => 2);
insert into answer select 'u2-3', pg_temp.begin_request('u2-3', '10000000-0000-4000-8000-000000000002', rpm => 2);

select results_eq($$ select (body ->> 'admitted')::boolean from answer where name like 'u2-%' order by name $$,
                  array[true, true, false], 'with rpm 2, the third request in a minute is refused');
select is((select body - 'retry_after' from answer where name = 'u2-3'),
          '{"admitted": false, "reason": "rate_limited", "limit": "rpm"}'::jsonb,
          'the refusal says rate_limited by rpm');
select is((select (body ->> 'retry_after')::integer from answer where name = 'u2-3'), pg_temp.seconds_to_minute_end(),
          'retry_after is the number of seconds until the minute window ends');
select is((select requests from public.rate_windows where user_id = '10000000-0000-4000-8000-000000000002'), 2,
          'a refused request does not count in the window');
select is((pg_temp.today('10000000-0000-4000-8000-000000000002')).in_flight, 2,
          'a refused request takes no reservation');

-- A refused request's finish writes only its log row (3) -------------------------------------------

select is(pg_temp.finish_request('u2-3', '10000000-0000-4000-8000-000000000002', null, 429), '{"recorded": true}'::jsonb,
          'the finish of a refused request is recorded');
select is((select status from public.request_log where request_id = 'u2-3'), 429,
          'the refused request is in the log with status 429');
select results_eq($$ select requests, in_flight, reserved_usd from public.usage_daily
                      where user_id = '10000000-0000-4000-8000-000000000002' $$,
                  $$ values (0, 2, 0.02::numeric) $$,
                  'the refused request changes no usage');

-- Daily request quota (4) ---------------------------------------------------------------------------
-- user 3: 2 requests a day; one finished, one in flight

insert into answer select 'u3-1', pg_temp.begin_request('u3-1', '10000000-0000-4000-8000-000000000003', daily_requests => 2);
insert into answer select 'finish u3-1', pg_temp.finish_request('u3-1', '10000000-0000-4000-8000-000000000003');
insert into answer select 'u3-2', pg_temp.begin_request('u3-2', '10000000-0000-4000-8000-000000000003', daily_requests => 2);
insert into answer select 'u3-3', pg_temp.begin_request('u3-3', '10000000-0000-4000-8000-000000000003', daily_requests => 2);

select results_eq($$ select (body ->> 'admitted')::boolean from answer where name like 'u3-%' order by name $$,
                  array[true, true, false], 'with 2 requests a day, one done and one in flight, the third is refused');
select is((select body - 'retry_after' from answer where name = 'u3-3'),
          '{"admitted": false, "reason": "quota_exceeded", "limit": "daily_requests"}'::jsonb,
          'the refusal says quota_exceeded on daily_requests');
select is((select (body ->> 'retry_after')::integer from answer where name = 'u3-3'), pg_temp.seconds_to_utc_midnight(),
          'retry_after is the number of seconds until the next UTC midnight');
select is((pg_temp.today('10000000-0000-4000-8000-000000000003')).in_flight, 1,
          'the refused request is not counted in flight');

-- Daily cost quota (4) ------------------------------------------------------------------------------
-- user 4: $0.05 a day

insert into answer select 'u4-1', pg_temp.begin_request('u4-1', '10000000-0000-4000-8000-000000000004', 0.02, daily_cost_usd => 0.05);
insert into answer select 'finish u4-1', pg_temp.finish_request('u4-1', '10000000-0000-4000-8000-000000000004', 0.03);
-- spent 0.03, reserved 0: 0.03 + 0 + 0.02 = 0.05 is not over the limit
insert into answer select 'u4-2', pg_temp.begin_request('u4-2', '10000000-0000-4000-8000-000000000004', 0.02, daily_cost_usd => 0.05);
-- spent 0.03, reserved 0.02: 0.03 + 0.02 + 0.01 = 0.06 is over it
insert into answer select 'u4-3', pg_temp.begin_request('u4-3', '10000000-0000-4000-8000-000000000004', 0.01, daily_cost_usd => 0.05);
-- a free request still fits exactly
insert into answer select 'u4-4', pg_temp.begin_request('u4-4', '10000000-0000-4000-8000-000000000004', 0, daily_cost_usd => 0.05);

select results_eq($$ select (body ->> 'admitted')::boolean from answer where name like 'u4-%' order by name $$,
                  array[true, true, false, true],
                  'spent plus reserved plus this reservation may reach the daily cost limit but not exceed it');
select is((select body - 'retry_after' from answer where name = 'u4-3'),
          '{"admitted": false, "reason": "quota_exceeded", "limit": "daily_cost_usd"}'::jsonb,
          'the refusal says quota_exceeded on daily_cost_usd');
select is((select (body ->> 'retry_after')::integer from answer where name = 'u4-3'), pg_temp.seconds_to_utc_midnight(),
          'retry_after for the cost quota is the number of seconds until the next UTC midnight');
select is((pg_temp.today('10000000-0000-4000-8000-000000000004')).reserved_usd, 0.02,
          'only admitted requests hold reservations');

-- user_limits overrides the defaults (6) ------------------------------------------------------------
-- user 5: rpm 1 and $0.50 a day of their own; daily_requests left to the default

insert into public.user_limits (user_id, rpm, daily_requests, daily_cost_usd)
values ('10000000-0000-4000-8000-000000000005', 1, null, 0.5);

insert into answer select 'u5-1', pg_temp.begin_request('u5-1', '10000000-0000-4000-8000-000000000005', 0.01, 60, 100, 1.0);
insert into answer select 'u5-2', pg_temp.begin_request('u5-2', '10000000-0000-4000-8000-000000000005', 0.01, 60, 100, 1.0);

select is((select body -> 'limits' from answer where name = 'u5-1'),
          '{"rpm": 1, "daily_requests": 100, "daily_cost_usd": 0.5}'::jsonb,
          'a user''s own limits replace the defaults, and a null one falls back to the default');
select is((select body ->> 'limit' from answer where name = 'u5-2'), 'rpm',
          'the user''s rpm 1, not the default 60, refuses the second request');

insert into answer select 'u5b', pg_temp.begin_request('u5b', '10000000-0000-4000-8000-000000000055');
select is((select body -> 'limits' from answer where name = 'u5b'),
          '{"rpm": null, "daily_requests": null, "daily_cost_usd": null}'::jsonb,
          'no user limits and no defaults means unlimited (nulls)');

insert into public.user_limits (user_id, daily_requests) values ('10000000-0000-4000-8000-000000000056', 0);
insert into answer select 'u5c', pg_temp.begin_request('u5c', '10000000-0000-4000-8000-000000000056', daily_requests => null);
select is((select body ->> 'limit' from answer where name = 'u5c'), 'daily_requests',
          'a user limit applies even when the function has no default');

select throws_ok($$ select pg_temp.begin_request('neg', '10000000-0000-4000-8000-000000000005', -0.01) $$,
                 '22023', null, 'a negative reservation is an error');
select throws_ok($$ select public.ledger_begin(null, '10000000-0000-4000-8000-000000000005', 0, null, null, null) $$,
                 '22004', null, 'a begin without a request id is an error');

-- Finish is idempotent (5) --------------------------------------------------------------------------
-- user 6

insert into answer select 'u6-1', pg_temp.begin_request('u6-1', '10000000-0000-4000-8000-000000000006', 0.05);
select is(pg_temp.finish_request('u6-1', '10000000-0000-4000-8000-000000000006', 0.01), '{"recorded": true}'::jsonb,
          'the first finish is recorded');
create temp table u6_after_first on commit drop as
  select requests, in_flight, total_tokens, cost_usd, reserved_usd from pg_temp.today('10000000-0000-4000-8000-000000000006');

select is(pg_temp.finish_request('u6-1', '10000000-0000-4000-8000-000000000006', 0.99, 500),
          '{"recorded": false, "duplicate": true}'::jsonb,
          'a second finish for the same request is reported as a duplicate');
select results_eq($$ select requests, in_flight, total_tokens, cost_usd, reserved_usd
                       from pg_temp.today('10000000-0000-4000-8000-000000000006') $$,
                  $$ select * from u6_after_first $$,
                  'the duplicate finish changes no usage');
select results_eq($$ select requests, cost_usd from u6_after_first $$, $$ values (1, 0.01::numeric) $$,
                  'the request was counted once, at the first finish''s cost');
select results_eq($$ select status, cost_usd from public.request_log where request_id = 'u6-1' $$,
                  $$ values (200, 0.01::numeric) $$, 'the first log row is kept');

-- Stale reservations (an instance died mid-request) are released by the user's next begin (7) -----
-- user 8

insert into answer select 'u8-dead', pg_temp.begin_request('u8-dead', '10000000-0000-4000-8000-000000000008', 0.03, daily_requests => 1);
update public.ledger_reservations set created_at = now() - interval '16 minutes' where request_id = 'u8-dead';

insert into answer select 'u8-next', pg_temp.begin_request('u8-next', '10000000-0000-4000-8000-000000000008', 0.01, daily_requests => 1);
select is((select (body ->> 'admitted')::boolean from answer where name = 'u8-next'), true,
          'a begin after a stale reservation is admitted, as the stale one no longer counts');
select is_empty($$ select 1 from public.ledger_reservations where request_id = 'u8-dead' $$,
                'the stale reservation is gone');
select results_eq($$ select requests, in_flight, reserved_usd from pg_temp.today('10000000-0000-4000-8000-000000000008') $$,
                  $$ values (0, 1, 0.01::numeric) $$,
                  'the stale request is released without being counted; only the new one is in flight');
select is(pg_temp.finish_request('u8-dead', '10000000-0000-4000-8000-000000000008', 0.02), '{"recorded": true}'::jsonb,
          'a finish arriving after its reservation was released is still logged');
select results_eq($$ select requests, in_flight, cost_usd from pg_temp.today('10000000-0000-4000-8000-000000000008') $$,
                  $$ values (0, 1, 0::numeric) $$,
                  'but it settles no usage, as its reservation no longer exists');
select is(public.ledger_finish('u8-ran', '10000000-0000-4000-8000-000000000008', jsonb_build_object(
            'function', 'chat', 'status', 200, 'outcome', 'ok', 'cost_usd', 0.004, 'prompt_tokens', 3,
            'completion_tokens', 2, 'total_tokens', 5, 'admitted', true)),
          '{"recorded": true}'::jsonb,
          'a request the function says ran, but which holds no reservation, is logged');
select results_eq($$ select requests, in_flight, cost_usd from pg_temp.today('10000000-0000-4000-8000-000000000008') $$,
                  $$ values (1, 1, 0.004::numeric) $$,
                  'and counted on today (it outlived the stale sweep, or ran while ledger_begin was failing)');

-- A repeated begin does not reserve twice (4) -------------------------------------------------------
-- user 9

insert into answer select 'u9-first', pg_temp.begin_request('u9-1', '10000000-0000-4000-8000-000000000009', 0.02, rpm => 5);
insert into answer select 'u9-again', pg_temp.begin_request('u9-1', '10000000-0000-4000-8000-000000000009', 0.02, rpm => 5);

select is((select body from answer where name = 'u9-again'), (select body from answer where name = 'u9-first'),
          'begin twice with the same request id returns the first answer');
select results_eq($$ select in_flight, reserved_usd from pg_temp.today('10000000-0000-4000-8000-000000000009') $$,
                  $$ values (1, 0.02::numeric) $$, 'and reserves only once');
select is((select count(*)::integer from public.ledger_reservations where request_id = 'u9-1'), 1,
          'there is one reservation for the request');
select is((select requests from public.rate_windows where user_id = '10000000-0000-4000-8000-000000000009'), 1,
          'and it counts once in the minute window');

-- A request that crosses midnight settles on the day it was admitted (2) ----------------------------
-- user 10: move its reservation and usage row back one day, as if admitted yesterday

insert into answer select 'u10-1', pg_temp.begin_request('u10-1', '10000000-0000-4000-8000-000000000010', 0.01);
update public.usage_daily set day = day - 1 where user_id = '10000000-0000-4000-8000-000000000010';
update public.ledger_reservations set day = day - 1 where request_id = 'u10-1';

insert into answer select 'finish u10-1', pg_temp.finish_request('u10-1', '10000000-0000-4000-8000-000000000010', 0.004);
select results_eq($$ select day, requests, in_flight, cost_usd, reserved_usd from public.usage_daily
                      where user_id = '10000000-0000-4000-8000-000000000010' $$,
                  $$ values ((now() at time zone 'utc')::date - 1, 1, 0, 0.004::numeric, 0::numeric) $$,
                  'the request is counted on yesterday''s row, where it reserved');
select is_empty($$ select 1 from public.usage_daily where user_id = '10000000-0000-4000-8000-000000000010'
                     and day = (now() at time zone 'utc')::date $$,
                'and today has nothing from it');

-- Stale reservations from an earlier day are released on that day's row (2) ------------------------
-- user 11

insert into answer select 'u11-old', pg_temp.begin_request('u11-old', '10000000-0000-4000-8000-000000000011', 0.03);
update public.usage_daily set day = day - 1 where user_id = '10000000-0000-4000-8000-000000000011';
update public.ledger_reservations set day = day - 1, created_at = now() - interval '1 day'
 where request_id = 'u11-old';

insert into answer select 'u11-new', pg_temp.begin_request('u11-new', '10000000-0000-4000-8000-000000000011', 0.01);
select results_eq($$ select day, in_flight, reserved_usd from public.usage_daily
                      where user_id = '10000000-0000-4000-8000-000000000011' order by day $$,
                  $$ values ((now() at time zone 'utc')::date - 1, 0, 0::numeric),
                            ((now() at time zone 'utc')::date, 1, 0.01::numeric) $$,
                  'yesterday''s stale reservation is released from yesterday''s row');
select is((select count(*)::integer from public.ledger_reservations
            where user_id = '10000000-0000-4000-8000-000000000011'), 1, 'only today''s reservation remains');

-- ledger_release_stale frees what a crashed instance holds, and only what is older than asked (5) ----
-- user 12: two reservations, one taken 10 minutes ago by an instance that died, one just now

insert into answer select 'u12-dead', pg_temp.begin_request('u12-dead', '10000000-0000-4000-8000-000000000012', 0.02);
update public.ledger_reservations set created_at = now() - interval '10 minutes' where request_id = 'u12-dead';
insert into answer select 'u12-live', pg_temp.begin_request('u12-live', '10000000-0000-4000-8000-000000000012', 0.01);

select is(public.ledger_release_stale('10000000-0000-4000-8000-000000000012', 900), 0,
          'nothing is older than 15 minutes: nothing released');
select is(public.ledger_release_stale('10000000-0000-4000-8000-000000000012', 300), 1,
          'the 10-minute-old reservation is released with a 5-minute bound');
select results_eq($$ select in_flight, reserved_usd from public.usage_daily
                      where user_id = '10000000-0000-4000-8000-000000000012' $$,
                  $$ values (1, 0.01::numeric) $$,
                  'the user gets its request and reservation back; the live one still counts');
select results_eq($$ select request_id from public.ledger_reservations
                      where user_id = '10000000-0000-4000-8000-000000000012' $$,
                  array['u12-live'], 'the live reservation is kept');
select throws_ok($$ select public.ledger_release_stale('10000000-0000-4000-8000-000000000012', -1) $$,
                 '22023', null, 'a negative age is refused');

-- The erased-user tombstone is checked by the functions themselves (20261202060000_ledger_fast_path.sql) --
-- user 13: served once, then a tombstone (as the auth.users deletion leaves one)

insert into answer select 'u13-1', pg_temp.begin_request('u13-1', '10000000-0000-4000-8000-000000000013', 0.01);
insert into public.erased_users (user_id) values ('10000000-0000-4000-8000-000000000013');

select throws_ok($$ select public.ledger_begin('u13-2', '10000000-0000-4000-8000-000000000013', 0.01, 60, null, 1.0) $$,
                 '23514', null, 'a new begin for an erased user is refused');
select throws_ok($$ select public.ledger_begin('u13-1', '10000000-0000-4000-8000-000000000013', 0.01, 60, null, 1.0) $$,
                 '23514', null, 'a repeated begin for an erased user is refused, not answered from the reservation');
select throws_ok($$ select public.ledger_finish('u13-1', '10000000-0000-4000-8000-000000000013',
                                                 '{"status": 200, "admitted": true}'::jsonb) $$,
                 '23514', null, 'a finish for an erased user is refused');
select is((select count(*)::integer from public.request_log
            where user_id = '10000000-0000-4000-8000-000000000013'), 0, 'nothing was logged for the erased user');

select * from finish();
rollback;

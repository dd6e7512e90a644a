-- Who may read and write the ledger: users read only their own rows, nobody but the server writes.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(83);

-- Two users with a row of their own in every user-facing table, and some internal bookkeeping.
-- user A = aaaaaaaa-…, user B = bbbbbbbb-…
insert into public.request_log (request_id, user_id, function, model, status)
values ('req-a', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'chat', 'test/model', 200),
       ('req-b', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'chat', 'test/model', 200);
insert into public.usage_daily (user_id, day, requests)
values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', current_date, 3),
       ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', current_date, 5);
insert into public.user_limits (user_id, rpm)
values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 10),
       ('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 20);
insert into public.rate_windows (user_id, window_start, requests)
values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', date_trunc('minute', now()), 1);
insert into public.ledger_reservations (request_id, user_id, day, amount_usd, admission)
values ('req-a-open', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', current_date, 0.01, '{"admitted": true}');

create temp table ledger_tables (name text primary key) on commit drop;
insert into ledger_tables values ('request_log'), ('usage_daily'), ('user_limits'), ('rate_windows'), ('ledger_reservations');
grant select on ledger_tables to anon, authenticated;

-- Row level security is on everywhere (5 tests + 1) ------------------------------------------------

select ok(c.relrowsecurity, format('%s has row level security on', c.relname))
  from pg_catalog.pg_class c
 where c.oid in (select ('public.' || name)::regclass from ledger_tables)
 order by c.relname;

select is_empty(
  $$ select c.relname from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relrowsecurity $$,
  'no table in public is left without row level security');

-- Policies: a read policy for the user-facing tables, none at all for the internal ones (5) --------

select policies_are('public', 'request_log', array['users read their own request log'],
  'request_log has exactly one policy: users read their own log');
select policies_are('public', 'usage_daily', array['users read their own daily usage'],
  'usage_daily has exactly one policy: users read their own usage');
select policies_are('public', 'user_limits', array['users read their own limits'],
  'user_limits has exactly one policy: users read their own limits');
select policies_are('public', 'rate_windows', array[]::name[],
  'rate_windows has no policy: only the ledger functions touch it');
select policies_are('public', 'ledger_reservations', array[]::name[],
  'ledger_reservations has no policy: only the ledger functions touch it');

-- Table privileges: the API roles may at most read (10) ---------------------------------------------

select table_privs_are('public', name, role, case when name in ('rate_windows', 'ledger_reservations')
                                                  then array[]::text[] else array['SELECT'] end,
         format('%s may %s', role, case when name in ('rate_windows', 'ledger_reservations')
                                        then 'not touch ' || name else 'only read ' || name end))
  from ledger_tables, unnest(array['anon', 'authenticated']) as role
 order by name, role;

-- The ledger functions: one ledger_begin, security definer, empty search_path, callable by service_role
-- only (13) -------------------------------------------------------------------------------------------

select is(array(select p.oid::regprocedure::text from pg_catalog.pg_proc p
                 where p.proname = 'ledger_begin' and p.pronamespace = 'public'::regnamespace),
          array['ledger_begin(text,uuid,numeric,integer,integer,numeric)'],
          'ledger_begin exists once, without the p_function/p_model parameters of its first version');
select is_definer('public', 'ledger_begin', array['text', 'uuid', 'numeric', 'integer', 'integer', 'numeric'],
  'ledger_begin runs with its owner''s rights');
select is_definer('public', 'ledger_finish', array['text', 'uuid', 'jsonb'],
  'ledger_finish runs with its owner''s rights');
select is((select proconfig from pg_catalog.pg_proc
            where oid = 'public.ledger_begin(text, uuid, numeric, integer, integer, numeric)'::regprocedure),
          array['search_path=""', 'lock_timeout=3s'], 'ledger_begin pins an empty search_path and a lock timeout');
select is((select proconfig from pg_catalog.pg_proc where oid = 'public.ledger_finish(text, uuid, jsonb)'::regprocedure),
          array['search_path=""', 'lock_timeout=3s'], 'ledger_finish pins an empty search_path and a lock timeout');

select function_privs_are('public', 'ledger_begin',
         array['text', 'uuid', 'numeric', 'integer', 'integer', 'numeric'], role,
         case when role = 'service_role' then array['EXECUTE'] else array[]::text[] end,
         format('%s %s execute ledger_begin', role, case when role = 'service_role' then 'may' else 'may not' end))
  from unnest(array['anon', 'authenticated', 'service_role']) as role;
select function_privs_are('public', 'ledger_finish', array['text', 'uuid', 'jsonb'], role,
         case when role = 'service_role' then array['EXECUTE'] else array[]::text[] end,
         format('%s %s execute ledger_finish', role, case when role = 'service_role' then 'may' else 'may not' end))
  from unnest(array['anon', 'authenticated', 'service_role']) as role;
select ok(not has_function_privilege('public', 'public.ledger_begin(text, uuid, numeric, integer, integer, numeric)', 'execute'),
  'PUBLIC may not execute ledger_begin');
select ok(not has_function_privilege('public', 'public.ledger_finish(text, uuid, jsonb)', 'execute'),
  'PUBLIC may not execute ledger_finish');

-- ledger_release_stale: the same protections (6) ---------------------------------------------------

select is_definer('public', 'ledger_release_stale', array['uuid', 'integer'],
  'ledger_release_stale runs with its owner''s rights');
select is((select proconfig from pg_catalog.pg_proc where oid = 'public.ledger_release_stale(uuid, integer)'::regprocedure),
          array['search_path=""', 'lock_timeout=3s'], 'ledger_release_stale pins an empty search_path and a lock timeout');
select function_privs_are('public', 'ledger_release_stale', array['uuid', 'integer'], role,
         case when role = 'service_role' then array['EXECUTE'] else array[]::text[] end,
         format('%s %s execute ledger_release_stale', role, case when role = 'service_role' then 'may' else 'may not' end))
  from unnest(array['anon', 'authenticated', 'service_role']) as role;
select ok(not has_function_privilege('public', 'public.ledger_release_stale(uuid, integer)', 'execute'),
  'PUBLIC may not execute ledger_release_stale');

-- Signed in as user A (4 + 3 + 20 + 2 + 2 = 31) ----------------------------------------------------

set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}', true);

select results_eq('select request_id from public.request_log', array['req-a'],
  'user A sees their own request log');
select results_eq('select requests from public.usage_daily', array[3],
  'user A sees their own daily usage');
select results_eq('select rpm from public.user_limits', array[10],
  'user A sees their own limits');
select is_empty($$ select 1 from public.request_log where user_id = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
                  union all select 1 from public.usage_daily where user_id = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
                  union all select 1 from public.user_limits where user_id = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb' $$,
  'user A sees none of user B''s rows');

select throws_ok(format('select * from public.%I', name), '42501', null,
         format('user A cannot read %s', name))
  from ledger_tables where name in ('rate_windows', 'ledger_reservations') order by name;
select throws_ok($$ select * from public.ledger_reservations where request_id = 'req-a-open' $$, '42501', null,
  'user A cannot read even their own reservation');

select throws_ok(format(stmt, name), '42501', null, format('user A cannot %s %s', verb, name))
  from ledger_tables,
       (values ('insert into', 'insert into public.%I default values'),
               ('update', 'update public.%I set user_id = user_id'),
               ('delete from', 'delete from public.%I'),
               ('truncate', 'truncate public.%I')) as s(verb, stmt)
 order by name, verb;

select throws_ok($$ select public.ledger_begin('forged', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 0, null, null, null) $$,
  '42501', null, 'user A cannot admit themselves through ledger_begin');
select throws_ok($$ select public.ledger_finish('req-a-open', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '{"cost_usd": 0}') $$,
  '42501', null, 'user A cannot settle their own usage through ledger_finish');

-- Without a session, as anon (3 + 3 + 2 + 1 = 9, + 2 below) -----------------------------------------

reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role": "anon"}', true);

select is_empty(format('select 1 from public.%I', name), format('anon sees nothing in %s', name))
  from ledger_tables where name in ('request_log', 'usage_daily', 'user_limits') order by name;
select throws_ok(format('insert into public.%I default values', name), '42501', null,
         format('anon cannot insert into %s', name))
  from ledger_tables where name in ('request_log', 'usage_daily', 'user_limits') order by name;
select throws_ok(format('select * from public.%I', name), '42501', null, format('anon cannot read %s', name))
  from ledger_tables where name in ('rate_windows', 'ledger_reservations') order by name;
select throws_ok($$ update public.user_limits set rpm = null $$, '42501', null, 'anon cannot lift anyone''s limits');
select throws_ok($$ select public.ledger_begin('anon-1', '00000000-0000-0000-0000-000000000000', 0, null, null, null) $$,
  '42501', null, 'anon cannot execute ledger_begin');
select throws_ok($$ select public.ledger_finish('anon-1', '00000000-0000-0000-0000-000000000000', '{}') $$,
  '42501', null, 'anon cannot execute ledger_finish');

-- As the server, service_role (3) --------------------------------------------------------------------

reset role;
set local role service_role;
select set_config('request.jwt.claims', '{"role": "service_role"}', true);

select is(public.ledger_begin('svc-1', '00000000-0000-0000-0000-000000000000', 0.01, null, null, null) ->> 'admitted',
          'true', 'service_role can execute ledger_begin (for the nil-uuid server caller too)');
select is(public.ledger_finish('svc-1', '00000000-0000-0000-0000-000000000000', '{"status": 200, "cost_usd": 0.002}'),
          '{"recorded": true}'::jsonb, 'service_role can execute ledger_finish');
select results_eq($$ select request_id from public.request_log where request_id in ('req-a', 'req-b', 'svc-1') order by 1 $$,
                  array['req-a', 'req-b', 'svc-1'], 'service_role reads every user''s request log');

reset role;
select * from finish();
rollback;

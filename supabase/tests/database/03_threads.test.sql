-- Conversations (docs/threads.md): who may read and change threads and messages, and what the four
-- thread functions do. The whole file is one transaction, so now() stands still: a message is made stale
-- by moving its updated_at back.
begin;
create extension if not exists pgtap with schema extensions;
set local search_path = public, extensions;

select plan(126);

-- user A = aaaaaaaa-…, user B = bbbbbbbb-…, user C = cccccccc-… (deleted), user D = dddddddd-… (deleted long ago)

create function pg_temp.turn(
  user_id uuid, thread_id uuid, user_text text, system text default null, max_messages integer default 50,
  max_tokens integer default 16000, stale_seconds integer default 60, model text default 'test/model',
  title text default null
) returns jsonb language sql as $$
  select public.thread_turn_begin(user_id, thread_id, system, title, user_text, model, 'req-' || user_text,
                                  max_messages, max_tokens, stale_seconds)
$$;

create function pg_temp.answer_with(message_id uuid, content text, status text default 'complete') returns boolean
language sql as $$
  select public.thread_message_finish(message_id, jsonb_build_object('status', status, 'content', content))
$$;

-- A turn's history as thread_turn_begin would send it, leaving the thread as it was (its two new messages
-- deleted again).
create function pg_temp.peek(thread_id uuid, user_text text, max_messages integer default 50,
                             max_tokens integer default 16000) returns jsonb language plpgsql as $$
declare
  v_answer jsonb;
begin
  v_answer := pg_temp.turn((select t.user_id from public.threads t where t.id = thread_id), thread_id, user_text,
                           max_messages => max_messages, max_tokens => max_tokens);
  delete from public.messages m
   where m.id in ((v_answer ->> 'user_message_id')::uuid, (v_answer ->> 'message_id')::uuid);
  return v_answer;
end;
$$;

-- n complete turns: user 'u<k>' padded to 40 characters (14 tokens), answer 'a<k>' padded to 80 (24 tokens).
create function pg_temp.fill(thread_id uuid, turns integer) returns void language plpgsql as $$
declare
  v_answer jsonb;
begin
  for k in 1..turns loop
    v_answer := pg_temp.turn((select t.user_id from public.threads t where t.id = thread_id), thread_id,
                             rpad('u' || k, 40, '.'));
    perform pg_temp.answer_with((v_answer ->> 'message_id')::uuid, rpad('a' || k, 80, '.'));
  end loop;
end;
$$;

create temp table answer (name text primary key, body jsonb not null) on commit drop;
grant all on answer to anon, authenticated, service_role;

create function pg_temp.message(name text) returns public.messages language sql as $$
  select m.* from public.messages m where m.id = (select (a.body ->> 'message_id')::uuid from answer a where a.name = $1)
$$;

create function pg_temp.thread_of(name text) returns uuid language sql as $$
  select (a.body ->> 'thread_id')::uuid from answer a where a.name = $1
$$;

-- Tables: row level security, policies, privileges (2 + 2 + 4 + 8 = 16) ----------------------------------

select ok((select relrowsecurity from pg_catalog.pg_class where oid = 'public.threads'::regclass),
  'threads has row level security on');
select ok((select relrowsecurity from pg_catalog.pg_class where oid = 'public.messages'::regclass),
  'messages has row level security on');

select policies_are('public', 'threads',
  array['users read their own threads', 'users rename their own threads', 'users delete their own threads'],
  'threads: users read, rename and delete their own');
select policies_are('public', 'messages', array['users read their own messages', 'users delete their own messages'],
  'messages: users read and delete their own');

select table_privs_are('public', 'threads', 'anon', array[]::text[], 'anon may not touch threads');
select table_privs_are('public', 'threads', 'authenticated', array['SELECT', 'DELETE'],
  'authenticated may read and delete threads (and update only the title, below)');
select table_privs_are('public', 'messages', 'anon', array[]::text[], 'anon may not touch messages');
select table_privs_are('public', 'messages', 'authenticated', array['SELECT', 'DELETE'],
  'authenticated may only read and delete messages');

select column_privs_are('public', 'threads', col, 'authenticated',
         case when col = 'title' then array['SELECT', 'UPDATE'] else array['SELECT'] end,
         format('authenticated %s threads.%s', case when col = 'title' then 'may update' else 'may not update' end, col))
  from unnest(array['id', 'user_id', 'title', 'model', 'system_prompt', 'created_at', 'updated_at']) as col
 order by col;
select ok(not has_column_privilege('authenticated', 'public.messages', 'content', 'UPDATE'),
  'authenticated may not update a message''s content');

-- Indexes and Realtime (2 + 1) ------------------------------------------------------------------------

select index_is_unique('public', 'messages', 'messages_streaming_thread_id_idx',
  'at most one streaming message per thread');
select has_index('public', 'threads', 'threads_user_id_updated_at_idx', array['user_id', 'updated_at'],
  'a user''s threads are indexed by recency');
select is(array(select t.tablename::text from pg_catalog.pg_publication_tables t
                 where t.pubname = 'supabase_realtime' and t.schemaname = 'public'
                   and t.tablename in ('threads', 'messages') order by 1),
          array['messages', 'threads'], 'threads and messages are in the supabase_realtime publication');

-- The four functions: owner's rights, an empty search_path, service_role only (4 + 4 + 12 + 4 = 24) ------

create temp table thread_functions (name text primary key, args text[] not null) on commit drop;
insert into thread_functions values
  ('thread_turn_begin', array['uuid', 'uuid', 'text', 'text', 'text', 'text', 'text', 'integer', 'integer', 'integer']),
  ('thread_message_progress', array['uuid', 'text']),
  ('thread_message_finish', array['uuid', 'jsonb']),
  ('thread_stop', array['uuid', 'uuid', 'uuid', 'integer']);
grant select on thread_functions to anon, authenticated, service_role;

select is_definer('public', name, args, format('%s runs with its owner''s rights', name))
  from thread_functions order by name;
select is((select p.proconfig from pg_catalog.pg_proc p
            where p.oid = format('public.%s(%s)', name, array_to_string(args, ','))::regprocedure),
          array['search_path=""', 'lock_timeout=3s'], format('%s pins an empty search_path and a lock timeout', name))
  from thread_functions order by name;
select function_privs_are('public', name, args, role,
         case when role = 'service_role' then array['EXECUTE'] else array[]::text[] end,
         format('%s %s execute %s', role, case when role = 'service_role' then 'may' else 'may not' end, name))
  from thread_functions, unnest(array['anon', 'authenticated', 'service_role']) as role
 order by name, role;
select ok(not has_function_privilege('public', format('public.%s(%s)', name, array_to_string(args, ',')), 'execute'),
          format('PUBLIC may not execute %s', name))
  from thread_functions order by name;

-- As the server from here on (service_role). ----------------------------------------------------------

set local role service_role;
select set_config('request.jwt.claims', '{"role": "service_role"}', true);

-- A new thread (5) --------------------------------------------------------------------------------------

insert into answer select 'a1', pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', null, 'What is RLS?',
                                             system => 'Be brief.', title => 'RLS?');

select is((select body - 'thread_id' - 'user_message_id' - 'message_id' from answer where name = 'a1'),
          jsonb_build_object('status', 'ok', 'created', true, 'dropped', 0, 'history', jsonb_build_array(
            jsonb_build_object('role', 'system', 'content', 'Be brief.'),
            jsonb_build_object('role', 'user', 'content', 'What is RLS?'))),
          'a new thread: created, its system prompt first and the user message last');
select results_eq($$ select user_id, title, model, system_prompt from public.threads where id = pg_temp.thread_of('a1') $$,
                  $$ values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'::uuid, 'RLS?', 'test/model', 'Be brief.') $$,
                  'the thread has its user, title, model and system prompt');
select results_eq($$ select id, seq, role, content, status, model, request_id from public.messages
                      where thread_id = pg_temp.thread_of('a1') order by seq $$,
                  $$ values ((select (body ->> 'user_message_id')::uuid from answer where name = 'a1'), 1, 'user',
                             'What is RLS?', 'complete', null::text, 'req-What is RLS?'),
                            ((select (body ->> 'message_id')::uuid from answer where name = 'a1'), 2, 'assistant',
                             '', 'streaming', 'test/model', 'req-What is RLS?') $$,
                  'the user message and an empty streaming answer, seq 1 and 2, with the request id');
select is(public.thread_turn_begin('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', null, '', '  ', 'untitled', 'test/model',
                                   'req-untitled', 50, 16000, 60) -> 'history',
          '[{"role": "user", "content": "untitled"}]'::jsonb,
          'an empty system prompt is no system prompt');
select is((select title from public.threads where system_prompt is null and id in (
             select thread_id from public.messages where content = 'untitled')),
          'New conversation', 'a thread without a title is a new conversation');

-- Busy, not found, the erased (5) --------------------------------------------------------------------------

select is(pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), 'Again?'),
          jsonb_build_object('status', 'busy', 'message_id', (select body ->> 'message_id' from answer where name = 'a1')),
          'a second turn while the first streams is busy, naming the running message');
select is((select count(*)::integer from public.messages where thread_id = pg_temp.thread_of('a1')), 2,
          'a busy turn stores nothing');
select is(pg_temp.turn('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', pg_temp.thread_of('a1'), 'Mine now?'),
          '{"status": "not_found"}'::jsonb, 'user B''s turn on user A''s thread: not found');
select is(pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', '00000000-0000-4000-8000-000000000000', 'Hello?'),
          '{"status": "not_found"}'::jsonb, 'a turn on an unknown thread: not found');

reset role;
insert into public.erased_users (user_id, erased_at) values
  ('cccccccc-cccc-4ccc-8ccc-cccccccccccc', now() - interval '1 hour'),
  ('dddddddd-dddd-4ddd-8ddd-dddddddddddd', now() - interval '2 days');
set local role service_role;

select throws_ok($$ select pg_temp.turn('cccccccc-cccc-4ccc-8ccc-cccccccccccc', null, 'Still here?') $$,
  '23514', null, 'a user deleted in the last day cannot start a thread');
-- (user D, deleted two days ago, is tested with the rest of the rules below)

-- Progress and finish (9) ----------------------------------------------------------------------------------

select is(public.thread_message_progress((pg_temp.message('a1')).id, 'Row level'),
          '{"streaming": true, "stop_requested": false}'::jsonb, 'progress writes while streaming');
select is((pg_temp.message('a1')).content, 'Row level', 'the text so far is stored');
select is(public.thread_message_finish((pg_temp.message('a1')).id, jsonb_build_object(
            'status', 'complete', 'content', 'Row level security.', 'model', 'served/model', 'prompt_tokens', 12,
            'completion_tokens', 4, 'total_tokens', 16, 'cost_usd', 0.000123456789, 'generation_id', 'gen-1',
            'finish_reason', 'stop', 'error_type', null, 'error_message', null)),
          true, 'finish ends a streaming message');
select results_eq($$ select status, content, model, prompt_tokens, completion_tokens, total_tokens, cost_usd,
                            generation_id, finish_reason from public.messages where id = (pg_temp.message('a1')).id $$,
                  $$ values ('complete', 'Row level security.', 'served/model', 12, 4, 16, 0.00012346::numeric,
                             'gen-1', 'stop') $$,
                  'the final text, served model, usage and cost (to 8 places) are stored');
select is(pg_temp.answer_with((pg_temp.message('a1')).id, 'Overwritten!', 'failed'), false,
          'a second finish is refused');
select is((pg_temp.message('a1')).content || '/' || (pg_temp.message('a1')).status, 'Row level security./complete',
          'and changes nothing');
select is(public.thread_message_progress((pg_temp.message('a1')).id, 'late'),
          '{"streaming": false, "stop_requested": false}'::jsonb, 'progress on an ended message: not streaming');
select is((pg_temp.message('a1')).content, 'Row level security.', 'and writes nothing');
select throws_ok($$ select pg_temp.answer_with((pg_temp.message('a1')).id, 'x', 'streaming') $$,
  '22023', null, 'finish needs an end status');

-- A dead instance's generation (4) ----------------------------------------------------------------------

insert into answer select 'a2', pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), 'And views?');
select public.thread_message_progress((pg_temp.message('a2')).id, 'Views are');
reset role;
update public.messages set updated_at = now() - interval '2 minutes' where id = (pg_temp.message('a2')).id;
set local role service_role;
insert into answer select 'a3', pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), 'Hello?');

select is((select body ->> 'status' from answer where name = 'a3'), 'ok',
          'a streaming message not written for longer than the stale limit does not block the thread');
select results_eq($$ select status, error_type, content from public.messages where id = (pg_temp.message('a2')).id $$,
                  $$ values ('failed', 'interrupted', 'Views are') $$, 'it is marked failed (interrupted)');
select is((select body -> 'history' from answer where name = 'a3'), jsonb_build_array(
            jsonb_build_object('role', 'system', 'content', 'Be brief.'),
            jsonb_build_object('role', 'user', 'content', 'What is RLS?'),
            jsonb_build_object('role', 'assistant', 'content', 'Row level security.'),
            jsonb_build_object('role', 'user', 'content', 'And views?'),
            jsonb_build_object('role', 'user', 'content', 'Hello?')),
          'the failed answer is left out of the next history; its question stays');
select ok((select updated_at from public.threads where id = pg_temp.thread_of('a1')) = now(),
          'a turn touches its thread');

-- Stop (12) ------------------------------------------------------------------------------------------------

select is(public.thread_stop('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', pg_temp.thread_of('a1'), null, 60),
          '{"status": "not_found"}'::jsonb, 'user B cannot stop user A''s thread');
select is(public.thread_stop('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', null, (pg_temp.message('a3')).id, 60),
          '{"status": "not_found"}'::jsonb, 'nor user A''s message');
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'),
                             (select (body ->> 'user_message_id')::uuid from answer where name = 'a3'), 60),
          '{"status": "not_found"}'::jsonb, 'a user message is no generation to stop');
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), null, 60),
          jsonb_build_object('thread_id', pg_temp.thread_of('a1'), 'message_id', (pg_temp.message('a3')).id,
                             'status', 'streaming', 'stop_requested', true),
          'stop flags the running message, which streams until its instance sees it');
select is((pg_temp.message('a3')).stop_requested, true, 'the flag is stored');
select is(public.thread_message_progress((pg_temp.message('a3')).id, 'Hel'),
          '{"streaming": true, "stop_requested": true}'::jsonb, 'the running instance reads it with its next write');
select is(pg_temp.answer_with((pg_temp.message('a3')).id, 'Hel', 'stopped'), true, 'and stops the message');
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', null, (pg_temp.message('a3')).id, 60),
          jsonb_build_object('thread_id', pg_temp.thread_of('a1'), 'message_id', (pg_temp.message('a3')).id,
                             'status', 'stopped', 'stop_requested', true),
          'a stop by message id (no thread id) answers where that message stands');

insert into answer select 'a4', pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), 'Bye?');
reset role;
update public.messages set updated_at = now() - interval '2 minutes' where id = (pg_temp.message('a4')).id;
set local role service_role;
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), null, 60) ->> 'status',
          'stopped', 'a stale running message is stopped at once');
select is((pg_temp.message('a4')).status, 'stopped', 'and stored so');
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', pg_temp.thread_of('a1'), null, 60),
          jsonb_build_object('thread_id', pg_temp.thread_of('a1'), 'message_id', (pg_temp.message('a4')).id,
                             'status', 'stopped', 'stop_requested', true),
          'with nothing running, stop answers the latest answer');

reset role;
insert into public.threads (id, user_id, title) values
  ('eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'Empty');
set local role service_role;
select is(public.thread_stop('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee', null, 60),
          '{"thread_id": "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee", "message_id": null, "status": "idle", "stop_requested": false}'::jsonb,
          'a thread without an answer is idle');

-- The history budget over 30 turns (10) ---------------------------------------------------------------------
-- 30 turns: seq 1..60, users 14 tokens each, answers 24; the system prompt 'Be brief.' is 7, the new
-- message 'next' 5.

insert into answer select 'h', pg_temp.turn('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', null, 'start', system => 'Be brief.');
select pg_temp.answer_with((pg_temp.message('h')).id, 'ok');
reset role;
delete from public.messages where thread_id = pg_temp.thread_of('h');
set local role service_role;
select pg_temp.fill(pg_temp.thread_of('h'), 30);

select is((select count(*)::integer from public.messages where thread_id = pg_temp.thread_of('h')), 60,
          '30 turns stored');
insert into answer select 'h50', pg_temp.peek(pg_temp.thread_of('h'), 'next');
select is(jsonb_array_length((select body -> 'history' from answer where name = 'h50')), 1 + 48 + 1,
          'the default 50 messages: the system prompt, whole turns from the latest 49, the new one');
select is((select body -> 'dropped' from answer where name = 'h50'), '12'::jsonb,
          'the 11 oldest are dropped, and the answer the latest 49 would start with');
select is((select body -> 'history' -> 1 ->> 'content' from answer where name = 'h50'), rpad('u7', 40, '.'),
          'so the history starts at a user message');
-- 10 messages: 9 earlier ones fit (seq 52..60), but seq 52 is an answer: the history starts at seq 53.
insert into answer select 'h10', pg_temp.peek(pg_temp.thread_of('h'), 'next', 10);
select is((select body from answer where name = 'h10') - 'thread_id' - 'user_message_id' - 'message_id',
          jsonb_build_object('status', 'ok', 'created', false, 'dropped', 52, 'history',
            jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'Be brief.'))
            || (select jsonb_agg(jsonb_build_object('role', case when k % 2 = 1 then 'user' else 'assistant' end,
                                                    'content', rpad(case when k % 2 = 1 then 'u' else 'a' end
                                                                    || ((k + 1) / 2), case when k % 2 = 1 then 40 else 80 end, '.'))
                                 order by k)
                  from generate_series(53, 60) as k)
            || jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'next'))),
          'at most 10 messages: the system prompt, whole turns from the latest 9, the new one');
-- Tokens: 7 + 5 + 114 (seq 55..60) = 126 fits six earlier messages exactly; 125 only five (seq 56..60),
-- which start with an answer, so four.
select is((select jsonb_array_length(body -> 'history') || '/' || (body ->> 'dropped')
             from (select pg_temp.peek(pg_temp.thread_of('h'), 'next', 50, 126) as body) as a),
          '8/54', '126 tokens: the system prompt, six earlier messages, the new one');
select is((select jsonb_array_length(body -> 'history') || '/' || (body ->> 'dropped')
             from (select pg_temp.peek(pg_temp.thread_of('h'), 'next', 50, 125) as body) as a),
          '6/56', '125 tokens: one message fewer, and the answer it leaves first is dropped too');
select is((select body -> 'history' -> 1 ->> 'content'
             from (select pg_temp.peek(pg_temp.thread_of('h'), 'next', 50, 125) as body) as a),
          rpad('u29', 40, '.'), 'the history after the system prompt starts with a user message');
select is((select body from (select pg_temp.peek(pg_temp.thread_of('h'), repeat('x', 4000), 50, 10) as body) as a)
            -> 'history',
          jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'Be brief.'),
                            jsonb_build_object('role', 'user', 'content', repeat('x', 4000))),
          'a new message over the budget on its own is still sent, after the system prompt');
select is((select body -> 'dropped' from (select pg_temp.peek(pg_temp.thread_of('h'), 'next', 1) as body) as a),
          '60'::jsonb, 'one message allowed: only the new one, all 60 earlier ones dropped');

-- Which messages a history has (3) ------------------------------------------------------------------------------

insert into answer select 'r1', pg_temp.turn('dddddddd-dddd-4ddd-8ddd-dddddddddddd', null, 'q1');
select pg_temp.answer_with((pg_temp.message('r1')).id, 'a1');
insert into answer select 'r2', pg_temp.turn('dddddddd-dddd-4ddd-8ddd-dddddddddddd', pg_temp.thread_of('r1'), 'q2');
select pg_temp.answer_with((pg_temp.message('r2')).id, 'half an answer that broke', 'failed');
insert into answer select 'r3', pg_temp.turn('dddddddd-dddd-4ddd-8ddd-dddddddddddd', pg_temp.thread_of('r1'), 'q3');
select pg_temp.answer_with((pg_temp.message('r3')).id, 'half', 'stopped');
insert into answer select 'r4', pg_temp.turn('dddddddd-dddd-4ddd-8ddd-dddddddddddd', pg_temp.thread_of('r1'), 'q4');
select pg_temp.answer_with((pg_temp.message('r4')).id, '', 'stopped');

select is((select body ->> 'status' from answer where name = 'r1'), 'ok',
          'a user deleted more than a day ago may start threads again');
insert into answer select 'r5', pg_temp.peek(pg_temp.thread_of('r1'), 'q5', 3);
select is(pg_temp.peek(pg_temp.thread_of('r1'), 'q5') - 'thread_id' - 'user_message_id' - 'message_id',
          jsonb_build_object('status', 'ok', 'created', false, 'dropped', 0, 'history', jsonb_build_array(
            jsonb_build_object('role', 'user', 'content', 'q1'),
            jsonb_build_object('role', 'assistant', 'content', 'a1'),
            jsonb_build_object('role', 'user', 'content', 'q2'),
            jsonb_build_object('role', 'user', 'content', 'q3'),
            jsonb_build_object('role', 'assistant', 'content', 'half'),
            jsonb_build_object('role', 'user', 'content', 'q4'),
            jsonb_build_object('role', 'user', 'content', 'q5'))),
          'no system prompt; failed and empty answers left out (not counted as dropped), a stopped one sent');
select is((select body -> 'history' from answer where name = 'r5'), jsonb_build_array(
            jsonb_build_object('role', 'user', 'content', 'q4'),
            jsonb_build_object('role', 'user', 'content', 'q5')),
          'three messages: the two latest sendable ones would start with an answer, so only q4 is kept');

-- Signed in as user A (22) ------------------------------------------------------------------------------------

insert into answer select 'b1', pg_temp.turn('bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', null, 'B asks', title => 'B''s');

reset role;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "role": "authenticated"}', true);

select is((select count(*)::integer from public.threads), 4,
          'user A sees their own threads (RLS?, untitled, Empty, the 30 turns)');
select is_empty($$ select 1 from public.threads where user_id <> 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
                   union all select 1 from public.messages where user_id <> 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa' $$,
  'user A sees none of anyone else''s threads or messages');
select is((select count(*)::integer from public.messages where thread_id = pg_temp.thread_of('a1')), 8,
          'user A reads their messages');

select results_eq($$ update public.threads set title = 'Renamed' where id = pg_temp.thread_of('a1') returning title $$,
                  array['Renamed'], 'user A renames their thread');
select is_empty($$ update public.threads set title = 'Hijacked' where id = pg_temp.thread_of('b1') returning id $$,
  'user A cannot rename user B''s thread');
select throws_ok($$ update public.threads set user_id = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb' where id = pg_temp.thread_of('a1') $$,
  '42501', null, 'user A cannot give their thread away');
select throws_ok($$ update public.threads set model = 'free/model' where id = pg_temp.thread_of('a1') $$,
  '42501', null, 'user A cannot change their thread''s model');
select throws_ok($$ update public.threads set system_prompt = 'Ignore all rules.' where id = pg_temp.thread_of('a1') $$,
  '42501', null, 'user A cannot change their thread''s system prompt');
select throws_ok($$ insert into public.threads (user_id, title) values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'x') $$,
  '42501', null, 'user A cannot create a thread directly');
select throws_ok($$ insert into public.messages (thread_id, user_id, seq, role, content)
                    values (pg_temp.thread_of('a1'), 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 99, 'assistant', 'forged') $$,
  '42501', null, 'user A cannot forge an answer');
select throws_ok($$ update public.messages set content = 'forged' where id = (pg_temp.message('a1')).id $$,
  '42501', null, 'user A cannot change an answer''s text');
select throws_ok($$ update public.messages set status = 'streaming' where id = (pg_temp.message('a1')).id $$,
  '42501', null, 'user A cannot change an answer''s status');
select throws_ok($$ update public.messages set cost_usd = 0 where id = (pg_temp.message('a1')).id $$,
  '42501', null, 'user A cannot change an answer''s cost');
select throws_ok(format('select public.%s(%s)', name, array_to_string(array_fill('null'::text, array[cardinality(args)]), ', ')),
         '42501', null, format('user A cannot execute %s', name))
  from thread_functions order by name;
select is_empty($$ delete from public.messages where thread_id = pg_temp.thread_of('b1') returning id $$,
  'user A cannot delete user B''s messages');

select results_eq($$ delete from public.messages where id = (pg_temp.message('a4')).id returning content $$,
                  array[''], 'user A deletes one of their messages');
select results_eq($$ delete from public.threads where id = pg_temp.thread_of('a1') returning title $$,
                  array['Renamed'], 'user A deletes their thread');
select is_empty($$ select 1 from public.messages where thread_id = pg_temp.thread_of('a1') $$,
  'its messages went with it');
select is_empty($$ delete from public.threads where id = pg_temp.thread_of('b1') returning id $$,
  'user A cannot delete user B''s thread');

-- Without a session, as anon (4 + 4 = 8) ----------------------------------------------------------------------

reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role": "anon"}', true);

select throws_ok('select * from public.threads', '42501', null, 'anon cannot read threads');
select throws_ok('select * from public.messages', '42501', null, 'anon cannot read messages');
select throws_ok($$ insert into public.threads (user_id) values ('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa') $$,
  '42501', null, 'anon cannot create threads');
select throws_ok($$ update public.threads set title = 'anon' $$, '42501', null, 'anon cannot rename threads');
select throws_ok(format('select public.%s(%s)', name, array_to_string(array_fill('null'::text, array[cardinality(args)]), ', ')),
         '42501', null, format('anon cannot execute %s', name))
  from thread_functions order by name;

-- Back as the owner: B untouched, erasure (5) -----------------------------------------------------------------

reset role;

select results_eq($$ select title from public.threads where id = pg_temp.thread_of('b1') $$, array['B''s'],
                  'user B''s thread is as it was');
select is((select count(*)::integer from public.messages where thread_id = pg_temp.thread_of('b1')), 2,
          'user B''s messages are as they were');
select is(public.erase_user_data('aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'),
          jsonb_build_object('request_log', 0, 'usage_daily', 0, 'user_limits', 0, 'rate_windows', 0,
                             'ledger_reservations', 0, 'threads', 3, 'messages', 62),
          'erasing user A deletes their threads and messages and says how many');
select is_empty($$ select 1 from public.threads where user_id = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa'
                   union all select 1 from public.messages where user_id = 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa' $$,
  'nothing of user A is left');
select isnt_empty($$ select 1 from public.threads where user_id = 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb' $$,
  'user B keeps their threads');

select * from finish();
rollback;

-- Conversations (docs/threads.md): a signed-in user's threads and their messages, written only by the
-- server through four security-definer functions, read (and renamed, and deleted) by the user under RLS.
--
-- Grants: Supabase's default privileges give anon, authenticated and service_role every right on new
-- tables and functions in public. The explicit revokes below leave authenticated exactly: read their own
-- threads and messages, rename (title only) and delete their own threads, delete their own messages. No
-- client inserts or changes a message, so nobody can forge an answer or its cost; anon gets nothing.
--
-- Locks: thread_turn_begin locks the thread row, then writes its messages. Nothing else locks a thread
-- and then a message in the other order; erase_user_data locks the user's threads before deleting them.

-- threads: one row per conversation. -------------------------------------------------------------------

create table public.threads (
  id            uuid primary key default gen_random_uuid(),
  user_id       uuid not null,
  title         text not null default 'New conversation' check (char_length(title) <= 200),
  model         text,
  system_prompt text check (char_length(system_prompt) <= 1000000),
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);

comment on table public.threads is
  'Conversations of signed-in users (docs/threads.md); created and touched by thread_turn_begin, renamed and deleted by their user.';

-- A user's threads, most recent first: the list query and the RLS filter both need it.
create index threads_user_id_updated_at_idx on public.threads (user_id, updated_at desc);

alter table public.threads enable row level security;

create policy "users read their own threads"
  on public.threads for select to authenticated
  using (user_id = (select auth.uid()));

create policy "users rename their own threads"
  on public.threads for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

create policy "users delete their own threads"
  on public.threads for delete to authenticated
  using (user_id = (select auth.uid()));

revoke all on public.threads from anon, authenticated;
grant select, delete on public.threads to authenticated;
grant update (title) on public.threads to authenticated;  -- the title only: never user_id, model, prompt

-- messages: the turns of a thread, in seq order. ---------------------------------------------------------

create table public.messages (
  id                uuid primary key default gen_random_uuid(),
  thread_id         uuid not null references public.threads (id) on delete cascade,
  user_id           uuid not null,
  seq               integer not null check (seq > 0),
  role              text not null check (role in ('user', 'assistant')),
  content           text not null default '' check (char_length(content) <= 1000000),
  model             text,
  status            text not null default 'complete'
                    check (status in ('streaming', 'complete', 'stopped', 'failed')),
  request_id        text,
  prompt_tokens     integer,
  completion_tokens integer,
  total_tokens      integer,
  cost_usd          numeric(14, 8),
  generation_id     text,
  finish_reason     text,
  error_type        text,
  error_message     text,
  stop_requested    boolean not null default false,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now(),  -- also the heartbeat of a streaming message
  unique (thread_id, seq)  -- also the index of a thread's messages in order, and of the cascade
);

comment on table public.messages is
  'Messages of a thread; written only by the thread_* functions. A streaming message grows as it is written.';

-- At most one running generation per thread (thread_turn_begin's lock already serializes turns; this makes
-- it an invariant), and the index the busy check and thread_stop look the running one up by.
-- A user's own messages across threads (what the RLS filter reads when a query names no thread).
create index messages_user_id_created_at_idx on public.messages (user_id, created_at desc);

create unique index messages_streaming_thread_id_idx on public.messages (thread_id) where status = 'streaming';

alter table public.messages enable row level security;

create policy "users read their own messages"
  on public.messages for select to authenticated
  using (user_id = (select auth.uid()));

create policy "users delete their own messages"
  on public.messages for delete to authenticated
  using (user_id = (select auth.uid()));

revoke all on public.messages from anon, authenticated;
grant select, delete on public.messages to authenticated;

-- Realtime: a reloaded page follows a streaming message (Realtime applies RLS). Supabase projects have
-- the supabase_realtime publication; a plain PostgreSQL may not, and then there is nothing to join.
do $realtime$
declare
  v_table text;
begin
  if not exists (select 1 from pg_catalog.pg_publication p where p.pubname = 'supabase_realtime') then
    raise notice 'no supabase_realtime publication here: threads and messages are not published';
    return;
  end if;
  if (select p.puballtables from pg_catalog.pg_publication p where p.pubname = 'supabase_realtime') then
    return;  -- a publication for all tables has them already
  end if;
  foreach v_table in array array['threads', 'messages'] loop
    if not exists (select 1 from pg_catalog.pg_publication_tables t
                    where t.pubname = 'supabase_realtime' and t.schemaname = 'public' and t.tablename = v_table) then
      execute format('alter publication supabase_realtime add table public.%I', v_table);
    end if;
  end loop;
end
$realtime$;

-- thread_turn_begin: one turn starts, in one round trip. --------------------------------------------------
--
-- The history sent upstream: the thread's system prompt (always, and counted against the token budget),
-- then the newest earlier messages while there are at most p_max_messages in all (the new user message
-- included, the system prompt not) and at most p_max_tokens estimated tokens (ceil(chars / 4) + 4 each),
-- then the new user message (always, even when it alone is over the budget). Failed and empty messages are
-- not sent; stopped ones are, with their partial text. A history that would start with an assistant
-- message starts at the next user message. `dropped` counts the earlier messages that could have been sent
-- but were left out.

create function public.thread_turn_begin(
  p_user_id uuid,
  p_thread_id uuid,
  p_system text,
  p_title text,
  p_user_text text,
  p_model text,
  p_request_id text,
  p_max_messages integer,
  p_max_tokens integer,
  p_stale_seconds integer
) returns jsonb
language plpgsql
security definer
set search_path = ''
-- A thread row can be locked by someone else (an operator's open transaction): fail fast rather than hang.
set lock_timeout = '3s'
as $$
declare
  v_thread        public.threads;
  v_created       boolean := false;
  v_running       public.messages;
  v_seq           integer;
  v_user_msg      uuid;
  v_assistant_msg uuid;
  v_max_messages  integer := greatest(coalesce(p_max_messages, 50), 1);
  v_max_tokens    integer := coalesce(p_max_tokens, 16000);
  v_budget        integer;
  v_eligible      integer;
  v_history       jsonb;
  v_kept          integer;
begin
  if p_user_id is null or p_user_text is null or p_stale_seconds is null then
    raise exception 'thread_turn_begin: p_user_id, p_user_text and p_stale_seconds are required'
      using errcode = '22004';
  end if;
  if char_length(p_user_text) > 1000000 or char_length(p_system) > 1000000 then
    raise exception 'thread_turn_begin: a message is longer than 1000000 characters' using errcode = '22001';
  end if;

  -- One user's turns and their erasure take this lock first: a deletion that commits while a turn starts
  -- either sees the turn's rows (and deletes them) or is seen by it (its tombstone refuses the turn).
  perform pg_advisory_xact_lock(hashtextextended('public.threads:' || p_user_id::text, 0));

  -- Writes for a user deleted in the last day are refused, as the ledger's are (20261202050000).
  if exists (select 1 from public.erased_users e
              where e.user_id = p_user_id and e.erased_at > now() - interval '1 day') then
    raise exception 'threads: user % was deleted; nothing more is recorded for them', p_user_id
      using errcode = '23514';
  end if;

  if p_thread_id is null then
    insert into public.threads (user_id, title, model, system_prompt)
    values (p_user_id, left(coalesce(nullif(btrim(p_title), ''), 'New conversation'), 200), p_model,
            nullif(p_system, ''))
    returning * into v_thread;
    v_created := true;
  else
    -- The per-thread lock: concurrent turns on one thread run one after the other, and the second one
    -- sees the first one's streaming message (each statement below reads a fresh snapshot).
    select t.* into v_thread
      from public.threads t
     where t.id = p_thread_id and t.user_id = p_user_id
       for update;
    if not found then
      return jsonb_build_object('status', 'not_found');
    end if;

    -- A generation whose instance stopped writing long ago died with it: it no longer blocks the thread.
    update public.messages m
       set status = 'failed', error_type = 'interrupted',
           error_message = 'the generation stopped without finishing (its instance went away)',
           updated_at = now()
     where m.thread_id = v_thread.id and m.status = 'streaming'
       and m.updated_at < now() - make_interval(secs => p_stale_seconds);

    select m.* into v_running from public.messages m where m.thread_id = v_thread.id and m.status = 'streaming';
    if found then
      return jsonb_build_object('status', 'busy', 'message_id', v_running.id);
    end if;
  end if;

  -- The history, from the messages before this turn.
  v_budget := v_max_tokens - (ceil(char_length(p_user_text) / 4.0)::integer + 4);
  if v_thread.system_prompt is not null then
    v_budget := v_budget - (ceil(char_length(v_thread.system_prompt) / 4.0)::integer + 4);
  end if;

  select count(*) into v_eligible
    from public.messages m
   where m.thread_id = v_thread.id and m.status <> 'failed' and m.content <> '';

  with candidates as (  -- newest first, no more than could fit by count
    select m.seq, m.role, m.content
      from public.messages m
     where m.thread_id = v_thread.id and m.status <> 'failed' and m.content <> ''
     order by m.seq desc
     limit v_max_messages - 1
  ), measured as (
    select c.*, sum(ceil(char_length(c.content) / 4.0)::integer + 4) over (order by c.seq desc) as running
      from candidates c
  ), fitting as (  -- every message costs at least 4 tokens: the ones that fit are a run of the newest
    select f.* from measured f where f.running <= v_budget
  ), kept as (  -- starting at a user message
    select f.* from fitting f where f.seq >= (select min(u.seq) from fitting u where u.role = 'user')
  )
  select coalesce(jsonb_agg(jsonb_build_object('role', k.role, 'content', k.content) order by k.seq), '[]'::jsonb),
         count(*)
    into v_history, v_kept
    from kept k;

  if v_thread.system_prompt is not null then
    v_history := jsonb_build_array(jsonb_build_object('role', 'system', 'content', v_thread.system_prompt))
                 || v_history;
  end if;
  v_history := v_history || jsonb_build_array(jsonb_build_object('role', 'user', 'content', p_user_text));

  -- The new turn: the user message and an empty streaming answer, the next two seq.
  select coalesce(max(m.seq), 0) into v_seq from public.messages m where m.thread_id = v_thread.id;

  insert into public.messages (thread_id, user_id, seq, role, content, status, request_id)
  values (v_thread.id, p_user_id, v_seq + 1, 'user', p_user_text, 'complete', p_request_id)
  returning id into v_user_msg;

  insert into public.messages (thread_id, user_id, seq, role, content, model, status, request_id)
  values (v_thread.id, p_user_id, v_seq + 2, 'assistant', '', p_model, 'streaming', p_request_id)
  returning id into v_assistant_msg;

  if not v_created then
    update public.threads t set updated_at = now(), model = coalesce(p_model, t.model) where t.id = v_thread.id;
  end if;

  return jsonb_build_object(
    'status', 'ok',
    'thread_id', v_thread.id,
    'user_message_id', v_user_msg,
    'message_id', v_assistant_msg,
    'created', v_created,
    'dropped', v_eligible - v_kept,
    'history', v_history);
end;
$$;

comment on function public.thread_turn_begin(uuid, uuid, text, text, text, text, text, integer, integer, integer) is
  'Start a turn: create or lock the user''s thread, refuse while a generation runs, store the user message and a streaming answer, return the history.';

revoke execute on function public.thread_turn_begin(uuid, uuid, text, text, text, text, text, integer, integer, integer)
  from public, anon, authenticated;
grant execute on function public.thread_turn_begin(uuid, uuid, text, text, text, text, text, integer, integer, integer)
  to service_role;

-- thread_message_progress: the answer so far (and the heartbeat), and whether to stop. -------------------

create function public.thread_message_progress(p_message_id uuid, p_content text) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_stop boolean;
begin
  -- Truncated rather than refused: losing the whole answer over its tail would be the worse failure.
  -- A null p_content is a heartbeat: the text has not changed since the last write, only the time is kept.
  update public.messages m
     set content = case when p_content is null then m.content else left(p_content, 1000000) end,
         updated_at = now()
   where m.id = p_message_id and m.status = 'streaming'
  returning m.stop_requested into v_stop;
  if found then
    return jsonb_build_object('streaming', true, 'stop_requested', v_stop);
  end if;
  -- Ended already (or deleted by its user, or erased with them): the generation has nothing to write to.
  select m.stop_requested into v_stop from public.messages m where m.id = p_message_id;
  return jsonb_build_object('streaming', false, 'stop_requested', coalesce(v_stop, false));
end;
$$;

comment on function public.thread_message_progress(uuid, text) is
  'Write a streaming message''s text so far; answers whether it is still streaming and whether a stop was asked for.';

revoke execute on function public.thread_message_progress(uuid, text) from public, anon, authenticated;
grant execute on function public.thread_message_progress(uuid, text) to service_role;

-- thread_message_finish: a streaming message ends, once. ---------------------------------------------------

create function public.thread_message_finish(p_message_id uuid, p_row jsonb) returns boolean
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_status text := p_row ->> 'status';
begin
  if v_status is null or v_status not in ('complete', 'stopped', 'failed') then
    raise exception 'thread_message_finish: status must be complete, stopped or failed, got %', v_status
      using errcode = '22023';
  end if;
  update public.messages m
     set status = v_status,
         content = left(coalesce(p_row ->> 'content', m.content), 1000000),
         model = coalesce(p_row ->> 'model', m.model),
         prompt_tokens = (p_row ->> 'prompt_tokens')::numeric,
         completion_tokens = (p_row ->> 'completion_tokens')::numeric,
         total_tokens = (p_row ->> 'total_tokens')::numeric,
         cost_usd = round((p_row ->> 'cost_usd')::numeric, 8),
         generation_id = p_row ->> 'generation_id',
         finish_reason = p_row ->> 'finish_reason',
         error_type = p_row ->> 'error_type',
         error_message = left(p_row ->> 'error_message', 500),
         updated_at = now()
   where m.id = p_message_id and m.status = 'streaming';
  return found;
end;
$$;

comment on function public.thread_message_finish(uuid, jsonb) is
  'End a streaming message with its final text, status, usage and cost; false when it had already ended.';

revoke execute on function public.thread_message_finish(uuid, jsonb) from public, anon, authenticated;
grant execute on function public.thread_message_finish(uuid, jsonb) to service_role;

-- thread_stop: ask a thread's running generation to stop. ---------------------------------------------------
--
-- The message concerned: p_message_id when given (an assistant message of the user's thread; with
-- p_thread_id null the thread is the message's), else the running one, else the thread's latest answer.

create function public.thread_stop(
  p_user_id uuid,
  p_thread_id uuid,
  p_message_id uuid,
  p_stale_seconds integer
) returns jsonb
language plpgsql
security definer
set search_path = ''
set lock_timeout = '3s'
as $$
declare
  v_thread     uuid;
  v_message    public.messages;
  v_message_id uuid;
begin
  if p_message_id is not null then
    select m.* into v_message
      from public.messages m
      join public.threads t on t.id = m.thread_id
     where m.id = p_message_id and m.role = 'assistant' and t.user_id = p_user_id
       and (p_thread_id is null or m.thread_id = p_thread_id);
    if not found then
      return jsonb_build_object('status', 'not_found');
    end if;
    v_thread := v_message.thread_id;
  else
    select t.id into v_thread from public.threads t where t.id = p_thread_id and t.user_id = p_user_id;
    if not found then
      return jsonb_build_object('status', 'not_found');
    end if;
    select m.* into v_message
      from public.messages m
     where m.thread_id = v_thread and m.role = 'assistant'
     order by (m.status = 'streaming') desc, m.seq desc
     limit 1;
    if not found then
      return jsonb_build_object('thread_id', v_thread, 'message_id', null, 'status', 'idle', 'stop_requested', false);
    end if;
  end if;

  v_message_id := v_message.id;
  -- The flag for the instance running it; one that stopped writing long ago is gone: stopped now.
  update public.messages m
     set stop_requested = true,
         status = case when m.updated_at < now() - make_interval(secs => p_stale_seconds)
                       then 'stopped' else m.status end,
         finish_reason = case when m.updated_at < now() - make_interval(secs => p_stale_seconds)
                              then 'stop' else m.finish_reason end,
         updated_at = case when m.updated_at < now() - make_interval(secs => p_stale_seconds)
                           then now() else m.updated_at end  -- a stop request is no heartbeat
   where m.id = v_message_id and m.status = 'streaming'
  returning m.* into v_message;
  if not found then  -- not running (or it ended meanwhile): where it stands now
    select m.* into v_message from public.messages m where m.id = v_message_id;
  end if;

  return jsonb_build_object(
    'thread_id', v_thread, 'message_id', v_message.id,
    'status', coalesce(v_message.status, 'idle'), 'stop_requested', coalesce(v_message.stop_requested, false));
end;
$$;

comment on function public.thread_stop(uuid, uuid, uuid, integer) is
  'Ask the running generation of a user''s thread (or the given message) to stop; a stale one is stopped at once.';

revoke execute on function public.thread_stop(uuid, uuid, uuid, integer) from public, anon, authenticated;
grant execute on function public.thread_stop(uuid, uuid, uuid, integer) to service_role;

-- erase_user_data: the user's threads (and with them their messages) go too. --------------------------------
--
-- Redefined from 20261202030000_retention_and_erasure.sql (the latest definition; the deletion trigger of
-- auth.users calls it): the same ledger deletions in the same lock order, then the threads, locked first
-- as thread_turn_begin locks them, so the two cannot deadlock. The answer keeps its keys and adds
-- `threads` and `messages`.

create or replace function public.erase_user_data(p_user_id uuid) returns jsonb
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
  v_threads      integer;
  v_messages     integer;
begin
  if p_user_id is null then
    raise exception 'erase_user_data: p_user_id is required' using errcode = '22004';
  end if;
  perform pg_advisory_xact_lock(hashtextextended('public.threads:' || p_user_id::text, 0));  -- as thread_turn_begin
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

  perform 1 from public.threads t where t.user_id = p_user_id order by t.id for update;
  select count(*) into v_messages
    from public.messages m
   where m.thread_id in (select t.id from public.threads t where t.user_id = p_user_id);
  delete from public.threads t where t.user_id = p_user_id;  -- their messages cascade
  get diagnostics v_threads = row_count;

  return jsonb_build_object(
    'request_log', v_log, 'usage_daily', v_usage, 'user_limits', v_limits,
    'rate_windows', v_windows, 'ledger_reservations', v_reservations,
    'threads', v_threads, 'messages', v_messages);
end;
$$;

comment on function public.erase_user_data(uuid) is
  'Delete every row of one user (request log, usage, limits, rate window, reservations, threads and their messages); returns counts.';

revoke execute on function public.erase_user_data(uuid) from public, anon, authenticated;
grant execute on function public.erase_user_data(uuid) to service_role;

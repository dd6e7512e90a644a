-- Local development seed (run by `supabase db reset`; never by `supabase db push`).
--
-- Example per-user limit overrides. user_limits has no foreign key to auth.users (see the ledger
-- migration), so these rows load on an empty auth schema; sign up users with these ids in local
-- Studio to see the limits take effect. Re-running the seed leaves existing rows alone.
insert into public.user_limits (user_id, rpm, daily_requests, daily_cost_usd)
values
  -- a trial user: slow and cheap
  ('11111111-1111-4111-8111-111111111111', 5, 50, 0.25),
  -- a paying user: only the cost cap differs from the functions' defaults
  ('22222222-2222-4222-8222-222222222222', null, null, 10.0)
on conflict (user_id) do nothing;

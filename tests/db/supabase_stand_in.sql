-- TEST-ONLY stand-in for what a Supabase project provides before our migrations run: the API roles,
-- the auth and extensions schemas, a minimal auth.users, auth.uid()/role()/email()/jwt(), and the
-- grants and default privileges Supabase gives the API roles. It lives under tests/ (never under
-- supabase/) so `supabase db push` can never ship it to a real project.
--
-- Sources: supabase/postgres migrations/db/init-scripts/00000000000000-initial-schema.sql (roles,
-- grants), supabase/auth migrations/20240624145325_recreate_auth_functions.up.sql (auth functions).

-- Roles are cluster-wide: create them only when missing, so a shared server (TEST_DATABASE_URL) or
-- a second test database in the same cluster does not fail.
do $roles$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;  -- "logged in" user
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;  -- server-side keys bypass policies
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;  -- what PostgREST connects as, then `set role`s
  end if;
end
$roles$;

grant anon, authenticated, service_role to authenticator;

create schema if not exists extensions;
create extension if not exists pgcrypto with schema extensions;
grant usage on schema extensions to postgres, anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key,
  email varchar(255),
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_anonymous boolean not null default false,
  created_at timestamptz default now()
);

create or replace function auth.uid() returns uuid set search_path to '' as $func$
  select coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid
$func$ language sql stable;

create or replace function auth.role() returns text set search_path to '' as $func$
  select coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text
$func$ language sql stable;

create or replace function auth.email() returns text set search_path to '' as $func$
  select coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'))::text
$func$ language sql stable;

create or replace function auth.jwt() returns jsonb set search_path to '' as $func$
  select coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb
$func$ language sql stable;

-- Supabase gives the API roles full rights on everything created in public; row level security
-- (and our explicit revokes) are what actually restrict them. Mirroring this matters: a migration
-- that forgets a revoke must fail our grant tests here exactly as it would leak on Supabase.
grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;

-- Supabase Realtime's publication (empty on a new project; migrations add the tables clients may follow).
do $realtime$
begin
  if not exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    create publication supabase_realtime;
  end if;
end
$realtime$;

"""Offline mode's stand-in project (``openrouter_devtools.local_project``): the example page's files and the
PostgREST subset over the SQLite ledger and thread store, which must return (and change) exactly the rows
RLS would."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from helpers import asgi_call as call
from helpers import mint
from openrouter_devtools.local_project import (
    NODE_PACKAGES,
    TABLES,
    PageApp,
    RestApp,
    example_page_note,
    local_project_mounts,
)
from openrouter_devtools.serve import FunctionsRouter, OfflineCredentials, mint_dev_token
from openrouter_functions.config import Settings
from openrouter_functions.ledger import Limits, UsageRecord
from openrouter_functions.ledger.sqlite import SQLiteLedger
from openrouter_functions.threads.sqlite import create_thread_tables

SECRET = "local-project-test-secret-with-32-characters-at-least"
ADA = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
BOB = "0b7f3a52-8f43-4a0e-9a3c-2a4cbb7d5e01"
NOBODY = "9d6c3a1e-0000-4000-8000-00000000beef"
PAGE_ORIGIN = "http://127.0.0.1:5173"
NOON = 1_795_780_800.0  # 2026-11-27T12:00:00Z


def token(user: str = ADA, **claims: Any) -> str:
    return mint(SECRET, sub=user, **claims)


def auth(user: str = ADA, **claims: Any) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token(user, **claims)}"), ("apikey", mint_dev_token(SECRET, role="anon"))]


@pytest.fixture
async def ledger(tmp_path: Path) -> Path:
    """A SQLite ledger with requests of two users, written by the real ledger backend."""
    path = tmp_path / "ledger.sqlite3"
    clock = [NOON]
    backend = SQLiteLedger(path, clock=lambda: clock[0])
    try:
        for n, (user, status) in enumerate([(ADA, 200), (ADA, 200), (ADA, 502), (BOB, 200)]):
            clock[0] = NOON + n
            request_id = f"req-{n}-{user[:4]}"
            await backend.begin(request_id, user, 0.01, Limits(rpm=None, daily_requests=None, daily_cost_usd=None))
            await backend.finish(
                UsageRecord(
                    request_id,
                    user,
                    "chat",
                    model="openai/gpt-4o",
                    status=status,
                    error_type=None if status == 200 else "upstream_error",
                    latency_ms=12.0,
                    attempts=1,
                    prompt_tokens=10,
                    completion_tokens=n + 1,
                    total_tokens=11 + n,
                    cost_usd=0.0001,
                    prompt_preview=f"secret of {user}",
                    admitted=True,
                )
            )
    finally:
        await backend.aclose()
    return path


@pytest.fixture
def rest(ledger: Path) -> FunctionsRouter:
    """The REST stand-in where serve mounts it (``/rest``), allowing the page's origin only."""
    return FunctionsRouter({}, {"rest": RestApp(ledger, SECRET, (PAGE_ORIGIN,))})


async def rows(app: Any, table: str, query: str = "select=*", headers: Sequence[tuple[str, str]] = ()) -> Any:
    status, _, body = await call(app, "GET", f"/rest/v1/{table}", query=query, headers=headers or auth())
    assert status == 200, body
    return json.loads(body)


def test_the_tables_have_the_ledgers_and_the_thread_stores_columns(ledger: Path) -> None:
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        create_thread_tables(db)  # what SQLiteThreadStore creates in the ledger's file
        for table, columns in TABLES.items():
            assert tuple(row[1] for row in db.execute(f"pragma table_info({table})")) == columns


# --- RLS: each user sees their own rows, and only them ----------------------------------------------


async def test_a_user_sees_only_their_own_rows(rest: FunctionsRouter) -> None:
    ada = await rows(rest, "request_log")
    assert [row["request_id"] for row in ada] and {row["user_id"] for row in ada} == {ADA}
    assert len(ada) == 3
    bob = await rows(rest, "request_log", headers=auth(BOB))
    assert [row["user_id"] for row in bob] == [BOB]
    assert bob[0]["prompt_preview"] == f"secret of {BOB}"
    (day,) = await rows(rest, "usage_daily")
    assert (day["user_id"], day["day"], day["requests"]) == (ADA, "2026-11-27", 3)


async def test_another_users_token_sees_nothing_of_theirs(rest: FunctionsRouter) -> None:
    assert await rows(rest, "request_log", headers=auth(NOBODY)) == []
    assert await rows(rest, "usage_daily", headers=auth(NOBODY)) == []
    # Asking for someone else's rows by filter changes nothing: RLS still applies.
    assert await rows(rest, "request_log", f"select=*&user_id=eq.{ADA}", auth(BOB)) == []
    assert await rows(rest, "usage_daily", f"user_id=eq.{BOB}", auth(ADA)) == []


async def test_the_anon_key_sees_no_rows_and_service_role_sees_all(rest: FunctionsRouter) -> None:
    anon = mint_dev_token(SECRET, role="anon")
    assert await rows(rest, "request_log", headers=[("authorization", f"Bearer {anon}"), ("apikey", anon)]) == []
    assert await rows(rest, "request_log", headers=[("apikey", anon)]) == []  # apikey alone: the anon role
    service = mint_dev_token(SECRET, role="service_role")
    assert len(await rows(rest, "request_log", headers=[("authorization", f"Bearer {service}")])) == 4


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ([], None),  # no token, no apikey: Supabase's gateway refuses
        ([("authorization", "Bearer not-a-jwt")], "PGRST301"),
        ([("authorization", f"Bearer {mint('another-secret-that-is-long-enough-to-sign-with', sub=ADA)}")], "PGRST301"),
        ([("authorization", f"Bearer {mint(SECRET, sub=ADA, exp=int(time.time()) - 60)}")], "PGRST303"),
        ([("authorization", f"Bearer {mint(SECRET, sub=None)}")], "PGRST301"),
        ([("authorization", f"Bearer {mint(SECRET, sub=ADA, aud='other')}")], "PGRST301"),
        ([("authorization", f"Bearer {mint(SECRET, sub=ADA, role='postgres')}")], "PGRST301"),
        ([("authorization", f"Basic {mint(SECRET, sub=ADA)}")], "PGRST301"),
    ],
)
async def test_no_or_bad_token_is_401(rest: FunctionsRouter, headers: list[tuple[str, str]], code: str | None) -> None:
    status, answer_headers, body = await call(rest, "GET", "/rest/v1/request_log", headers=headers)
    assert status == 401
    error = json.loads(body)
    assert set(error) == {"code", "details", "hint", "message"}
    assert error["code"] == code
    assert ADA not in body.decode()
    if code is not None:
        assert answer_headers["www-authenticate"].startswith("Bearer")


async def test_writes_are_refused_like_the_revoked_grants(rest: FunctionsRouter) -> None:
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        status, _, body = await call(rest, method, "/rest/v1/usage_daily", headers=auth())
        assert status == 403
        assert json.loads(body)["code"] == "42501"


# --- What the page asks, and what the stand-in refuses ---------------------------------------------


async def test_select_order_limit_offset_and_filters(rest: FunctionsRouter) -> None:
    page_query = "select=request_id,status,total_tokens&user_id=eq." + ADA + "&order=created_at.desc&limit=2"
    newest = await rows(rest, "request_log", page_query)
    assert newest == [
        {"request_id": f"req-2-{ADA[:4]}", "status": 502, "total_tokens": 13},
        {"request_id": f"req-1-{ADA[:4]}", "status": 200, "total_tokens": 12},
    ]
    second = await rows(rest, "request_log", "select=request_id&order=created_at.asc&limit=1&offset=1")
    assert second == [{"request_id": f"req-1-{ADA[:4]}"}]
    failed = await rows(rest, "request_log", "select=request_id,error_type&status=gte.500")
    assert failed == [{"request_id": f"req-2-{ADA[:4]}", "error_type": "upstream_error"}]
    assert await rows(rest, "request_log", "select=request_id&status=neq.200&status=lt.500") == []
    (row,) = await rows(rest, "request_log", "select=created_at&limit=1")
    assert row["created_at"].startswith("2026-11-27T12:00:0") and row["created_at"].endswith("+00:00")


async def test_content_range_count_and_single_object(rest: FunctionsRouter) -> None:
    status, headers, _ = await call(
        rest, "GET", "/rest/v1/request_log", query="limit=2", headers=[*auth(), ("prefer", "count=exact")]
    )
    assert (status, headers["content-range"]) == (200, "0-1/3")
    status, headers, body = await call(
        rest, "GET", "/rest/v1/usage_daily", headers=[*auth(), ("accept", "application/vnd.pgrst.object+json")]
    )
    assert status == 200 and json.loads(body)["requests"] == 3
    status, _, body = await call(
        rest, "GET", "/rest/v1/request_log", headers=[*auth(), ("accept", "application/vnd.pgrst.object+json")]
    )
    assert status == 406 and json.loads(body)["code"] == "PGRST116"
    status, headers, body = await call(rest, "HEAD", "/rest/v1/request_log", headers=auth())
    assert (status, body, headers["content-range"]) == (200, b"", "0-2/*")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("select=*,profiles(*)", "PGRST100"),  # embedding
        ("select=total:total_tokens", "PGRST100"),  # alias
        ("select=cost_usd::text", "PGRST100"),  # cast
        ("select=password", "42703"),
        ("order=nope.desc", "42703"),
        ("order=created_at.sideways", "PGRST100"),
        ("status=like.2*", "PGRST100"),
        ("status=in.(200,502)", "PGRST100"),
        ("status=200", "PGRST100"),
        ("or=(status.eq.200,status.eq.502)", "PGRST100"),
        ("nope=eq.1", "42703"),
        ("limit=-1", "PGRST100"),
        ("limit=all", "PGRST100"),
        ("offset=%C2%B2", "PGRST100"),  # "²" passes str.isdigit but is no number
        ("limit=99999999999999999999", "PGRST100"),
        ("select=*&select=status", "PGRST100"),
    ],
)
async def test_the_rest_of_postgrest_is_refused_in_its_shape(rest: FunctionsRouter, query: str, code: str) -> None:
    status, _, body = await call(rest, "GET", "/rest/v1/request_log", query=query, headers=auth())
    assert status == 400
    error = json.loads(body)
    assert set(error) == {"code", "details", "hint", "message"}
    assert error["code"] == code


@pytest.mark.parametrize(
    "path", ["/rest/v1/user_limits", "/rest/v1/ledger_reservations", "/rest/v1/", "/rest/v1", "/rest/v2/request_log"]
)
async def test_unknown_tables_are_404(rest: FunctionsRouter, path: str) -> None:
    status, _, body = await call(rest, "GET", path, headers=auth())
    assert status == 404
    assert json.loads(body)["code"] == "PGRST205"


async def test_no_ledger_file_yet_is_no_rows(tmp_path: Path) -> None:
    app = FunctionsRouter({}, {"rest": RestApp(tmp_path / "none.sqlite3", SECRET, ("*",))})
    assert await rows(app, "request_log") == []
    assert not (tmp_path / "none.sqlite3").exists()


async def test_cors_like_the_functions(rest: FunctionsRouter) -> None:
    preflight = [
        ("origin", PAGE_ORIGIN),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization,apikey,accept-profile,x-client-info"),
    ]
    status, headers, _ = await call(rest, "OPTIONS", "/rest/v1/usage_daily", headers=preflight)
    assert status == 204
    assert headers["access-control-allow-origin"] == PAGE_ORIGIN
    allowed = {name.strip() for name in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "apikey", "accept-profile", "x-client-info", "x-retry-count"} <= allowed
    status, headers, _ = await call(rest, "GET", "/rest/v1/usage_daily", headers=[*auth(), ("origin", PAGE_ORIGIN)])
    assert (status, headers["access-control-allow-origin"]) == (200, PAGE_ORIGIN)
    assert "Retry-After" in headers["access-control-expose-headers"]
    other = "http://evil.example"
    status, headers, _ = await call(rest, "OPTIONS", "/rest/v1/usage_daily", headers=[("origin", other)])
    assert "access-control-allow-origin" not in headers
    status, headers, _ = await call(rest, "GET", "/rest/v1/usage_daily", headers=[*auth(), ("origin", other)])
    assert "access-control-allow-origin" not in headers
    status, headers, _ = await call(rest, "GET", "/rest/v1/usage_daily", headers=[("origin", PAGE_ORIGIN)])
    assert (status, headers["access-control-allow-origin"]) == (401, PAGE_ORIGIN)  # errors readable too


# --- The page's files -------------------------------------------------------------------------------


@pytest.fixture
def web(tmp_path: Path) -> Path:
    """A stand-in for examples/web: the page files, allowed packages, and things never to be served."""
    web = tmp_path / "web"
    (web / "node_modules" / "openai" / "internal").mkdir(parents=True)
    (web / "node_modules" / "@supabase" / "supabase-js" / "dist" / "umd").mkdir(parents=True)
    (web / "node_modules" / "tslib").mkdir(parents=True)
    for name, text in {
        "index.html": "<!doctype html><title>page</title>",
        "app.js": "export {};",
        "style.css": "body {}",
        "package.json": "{}",
        "config.example.js": "export default {};",
        ".env": "SECRET=1",
        "node_modules/openai/index.mjs": "export {};",
        "node_modules/openai/internal/x.mjs": "export {};",
        "node_modules/openai/package.json": "{}",
        "node_modules/openai/.hidden.mjs": "export {};",
        "node_modules/@supabase/supabase-js/dist/umd/supabase.js": "var supabase = {};",
        "node_modules/tslib/tslib.es6.mjs": "export {};",
    }.items():
        (web / name).write_text(text, encoding="utf-8")
    (tmp_path / "outside.mjs").write_text("export const secret = 1;", encoding="utf-8")
    (web / "node_modules" / "openai" / "escape.mjs").symlink_to(tmp_path / "outside.mjs")
    return web


def page_app(web: Path) -> FunctionsRouter:
    config = {"supabaseUrl": "x", "anonKey": "anon", "offline": True, "devToken": "dev-token"}
    return FunctionsRouter({}, {"app": PageApp(web, lambda origin: {**config, "supabaseUrl": origin})})


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/app/", "text/html; charset=utf-8"),
        ("/app/index.html", "text/html; charset=utf-8"),
        ("/app/app.js", "text/javascript; charset=utf-8"),
        ("/app/style.css", "text/css; charset=utf-8"),
        ("/app/node_modules/openai/index.mjs", "text/javascript; charset=utf-8"),
        ("/app/node_modules/openai/internal/x.mjs", "text/javascript; charset=utf-8"),
        ("/app/node_modules/@supabase/supabase-js/dist/umd/supabase.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_page_files_are_served_with_their_types(web: Path, path: str, content_type: str) -> None:
    status, headers, body = await call(page_app(web), "GET", path)
    assert (status, headers["content-type"]) == (200, content_type)
    assert headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in headers
    assert body


@pytest.mark.parametrize(
    "path",
    [
        "/app/../shared/openrouter_devtools/serve.py",
        "/app/..",
        "/app/node_modules/openai/../../package.json",
        "/app/node_modules/openai/../../../outside.mjs",
        "/app/node_modules/openai/./index.mjs",
        "/app/node_modules/openai//index.mjs",
        "/app/node_modules/openai/internal/../index.mjs",
        "/app/node_modules/openai/..%2findex.mjs",
        "/app/node_modules/openai/escape.mjs",  # a symlink out of the package
        "/app/node_modules/openai/.hidden.mjs",
        "/app/node_modules/openai/package.json",
        "/app/node_modules/openai",
        "/app/node_modules/tslib/tslib.es6.mjs",  # not a package the page loads
        "/app/node_modules/",
        "/app/package.json",
        "/app/package-lock.json",
        "/app/config.example.js",
        "/app/.env",
        "/app//etc/passwd",
        "/app/node_modules/openai/index.mjs\x00.js",
        "/app/node_modules\\openai\\index.mjs",
    ],
)
async def test_anything_else_is_404(web: Path, path: str) -> None:
    status, _, body = await call(page_app(web), "GET", path)
    assert status == 404
    assert json.loads(body)["error"]["type"] == "not_found"


async def test_config_is_generated_for_loopback_hosts_only(web: Path) -> None:
    app = page_app(web)
    status, headers, body = await call(app, "GET", "/app/config.js")
    assert (status, headers["content-type"], headers["cache-control"]) == (
        200,
        "text/javascript; charset=utf-8",
        "no-store",
    )
    text = body.decode()
    assert text.startswith("export default {") and text.rstrip().endswith("};")
    config = json.loads(text[len("export default ") :].rstrip().rstrip(";"))
    assert config == {
        "supabaseUrl": "http://127.0.0.1:8080",
        "anonKey": "anon",
        "offline": True,
        "devToken": "dev-token",
    }
    assert "access-control-allow-origin" not in headers
    for host in ("localhost:8080", "[::1]:8080", "127.0.0.1:9999", "app.localhost"):
        status, _, body = await call(app, "GET", "/app/config.js", headers=[("host", host)])
        assert status == 200, host
        assert (
            json.loads(body.decode()[len("export default ") :].rstrip().rstrip(";"))["supabaseUrl"] == f"http://{host}"
        )
    # A DNS name could be rebound to 127.0.0.1 by another site, and another machine on the network may
    # reach `serve --host 0.0.0.0` by its LAN address: no developer token for either.
    for host in ("attacker.example:8080", "attacker.example", "127.0.0.1:8080 x", "127.0.0.1:8080/x", "", "[::1"):
        status, _, body = await call(app, "GET", "/app/config.js", headers=[("host", host)])
        assert status == 403, host
        assert b"dev-token" not in body
    for peer, host in (
        ("192.168.1.20", "localhost:8080"),
        ("192.168.1.20", "192.168.1.5:8080"),
        ("10.0.0.3", "[::1]:8080"),
    ):
        status, _, body = await call(app, "GET", "/app/config.js", headers=[("host", host)], client=peer)
        assert status == 403, (peer, host)
        assert b"dev-token" not in body


async def test_app_without_slash_redirects_and_only_get_is_served(web: Path) -> None:
    app = page_app(web)
    status, headers, _ = await call(app, "GET", "/app")
    assert (status, headers["location"]) == (308, "/app/")
    status, headers, _ = await call(app, "POST", "/app/")
    assert status == 405
    status, headers, body = await call(app, "HEAD", "/app/app.js")
    assert (status, body) == (200, b"")


async def test_missing_npm_packages_are_explained(web: Path, tmp_path: Path) -> None:
    (web / "node_modules").rename(tmp_path / "elsewhere")
    status, _, body = await call(page_app(web), "GET", "/app/")
    assert status == 200
    assert b"npm ci" in body
    assert "npm ci" in example_page_note("127.0.0.1", 8080, web)
    assert example_page_note("::1", 8080, tmp_path / "elsewhere").startswith(
        "  example web app: http://[::1]:8080/app/"
    )


def test_node_packages_are_what_index_html_loads() -> None:
    index = (Path(__file__).resolve().parents[1] / "examples" / "web" / "index.html").read_text(encoding="utf-8")
    loaded = {
        package for package in NODE_PACKAGES if f"./node_modules/{package}/" in index
    }  # the import map and the UMD script
    assert loaded == set(NODE_PACKAGES)


async def test_mounts_for_serve(tmp_path: Path, ledger: Path) -> None:
    """What serve's offline branch mounts: the page with a config for this server, and the tables."""
    settings = Settings(ledger_sqlite_path=str(ledger), allowed_origins=("*",), ledger_backend="sqlite")
    credentials = OfflineCredentials(SECRET, token(ADA), mint_dev_token(SECRET, role="anon"), tmp_path)
    router = FunctionsRouter({}, local_project_mounts(settings, credentials))
    status, _, body = await call(router, "GET", "/app/config.js")
    assert status == 200
    config = json.loads(body.decode()[len("export default ") :].rstrip().rstrip(";"))
    assert config == {
        "supabaseUrl": "http://127.0.0.1:8080",
        "functionsUrl": "http://127.0.0.1:8080",
        "anonKey": credentials.anon_key,
        "offline": True,
        "devToken": credentials.token,
    }
    assert len(await rows(router, "request_log", headers=[("authorization", f"Bearer {config['devToken']}")])) == 3


def test_no_tables_when_the_ledger_is_not_the_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://localhost/ledger", allowed_origins=("*",))
    credentials = OfflineCredentials(SECRET, token(ADA), mint_dev_token(SECRET, role="anon"), tmp_path)
    assert set(local_project_mounts(settings, credentials)) == {"app"}


# --- Conversations: threads and messages (docs/threads.md), read and renamed/deleted under RLS ------

ADA_FIRST = "a0000000-0000-4000-8000-000000000001"
ADA_SECOND = "a0000000-0000-4000-8000-000000000002"
BOB_THREAD = "b0000000-0000-4000-8000-000000000001"


def _iso(offset: float) -> str:
    """A time of the test day as the SQLite thread store writes it (ISO text, UTC, milliseconds, ``Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOON + offset)) + f".{int(offset * 1000) % 1000:03d}Z"


THREAD_ROWS = [  # id, user, title, system prompt, created, updated
    (ADA_FIRST, ADA, "First chat", None, 10, 12),
    (ADA_SECOND, ADA, "Second chat", "Be brief.", 20, 25),
    (BOB_THREAD, BOB, "Bob's secret plans", None, 15, 30),
]
MESSAGE_ROWS = [  # thread, seq, role, content, status, stop_requested
    (ADA_FIRST, 1, "user", "hello", "complete", 0),
    (ADA_FIRST, 2, "assistant", "Echo: hello", "complete", 0),
    (ADA_SECOND, 1, "user", "tell me everything", "complete", 0),
    (ADA_SECOND, 2, "assistant", "Echo: tell", "stopped", 1),
    (BOB_THREAD, 1, "user", "bob's question", "complete", 0),
    (BOB_THREAD, 2, "assistant", "bob's answer so far", "streaming", 0),
]


def _message_id(thread: str, seq: int) -> str:
    return f"{thread[:8]}-1111-4{seq:03d}-8000-{thread[-12:]}"


@pytest.fixture
def threads_db(ledger: Path) -> Path:
    """The ledger's SQLite file with threads and messages of two users, in the thread store's own tables."""
    with contextlib.closing(sqlite3.connect(ledger)) as db, db:
        create_thread_tables(db)
        for thread, user, title, system, created, updated in THREAD_ROWS:
            db.execute(
                "insert into threads (id, user_id, title, model, system_prompt, created_at, updated_at) "
                "values (?, ?, ?, 'openai/gpt-4o', ?, ?, ?)",
                (thread, user, title, system, _iso(created), _iso(updated)),
            )
        owners = {row[0]: row[1] for row in THREAD_ROWS}
        for thread, seq, role, content, status, stop in MESSAGE_ROWS:
            db.execute(
                "insert into messages (id, thread_id, user_id, seq, role, content, model, status, stop_requested, "
                "created_at, updated_at) values (?, ?, ?, ?, ?, ?, 'openai/gpt-4o', ?, ?, ?, ?)",
                (
                    _message_id(thread, seq),
                    thread,
                    owners[thread],
                    seq,
                    role,
                    content,
                    status,
                    stop,
                    _iso(seq),
                    _iso(seq),
                ),
            )
    return ledger


@pytest.fixture
def rest_threads(threads_db: Path) -> FunctionsRouter:
    return FunctionsRouter({}, {"rest": RestApp(threads_db, SECRET, (PAGE_ORIGIN,))})


def _db_rows(database: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute(sql, args).fetchall()


async def test_the_page_reads_its_threads_newest_first_and_a_threads_messages_in_order(
    rest_threads: FunctionsRouter,
) -> None:
    threads = await rows(rest_threads, "threads", "select=id,title,updated_at&order=updated_at.desc&limit=50")
    assert [thread["id"] for thread in threads] == [ADA_SECOND, ADA_FIRST]
    assert threads[0] == {"id": ADA_SECOND, "title": "Second chat", "updated_at": "2026-11-27T12:00:25.000+00:00"}
    messages = await rows(rest_threads, "messages", f"select=*&thread_id=eq.{ADA_SECOND}&order=seq.asc")
    assert [(m["seq"], m["role"], m["status"]) for m in messages] == [
        (1, "user", "complete"),
        (2, "assistant", "stopped"),
    ]
    assert messages[1]["content"] == "Echo: tell"
    assert messages[1]["stop_requested"] is True and messages[0]["stop_requested"] is False  # Postgres booleans
    assert list(messages[0]) == list(TABLES["messages"])
    # Following a streaming answer: one row by id, and the newest assistant message of a thread.
    (row,) = await rows(rest_threads, "messages", f"select=id,content,status&id=eq.{_message_id(ADA_FIRST, 2)}&limit=1")
    assert row == {"id": _message_id(ADA_FIRST, 2), "content": "Echo: hello", "status": "complete"}
    newest = await rows(
        rest_threads, "messages", f"select=id&thread_id=eq.{ADA_FIRST}&role=eq.assistant&order=seq.desc&limit=1"
    )
    assert newest == [{"id": _message_id(ADA_FIRST, 2)}]


async def test_another_users_threads_and_messages_are_never_returned(rest_threads: FunctionsRouter) -> None:
    everything = [
        *await rows(rest_threads, "threads"),
        *await rows(rest_threads, "messages"),
        *await rows(rest_threads, "threads", f"id=eq.{BOB_THREAD}"),
        *await rows(rest_threads, "threads", f"user_id=eq.{BOB}"),
        *await rows(rest_threads, "messages", f"thread_id=eq.{BOB_THREAD}"),
        *await rows(rest_threads, "messages", f"id=eq.{_message_id(BOB_THREAD, 2)}"),
        *await rows(rest_threads, "messages", "status=eq.streaming"),
    ]
    assert everything and {row["user_id"] for row in everything} == {ADA}
    assert "bob" not in json.dumps(everything).lower()
    assert await rows(rest_threads, "threads", headers=auth(NOBODY)) == []
    assert await rows(rest_threads, "messages", headers=auth(NOBODY)) == []
    bob = await rows(rest_threads, "messages", "select=content&order=seq", auth(BOB))
    assert bob == [{"content": "bob's question"}, {"content": "bob's answer so far"}]
    anon = mint_dev_token(SECRET, role="anon")
    assert await rows(rest_threads, "threads", headers=[("apikey", anon)]) == []


async def test_a_user_renames_their_own_thread(rest_threads: FunctionsRouter, threads_db: Path) -> None:
    renamed = json.dumps({"title": "Renamed"}).encode()
    patch = [*auth(), ("content-type", "application/json")]
    status, _, body = await call(
        rest_threads, "PATCH", "/rest/v1/threads", query=f"id=eq.{ADA_FIRST}", headers=patch, body=renamed
    )
    assert (status, body) == (204, b"")
    assert _db_rows(threads_db, "select title from threads where id = ?", ADA_FIRST) == [("Renamed",)]
    status, _, body = await call(
        rest_threads,
        "PATCH",
        "/rest/v1/threads",
        query=f"id=eq.{ADA_FIRST}&select=id,title",
        headers=[*patch, ("prefer", "return=representation")],
        body=json.dumps({"title": "Again"}).encode(),
    )
    assert (status, json.loads(body)) == (200, [{"id": ADA_FIRST, "title": "Again"}])
    # Another user's thread: invisible, so nothing to update (PostgREST answers as for no match).
    status, _, body = await call(
        rest_threads, "PATCH", "/rest/v1/threads", query=f"id=eq.{BOB_THREAD}", headers=patch, body=renamed
    )
    assert status == 204
    assert _db_rows(threads_db, "select title from threads where id = ?", BOB_THREAD) == [("Bob's secret plans",)]


@pytest.mark.parametrize(
    ("table", "change", "status", "code"),
    [
        ("threads", {"user_id": BOB}, 403, "42501"),  # the column grant is `update (title)` only
        ("threads", {"title": "ok", "user_id": BOB}, 403, "42501"),
        ("threads", {"model": "x/y"}, 403, "42501"),
        ("threads", {"system_prompt": "Obey me."}, 403, "42501"),
        ("threads", {"id": NOBODY}, 403, "42501"),
        ("threads", {"updated_at": "2030-01-01T00:00:00Z"}, 403, "42501"),
        ("threads", {"nope": 1}, 400, "42703"),
        ("threads", {}, 403, "42501"),
        ("threads", {"title": None}, 400, "23502"),  # not null
        ("threads", {"title": 7}, 400, "22P02"),
        ("threads", {"title": "x" * 201}, 400, "23514"),
        ("messages", {"content": "a forged answer"}, 403, "42501"),  # only the server writes messages
        ("messages", {"status": "complete"}, 403, "42501"),
        ("messages", {"cost_usd": 0}, 403, "42501"),
    ],
)
async def test_a_patch_of_anything_but_a_threads_title_is_refused(
    rest_threads: FunctionsRouter, threads_db: Path, table: str, change: dict[str, Any], status: int, code: str
) -> None:
    before = _db_rows(threads_db, f"select * from {table} order by id")
    target = ADA_FIRST if table == "threads" else _message_id(ADA_FIRST, 2)
    answer, _, body = await call(
        rest_threads,
        "PATCH",
        f"/rest/v1/{table}",
        query=f"id=eq.{target}",
        headers=[*auth(), ("content-type", "application/json")],
        body=json.dumps(change).encode(),
    )
    assert answer == status, body
    error = json.loads(body)
    assert set(error) == {"code", "details", "hint", "message"} and error["code"] == code
    assert _db_rows(threads_db, f"select * from {table} order by id") == before


@pytest.mark.parametrize(
    ("method", "path", "query", "payload", "status", "code"),
    [
        ("PATCH", "threads", "", {"title": "All mine"}, 400, "21000"),  # a write must say which rows
        ("DELETE", "threads", "", None, 400, "21000"),
        ("DELETE", "messages", "", None, 400, "21000"),
        ("PATCH", "threads", f"id=eq.{ADA_FIRST}", "not json", 400, "PGRST102"),
        ("PATCH", "threads", f"id=eq.{ADA_FIRST}", ["title"], 400, "PGRST102"),
        ("PATCH", "threads", f"id=in.({ADA_FIRST})", {"title": "x"}, 400, "PGRST100"),
        ("DELETE", "threads", f"id=eq.{ADA_FIRST}&limit=1", None, 400, "PGRST100"),
        ("POST", "threads", "", {"title": "mine", "user_id": ADA}, 403, "42501"),  # only the server inserts
        ("POST", "messages", "", {"thread_id": ADA_FIRST, "content": "forged"}, 403, "42501"),
        ("PUT", "threads", f"id=eq.{ADA_FIRST}", {"title": "x"}, 403, "42501"),
        ("DELETE", "request_log", f"request_id=eq.req-0-{ADA[:4]}", None, 403, "42501"),
        ("PATCH", "usage_daily", f"user_id=eq.{ADA}", {"requests": 0}, 403, "42501"),
    ],
)
async def test_other_writes_are_refused_in_postgrests_shape(
    rest_threads: FunctionsRouter,
    threads_db: Path,
    method: str,
    path: str,
    query: str,
    payload: Any,
    status: int,
    code: str,
) -> None:
    tables = ("threads", "messages", "request_log", "usage_daily")
    before = [_db_rows(threads_db, f"select * from {table} order by 1") for table in tables]
    data = b"" if payload is None else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    answer, _, body = await call(
        rest_threads,
        method,
        f"/rest/v1/{path}",
        query=query,
        headers=[*auth(), ("content-type", "application/json")],
        body=data,
    )
    assert (answer, json.loads(body)["code"]) == (status, code), body
    assert [_db_rows(threads_db, f"select * from {table} order by 1") for table in tables] == before


async def test_a_user_deletes_their_own_thread_and_its_messages_go_with_it(
    rest_threads: FunctionsRouter, threads_db: Path
) -> None:
    status, _, body = await call(rest_threads, "DELETE", "/rest/v1/threads", query=f"id=eq.{ADA_FIRST}", headers=auth())
    assert (status, body) == (204, b"")
    assert _db_rows(threads_db, "select id from threads order by id") == [(ADA_SECOND,), (BOB_THREAD,)]
    assert _db_rows(threads_db, "select count(*) from messages where thread_id = ?", ADA_FIRST) == [(0,)]
    assert _db_rows(threads_db, "select count(*) from messages") == [(4,)]
    # Someone else's thread, by id or by any filter: invisible, so nothing is deleted.
    for query in (f"id=eq.{BOB_THREAD}", f"user_id=eq.{BOB}", "title=neq.x"):
        status, _, body = await call(rest_threads, "DELETE", "/rest/v1/threads", query=query, headers=auth(NOBODY))
        assert status == 204
    assert _db_rows(threads_db, "select count(*) from threads") == [(2,)]
    status, _, body = await call(
        rest_threads, "DELETE", "/rest/v1/threads", query=f"id=eq.{BOB_THREAD}", headers=auth()
    )
    assert status == 204
    assert _db_rows(threads_db, "select count(*) from messages where thread_id = ?", BOB_THREAD) == [(2,)]
    # With return=representation, the rows as they were.
    status, _, body = await call(
        rest_threads,
        "DELETE",
        "/rest/v1/messages",
        query=f"thread_id=eq.{ADA_SECOND}&role=eq.assistant&select=id,status",
        headers=[*auth(), ("prefer", "return=representation")],
    )
    assert (status, json.loads(body)) == (200, [{"id": _message_id(ADA_SECOND, 2), "status": "stopped"}])
    assert _db_rows(threads_db, "select count(*) from messages where thread_id = ?", ADA_SECOND) == [(1,)]


async def test_anon_writes_nothing(rest_threads: FunctionsRouter, threads_db: Path) -> None:
    anon = mint_dev_token(SECRET, role="anon")
    for method in ("PATCH", "DELETE"):
        status, _, body = await call(
            rest_threads,
            method,
            "/rest/v1/threads",
            query=f"id=eq.{ADA_FIRST}",
            headers=[("apikey", anon), ("content-type", "application/json")],
            body=b'{"title": "anon"}' if method == "PATCH" else b"",
        )
        assert (status, json.loads(body)["code"]) == (401, "42501")
    assert _db_rows(threads_db, "select title from threads where id = ?", ADA_FIRST) == [("First chat",)]


async def test_writes_before_the_store_made_its_tables_change_nothing(rest: FunctionsRouter) -> None:
    status, _, _ = await call(rest, "DELETE", "/rest/v1/threads", query=f"id=eq.{ADA_FIRST}", headers=auth())
    assert status == 204
    assert await rows(rest, "messages") == []


async def test_cors_preflight_allows_the_pages_writes(rest_threads: FunctionsRouter) -> None:
    preflight = [
        ("origin", PAGE_ORIGIN),
        ("access-control-request-method", "PATCH"),
        ("access-control-request-headers", "authorization,apikey,content-type,prefer,x-client-info"),
    ]
    status, headers, _ = await call(rest_threads, "OPTIONS", "/rest/v1/threads", headers=preflight)
    assert status == 204
    assert {"PATCH", "DELETE", "GET"} <= {m.strip() for m in headers["access-control-allow-methods"].split(",")}
    assert {"content-type", "prefer"} <= {h.strip() for h in headers["access-control-allow-headers"].split(",")}

"""Offline mode's stand-in project (``openrouter_devtools.local_project``): the example page's files and the
read-only PostgREST subset over the SQLite ledger, which must return exactly the rows RLS would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

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

SECRET = "local-project-test-secret-with-32-characters-at-least"
ADA = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"
BOB = "0b7f3a52-8f43-4a0e-9a3c-2a4cbb7d5e01"
NOBODY = "9d6c3a1e-0000-4000-8000-00000000beef"
PAGE_ORIGIN = "http://127.0.0.1:5173"
NOON = 1_795_780_800.0  # 2026-11-27T12:00:00Z

Answer = tuple[int, dict[str, str], bytes]


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    query: str = "",
    headers: Sequence[tuple[str, str]] = (),
    client: str = "127.0.0.1",
) -> Answer:
    """One request straight into an ASGI app (no client normalizes ``path``: ``..`` arrives as sent)."""
    sent_headers = [(name.lower().encode(), value.encode()) for name, value in headers]
    if not any(name == b"host" for name, _ in sent_headers):
        sent_headers.insert(0, (b"host", b"127.0.0.1:8080"))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": sent_headers,
        "client": (client, 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the client stays connected
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    answer_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], answer_headers, body


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


def test_the_tables_have_the_ledgers_columns(ledger: Path) -> None:
    with contextlib.closing(sqlite3.connect(ledger)) as db:
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

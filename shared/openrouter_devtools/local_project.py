"""Offline mode's stand-in for the rest of a Supabase project: the example page and its two tables.

``openrouter-functions serve`` in offline mode mounts two small ASGI apps next to the functions:

* ``/app/`` — the example web app (``examples/web``): its own files, an allow-list of the npm packages
  it imports (from ``examples/web/node_modules``), and a generated ``/app/config.js`` that points the page
  at this server and hands it the offline developer's token (the page "signs in" with it, as there is
  no Auth server).
* ``/rest/v1/usage_daily``, ``/rest/v1/request_log``, ``/rest/v1/threads`` and ``/rest/v1/messages`` — a
  subset of PostgREST over the embedded SQLite file the ledger and the thread store share: ``GET``/``HEAD``
  with ``select=``, ``order=``, ``limit=``, ``offset=`` and simple ``column=op.value`` filters (``eq``,
  ``neq``, ``gt``, ``gte``, ``lt``, ``lte``). The bearer token is verified with the offline secret, and a
  caller sees exactly the rows row level security would let it see (``supabase/migrations``:
  ``user_id = auth.uid()`` for ``authenticated``, nothing for ``anon``, everything for ``service_role``).
  The writes RLS allows a user are the only ones here (docs/threads.md): ``PATCH`` of a thread's
  ``title`` and ``DELETE`` of threads (their messages go with them) and of messages, always filtered, on
  the caller's own rows. Anything else is refused in PostgREST's error shape, so supabase-js reports it
  as it would against a real project.

Nothing here is deployed: a real project has Supabase's own Auth, PostgREST and RLS, and the page is
served by any static server.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import json
import re
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from openrouter_functions.cors import ALLOWED_HEADERS, cors_headers
from openrouter_functions.envelope import ApiError, error_response
from openrouter_functions.ledger.sqlite import LOG_COLUMNS

if TYPE_CHECKING:
    from openrouter_functions.config import Settings

    from .serve import OfflineCredentials

__all__ = [
    "MAX_ROWS",
    "NODE_PACKAGES",
    "TABLES",
    "PageApp",
    "RestApp",
    "example_page_note",
    "find_web_dir",
    "local_project_mounts",
]

ASGIApp = Callable[..., Any]

# What the page loads from node_modules: openai's ES modules and supabase-js's self-contained UMD build
# (its ES build imports extensionless paths a browser cannot resolve). Nothing else there is served.
NODE_PACKAGES = ("@supabase/supabase-js", "openai")
PAGE_FILES = {"": "index.html", "index.html": "index.html", "app.js": "app.js", "style.css": "style.css"}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".map": "application/json",
}
_MODULE_SUFFIXES = (".js", ".mjs", ".map")
_SEGMENT = re.compile(r"^[A-Za-z0-9_@+-][A-Za-z0-9_.@+-]*$")  # no "", ".", "..", dotfiles, separators

# The tables a signed-in user may read under RLS, with their columns (supabase/migrations; the SQLite
# ledger and thread store have the same ones, tests/test_local_project.py checks).
TABLES: dict[str, tuple[str, ...]] = {
    "usage_daily": (
        "user_id",
        "day",
        "requests",
        "in_flight",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "reserved_usd",
        "updated_at",
    ),
    "request_log": LOG_COLUMNS,
    "threads": ("id", "user_id", "title", "model", "system_prompt", "created_at", "updated_at"),
    "messages": (
        "id",
        "thread_id",
        "user_id",
        "seq",
        "role",
        "content",
        "model",
        "status",
        "request_id",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "generation_id",
        "finish_reason",
        "error_type",
        "error_message",
        "stop_requested",
        "created_at",
        "updated_at",
    ),
}
# What RLS and the column grants let a signed-in user change (docs/threads.md, "Row-level security"):
# PATCH only these columns; DELETE only these tables. Nobody but the server inserts anything.
UPDATABLE: dict[str, frozenset[str]] = {"threads": frozenset({"title"})}
DELETABLE = frozenset({"threads", "messages"})
TITLE_CHARS = 200  # like the SQL CHECK on threads.title
_TIMESTAMPS = frozenset({"created_at", "updated_at"})
_BOOLEANS = frozenset({"stop_requested"})  # SQLite keeps 0/1; Postgres (and so PostgREST) says true/false
MAX_ROWS = 1000  # a Supabase project's default `max_rows`
_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
# What supabase-js sends to PostgREST besides the functions' headers (X-Retry-Count: its automatic retries).
_REST_ALLOWED_HEADERS = ALLOWED_HEADERS + ", accept-profile, content-profile, prefer, range, range-unit, x-retry-count"


def find_web_dir() -> Path:
    """``examples/web`` of this checkout (next to ``shared/``), or of the current directory."""
    for candidate in (Path(__file__).resolve().parents[2] / "examples" / "web", Path.cwd() / "examples" / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    return Path(__file__).resolve().parents[2] / "examples" / "web"


def local_project_mounts(
    settings: Settings, credentials: OfflineCredentials, web_dir: Path | None = None
) -> dict[str, ASGIApp]:
    """``{"app": the example page, "rest": the tables}`` for :class:`~.serve.FunctionsRouter` in offline mode
    (the tables only when the ledger is the embedded SQLite one)."""

    def config(origin: str) -> dict[str, Any]:
        return {
            "supabaseUrl": origin,
            "functionsUrl": origin,
            "anonKey": credentials.anon_key,
            "offline": True,
            "devToken": credentials.token,
        }

    mounts: dict[str, ASGIApp] = {"app": PageApp(web_dir or find_web_dir(), config)}
    if settings.resolved_ledger_backend == "sqlite":  # with DATABASE_URL the rows are in Postgres: not here
        mounts["rest"] = RestApp(Path(settings.ledger_sqlite_path), credentials.secret, settings.allowed_origins)
    return mounts


def example_page_note(host: str, port: int, web_dir: Path | None = None) -> str:
    """The line offline mode prints about the example page."""
    web = web_dir or find_web_dir()
    shown = host if ":" not in host else f"[{host}]"
    note = f"  example web app: http://{shown}:{port}/app/"
    if not (web / "index.html").is_file():
        return note + f"  (not available: no {web})"
    if not (web / "node_modules").is_dir():
        note += f"  (run `npm ci` in {web} once first)"
    return note


def _rest_of(scope: Mapping[str, Any]) -> str:
    """The request path below the mount point (``root_path``)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::[0-9]{1,5})?$")


def _loopback(address: str) -> bool:
    """Whether ``address`` (a host name or IP) is this machine: localhost, ``*.localhost`` or a loopback IP."""
    if address == "localhost" or address.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _loopback_request(host_header: str, peer: str | None) -> bool:
    """Whether a request for the developer's token comes from this machine, to a name of this machine.

    The peer address keeps other machines out (``serve --host 0.0.0.0`` on a shared network); the
    ``Host`` keeps out a page whose DNS name another site rebinds to 127.0.0.1.
    """
    match = _HOST.match(host_header)
    if match is None or peer is None:
        return False
    return _loopback((match["v6"] or match["name"]).lower()) and _loopback(peer)


class PageApp:
    """The example page: an allow-list of files from ``web_dir`` and a generated ``config.js``.

    ``config(origin)`` gives the page's settings for a page loaded from ``origin``. The config carries the
    offline developer's token, so it is only handed to a ``Host`` that is ``localhost`` or an IP
    address (a DNS-rebinding page could otherwise read it), and never with CORS headers.
    """

    def __init__(self, web_dir: Path, config: Callable[[str], dict[str, Any]]) -> None:
        self.web_dir = web_dir
        self.config = config

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        response = self.respond(Request(scope, receive))
        await response(scope, receive, send)

    def respond(self, request: Request) -> Response:
        rest = _rest_of(request.scope)
        if request.method not in ("GET", "HEAD"):
            return error_response(ApiError(405, "method_not_allowed", "Use GET.", headers={"Allow": "GET, HEAD"}))
        root = request.scope.get("root_path", "")
        raw: bytes = request.scope.get("raw_path") or b""
        if rest in ("", "/") and raw.split(b"?", 1)[0] == root.encode("utf-8"):  # the page's imports need the slash
            return RedirectResponse(root + "/", status_code=308)
        name = rest[1:]
        if name == "config.js":
            return self._config(request)
        if not (self.web_dir / "index.html").is_file():
            return error_response(ApiError(404, "not_found", f"The example page is not here ({self.web_dir})."))
        if name in PAGE_FILES and not (self.web_dir / "node_modules").is_dir():
            folder = html.escape(str(self.web_dir))
            return Response(
                "<!doctype html><meta charset=utf-8><title>npm ci needed</title><p>The example page needs its npm "
                f"packages: run <code>npm ci</code> in <code>{folder}</code> once, then reload.",
                media_type="text/html; charset=utf-8",
                headers={"Cache-Control": "no-store"},
            )
        path = self._allowed(name)
        if path is None:
            return error_response(ApiError(404, "not_found", "No such file in the example page."))
        return FileResponse(
            path,
            media_type=CONTENT_TYPES[path.suffix],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    def _allowed(self, name: str) -> Path | None:
        """The file for ``name`` if it is a page file or a module of an allowed package, else ``None``."""
        if name in PAGE_FILES:
            return self.web_dir / PAGE_FILES[name]
        for package in NODE_PACKAGES:
            prefix = f"node_modules/{package}/"
            if not name.startswith(prefix):
                continue
            inner = name[len(prefix) :].split("/")
            if not all(_SEGMENT.match(part) for part in inner) or not inner[-1].endswith(_MODULE_SUFFIXES):
                return None
            base = (self.web_dir / "node_modules" / package).resolve()
            path = base.joinpath(*inner).resolve()
            if path.is_relative_to(base) and path.is_file():
                return path
            return None
        return None

    def _config(self, request: Request) -> Response:
        host = request.headers.get("host", "")
        if not _loopback_request(host, request.client.host if request.client else None):
            return error_response(
                ApiError(
                    403,
                    "forbidden",
                    "Offline mode hands its page config (with the developer's token) only to this machine: "
                    "open the page at http://localhost or http://127.0.0.1.",
                )
            )
        origin = f"{request.url.scheme}://{host}"
        body = "export default " + json.dumps(self.config(origin), indent=2) + ";\n"
        return Response(
            body,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )


class PostgrestError(Exception):
    """A refusal in PostgREST's shape: ``{"code", "details", "hint", "message"}``."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        details: str | None = None,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"code": code, "details": details, "hint": hint, "message": message}
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Query:
    """A parsed read: which columns, which filters, in what order, how many."""

    table: str
    columns: tuple[str, ...]
    filters: tuple[tuple[str, str, str], ...]  # (column, SQL operator, value)
    order: tuple[str, ...]  # SQL ORDER BY terms
    limit: int | None
    offset: int


def _parse_error(message: str, details: str | None = None) -> PostgrestError:
    return PostgrestError(400, "PGRST100", message, details=details)


def _column(table: str, name: str) -> str:
    if name not in TABLES[table]:
        raise PostgrestError(400, "42703", f"column {table}.{name} does not exist")
    return name


def _non_negative(name: str, value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value):  # ASCII digits only: "²".isdigit() is true
        raise _parse_error(f'"failed to parse {name} parameter ({value})"', f"{name} must be a non-negative integer")
    return int(value)


def parse_query(table: str, params: Sequence[tuple[str, str]]) -> Query:
    """The supported subset of PostgREST's query string for ``table``; :class:`PostgrestError` otherwise."""
    columns: tuple[str, ...] = TABLES[table]
    filters: list[tuple[str, str, str]] = []
    order: list[str] = []
    limit: int | None = None
    offset = 0
    seen: set[str] = set()
    for key, value in params:
        if key in ("select", "order", "limit", "offset"):
            if key in seen:
                raise _parse_error(f"{key} given more than once")
            seen.add(key)
        if key == "select":
            items = [item.strip() for item in value.split(",")]
            if items == ["*"]:
                continue
            if not items or not all(_NAME.match(item) for item in items):
                raise _parse_error(
                    f'"failed to parse select parameter ({value})"',
                    "The local stand-in supports plain column lists and * only (no aliases, casts or embedding).",
                )
            columns = tuple(_column(table, item) for item in items)
        elif key == "order":
            for term in value.split(","):
                parts = term.strip().split(".")
                direction = parts[1] if len(parts) > 1 else "asc"
                nulls = parts[2] if len(parts) > 2 else ("nullsfirst" if direction == "desc" else "nullslast")
                if len(parts) > 3 or direction not in ("asc", "desc") or nulls not in ("nullsfirst", "nullslast"):
                    raise _parse_error(f'"failed to parse order ({value})"')
                name = _column(table, parts[0]) if _NAME.match(parts[0]) else None
                if name is None:
                    raise _parse_error(f'"failed to parse order ({value})"')
                order.append(f'"{name}" {direction} nulls {nulls[5:]}')  # Postgres's default null placement
        elif key == "limit":
            limit = _non_negative("limit", value)
        elif key == "offset":
            offset = _non_negative("offset", value)
        elif _NAME.match(key) and key not in ("or", "and", "not"):
            operator, dot, operand = value.partition(".")
            if operator not in _OPERATORS or not dot:
                raise _parse_error(
                    f'"failed to parse filter ({value})"',
                    "The local stand-in supports eq, neq, gt, gte, lt and lte filters only.",
                )
            filters.append((_column(table, key), _OPERATORS[operator], operand))
        else:
            raise _parse_error(f'"failed to parse {key} parameter"', "Not supported by the local stand-in.")
    return Query(table, columns, tuple(filters), tuple(order), limit, offset)


@dataclass(frozen=True)
class Caller:
    """Who is asking, as row level security sees it: ``user_id`` for ``authenticated``, else ``None``."""

    role: str
    user_id: str | None


def _unauthorized(code: str, message: str) -> PostgrestError:
    return PostgrestError(
        401, code, message, headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{message}"'}
    )


def authenticate(headers: Mapping[str, str], secret: str) -> Caller:
    """The caller of a request: its bearer token (or the ``apikey`` alone), verified with ``secret``."""
    import jwt

    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if not authorization:
        token = headers.get("apikey", "")
        if not token:
            raise PostgrestError(
                401, None, "No API key found in request", hint="No `apikey` request header or url param was found."
            )
    elif scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("PGRST301", "Expected a bearer token in the Authorization header")
    try:
        claims = jwt.decode(
            token.strip(), secret, algorithms=["HS256"], options={"require": ["exp"], "verify_aud": False}
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("PGRST303", "JWT expired") from None
    except jwt.PyJWTError:
        raise _unauthorized("PGRST301", "JWT could not be verified") from None
    role = claims.get("role")
    if role == "authenticated":
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or claims.get("aud") != "authenticated":
            raise _unauthorized("PGRST301", "JWT has no subject or a wrong audience")
        return Caller(role, subject)
    if role in ("anon", "service_role"):
        return Caller(role, None)
    raise _unauthorized("PGRST301", "JWT role is not one of anon, authenticated, service_role")


def _row(columns: Sequence[str], values: Sequence[Any]) -> dict[str, Any]:
    row = dict(zip(columns, values, strict=True))
    for name in _TIMESTAMPS.intersection(row):
        if isinstance(row[name], str) and row[name].endswith("Z"):
            row[name] = row[name][:-1] + "+00:00"  # as Postgres prints a timestamptz
    for name in _BOOLEANS.intersection(row):
        if row[name] is not None:
            row[name] = bool(row[name])
    return row


def _where(query: Query, caller: Caller) -> tuple[str, list[Any]]:
    """The query's filters and RLS's ``using (user_id = (select auth.uid()))`` as one SQL clause."""
    where = [f'"{column}" {operator} ?' for column, operator, _ in query.filters]
    args: list[Any] = [value for _, _, value in query.filters]
    if caller.role == "authenticated":
        where.append('"user_id" = ?')
        args.append(caller.user_id)
    return (f" where {' and '.join(where)}" if where else ""), args


def read_rows(database: Path, query: Query, caller: Caller, *, count: bool = False) -> tuple[list[dict[str, Any]], int]:
    """The rows ``caller`` may see, as RLS filters them; and (with ``count``) how many match in all."""
    if caller.role == "anon":  # the policies are `to authenticated`: anon sees no row
        return [], 0
    clause, args = _where(query, caller)
    limit = MAX_ROWS if query.limit is None else min(query.limit, MAX_ROWS)
    select = ", ".join(f'"{column}"' for column in query.columns)
    ordering = f" order by {', '.join(query.order)}" if query.order else ""
    if not database.is_file():  # no request has been served yet
        return [], 0
    with contextlib.closing(sqlite3.connect(database.resolve().as_uri() + "?mode=ro", uri=True, timeout=3.0)) as db:
        try:
            rows = db.execute(
                f"select {select} from {query.table}{clause}{ordering} limit ? offset ?",  # noqa: S608 (names allow-listed)
                [*args, limit, query.offset],
            ).fetchall()
            total = db.execute(f"select count(*) from {query.table}{clause}", args).fetchone()[0] if count else 0  # noqa: S608
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the ledger has not created its tables yet
                return [], 0
            raise
    return [_row(query.columns, values) for values in rows], total


def write_rows(
    database: Path, method: str, query: Query, caller: Caller, changes: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``PATCH`` (``changes``) or ``DELETE`` the rows of ``query`` that RLS lets ``caller`` see, in one
    transaction; the rows as they are afterwards (``PATCH``) or were (``DELETE``), ``query.columns`` of them.

    Deleting a thread deletes its messages too (``on delete cascade`` in the migration).
    """
    if caller.role == "anon" or not database.is_file():
        return []
    clause, args = _where(query, caller)
    select = ", ".join(f'"{column}"' for column in query.columns)
    with contextlib.closing(sqlite3.connect(database, timeout=3.0, isolation_level=None)) as db:
        try:
            db.execute("begin immediate")
            try:
                ids = [row[0] for row in db.execute(f'select "id" from {query.table}{clause}', args)]  # noqa: S608
                marks = ", ".join("?" for _ in ids)
                if method == "PATCH" and ids:
                    assignments = ", ".join(f'"{column}" = ?' for column in changes)
                    db.execute(
                        f'update {query.table} set {assignments} where "id" in ({marks})',  # noqa: S608
                        [*changes.values(), *ids],
                    )
                rows = db.execute(f'select {select} from {query.table} where "id" in ({marks})', ids).fetchall()  # noqa: S608
                if method == "DELETE" and ids:
                    if query.table == "threads":
                        db.execute(f'delete from messages where "thread_id" in ({marks})', ids)  # noqa: S608
                    db.execute(f'delete from {query.table} where "id" in ({marks})', ids)  # noqa: S608
                db.execute("commit")
            except BaseException:
                db.execute("rollback")
                raise
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # the store has not created its tables yet
                return []
            raise
    return [_row(query.columns, values) for values in rows]


class RestApp:
    """``/v1/<table>`` under the ``/rest`` mount: the PostgREST subset described above."""

    def __init__(self, database: Path, secret: str, allowed_origins: Sequence[str]) -> None:
        self.database = database
        self.secret = secret
        self.allowed_origins = tuple(allowed_origins)

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        origin = request.headers.get("origin")
        cors = cors_headers(origin, self.allowed_origins)
        if request.method == "OPTIONS":
            headers = dict(cors)
            if "Access-Control-Allow-Origin" in cors:
                headers |= {
                    "Access-Control-Allow-Methods": "GET, HEAD, PATCH, DELETE, OPTIONS",
                    "Access-Control-Allow-Headers": _REST_ALLOWED_HEADERS,
                    "Access-Control-Max-Age": "86400",
                }
            response = Response(status_code=204, headers=headers)
        else:
            try:
                response = await self._answer(request)
            except PostgrestError as error:
                response = _postgrest_response(error.body, error.status, error.headers)
            except sqlite3.Error:
                response = _postgrest_response(
                    {"code": "PGRST000", "details": None, "hint": None, "message": "The local ledger is unavailable"},
                    503,
                )
            response.headers.update(cors)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        rest = _rest_of(request.scope)
        table = rest[len("/v1/") :] if rest.startswith("/v1/") else ""
        if table not in TABLES:
            shown = table or rest
            raise PostgrestError(
                404,
                "PGRST205",
                f"Could not find the table 'public.{shown}' in the schema cache",
                hint="The local stand-in serves " + ", ".join(TABLES) + " only.",
            )
        caller = authenticate(request.headers, self.secret)
        if request.method in ("PATCH", "DELETE") and (table in UPDATABLE or table in DELETABLE):
            return await self._write(request, table, caller)
        if request.method not in ("GET", "HEAD"):
            # Other writes are revoked from anon and authenticated: they go through the server's functions only.
            raise _permission_denied(table, caller)
        accept = request.headers.get("accept", "*/*")
        single = accept.startswith("application/vnd.pgrst.object+json")
        if not single and not any(
            accept.startswith(kind) for kind in ("*/*", "application/json", "application/vnd.pgrst.array+json")
        ):
            raise PostgrestError(406, "PGRST107", f"None of these media types are available: {accept}")
        profile = request.headers.get("accept-profile", "public")
        if profile != "public":
            raise PostgrestError(406, "PGRST106", "The schema must be one of the following: public")
        query = parse_query(table, request.query_params.multi_items())
        counted = "count=exact" in request.headers.get("prefer", "")
        rows, total = await run_in_threadpool(read_rows, self.database, query, caller, count=counted)
        if "nulls=stripped" in accept:
            rows = [{key: value for key, value in row.items() if value is not None} for row in rows]
        body: Any = rows
        if single:
            if len(rows) != 1:
                raise PostgrestError(
                    406,
                    "PGRST116",
                    "JSON object requested, multiple (or no) rows returned",
                    details=f"The result contains {len(rows)} rows",
                )
            body = rows[0]
        first = query.offset
        shown = f"{first}-{first + len(rows) - 1}" if rows else "*"
        headers = {"Content-Range": f"{shown}/{total if counted else '*'}"}
        response = _postgrest_response(body, 200, headers)
        if request.method == "HEAD":
            return Response(status_code=200, headers=dict(response.headers))
        return response

    async def _write(self, request: Request, table: str, caller: Caller) -> Response:
        """``PATCH`` (a thread's title) or ``DELETE``, on the caller's own rows only, always filtered."""
        if caller.role == "anon":
            raise _permission_denied(table, caller)
        method = request.method
        changes: dict[str, Any] = {}
        if method == "PATCH":
            if table not in UPDATABLE:
                raise _permission_denied(table, caller)
            changes = await _json_object(request)
            for column in changes:
                _column(table, column)  # an unknown column is 42703, as in PostgREST
            if not changes or not set(changes) <= UPDATABLE[table]:
                raise _permission_denied(table, caller)  # the column grants: `update (title)` only
            _check_title(changes["title"])
        elif table not in DELETABLE:
            raise _permission_denied(table, caller)
        params = request.query_params.multi_items()
        if any(key in ("order", "limit", "offset") for key, _ in params):
            raise _parse_error(f"{method} with order, limit or offset is not supported by the local stand-in")
        query = parse_query(table, params)
        if not query.filters:
            # Supabase's PostgREST runs with pg-safeupdate: a write must say which rows.
            verb = "UPDATE" if method == "PATCH" else "DELETE"
            raise PostgrestError(400, "21000", f"{verb} requires a WHERE clause")
        rows = await run_in_threadpool(write_rows, self.database, method, query, caller, changes)
        if "return=representation" in request.headers.get("prefer", ""):
            return _postgrest_response(rows, 200, {"Content-Range": f"*/{len(rows)}"})
        return Response(status_code=204, headers={"Content-Range": f"*/{len(rows)}"})


def _check_title(title: Any) -> None:
    """``threads.title``'s constraints in the migration: ``text not null check (char_length(title) <= 200)``."""
    if title is None:
        raise PostgrestError(
            400, "23502", 'null value in column "title" of relation "threads" violates not-null constraint'
        )
    if not isinstance(title, str):
        raise PostgrestError(400, "22P02", f"invalid input syntax for type text: {json.dumps(title)}")
    if len(title) > TITLE_CHARS:
        raise PostgrestError(
            400, "23514", 'new row for relation "threads" violates check constraint "threads_title_check"'
        )


def _permission_denied(table: str, caller: Caller) -> PostgrestError:
    return PostgrestError(401 if caller.role == "anon" else 403, "42501", f"permission denied for table {table}")


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise PostgrestError(400, "PGRST102", "Empty or invalid json")
    return body


def _postgrest_response(body: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")
    return Response(payload, status_code=status, headers=dict(headers or {}), media_type="application/json")

"""A minimal PostgREST in front of the test PostgreSQL, for ``httpx.MockTransport``.

PostgREST is not available on our machines, so the Supabase REST ledger's requests are answered here by
the real SQL, with PostgREST's response shapes. It serves what that ledger asks for, nothing more:

* ``POST /rest/v1/rpc/<function>`` with a JSON object of named arguments: the function of ``public``
  whose parameter names are exactly those keys, called with each value converted to the parameter's
  declared type (``json_to_record``, as PostgREST does); the result as bare JSON.
* ``GET /rest/v1/<table>?select=a,b&limit=n``: the rows as a JSON array.

Each request is one transaction as the role named in the key (``set_config('role', ...)`` and
``request.jwt.claims``, as PostgREST sets them), so grants and RLS apply as on Supabase. A key that
does not verify is refused like PostgREST refuses it; SQL errors come back as ``{code, message,
details, hint}`` with PostgREST's HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from helpers import JWT_SECRET

__all__ = ["PostgrestStandIn"]

JSON = "application/json; charset=utf-8"

# PostgREST's HTTP status for a PostgreSQL error (https://docs.postgrest.org/en/v12/references/errors.html),
# the part the ledger can meet; longest prefix wins, anything else is 400.
_STATUS = {
    "08": 503,
    "23503": 409,
    "23505": 409,
    "25": 500,
    "28": 403,
    "40": 500,
    "42501": 403,  # 401 for anon; every caller here has a key
    "42883": 404,
    "42P01": 404,
    "53": 503,
    "55": 500,
    "57": 500,
    "58": 500,
}


def _status(sqlstate: str) -> int:
    for length in (5, 2):
        if sqlstate[:length] in _STATUS:
            return _STATUS[sqlstate[:length]]
    return 400


def _error(status: int, code: str, message: str, details: str | None = None, hint: str | None = None) -> httpx.Response:
    body = {"code": code, "details": details, "hint": hint, "message": message}
    return httpx.Response(status, content=json.dumps(body), headers={"Content-Type": JSON})


class PostgrestStandIn:
    """``handler`` answers requests for ``https://<anything>/rest/v1/...`` from the database at ``dsn``."""

    def __init__(self, dsn: str, *, connections: int = 10) -> None:
        # Several connections, like PostgREST's pool: concurrent requests really run concurrently.
        self._pool = AsyncConnectionPool(dsn, min_size=1, max_size=connections, kwargs={"autocommit": True}, open=False)

    async def open(self) -> None:
        await self._pool.open()

    async def aclose(self) -> None:
        await self._pool.close()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if not path.startswith("/rest/v1/"):
            return _error(404, "PGRST125", f"Invalid path specified in request URL: {path}")
        claims = self._claims(request)
        if claims is None:
            return _error(401, "PGRST301", "JWSError JWSInvalidSignature")
        resource = path.removeprefix("/rest/v1/")
        try:
            if resource.startswith("rpc/") and request.method == "POST":
                return await self._rpc(resource.removeprefix("rpc/"), json.loads(request.content), claims)
            if "/" not in resource and request.method == "GET":
                return await self._select(resource, request.url.params, claims)
        except psycopg.Error as exc:
            diag = exc.diag
            sqlstate = diag.sqlstate or "XX000"
            return _error(
                _status(sqlstate), sqlstate, diag.message_primary or str(exc), diag.message_detail, diag.message_hint
            )
        return _error(405, "PGRST117", f"Unsupported HTTP method: {request.method}")

    @staticmethod
    def _claims(request: httpx.Request) -> dict[str, Any] | None:
        """The key's claims, when it is signed with the project's JWT secret (PostgREST's own check)."""
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        try:
            claims: dict[str, Any] = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], options={"verify_aud": False})
        except jwt.InvalidTokenError:
            return None
        return claims

    async def _as_role(self, claims: dict[str, Any], query: sql.Composed, params: Any = None) -> Any:
        """One statement in its own transaction as the key's role; its single value."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (claims.get("role", "anon"), json.dumps(claims)),
            )
            row = await (await conn.execute(query, params)).fetchone()
        return None if row is None else row[0]

    async def _rpc(self, function: str, args: dict[str, Any], claims: dict[str, Any]) -> httpx.Response:
        parameters = await self._parameters(function, set(args))
        if parameters is None:
            listed = ", ".join(sorted(args))
            return _error(
                404,
                "PGRST202",
                f"Could not find the function public.{function}({listed}) in the schema cache",
                f"Searched for the function public.{function} with parameters {listed} or with a single unnamed "
                "json/jsonb parameter, but no matches were found in the schema cache.",
            )
        names = [sql.Identifier(name) for name, _ in parameters]
        query = sql.SQL(
            "select to_json({function}({arguments}))::text from json_to_record(%s::json) as a({columns})"
        ).format(
            function=sql.Identifier("public", function),
            arguments=sql.SQL(", ").join(sql.SQL("{0} := a.{0}").format(name) for name in names),
            columns=sql.SQL(", ").join(
                sql.SQL("{} {}").format(name, sql.SQL(type_))
                for name, (_, type_) in zip(names, parameters, strict=True)
            ),
        )
        body = await self._as_role(claims, query, (json.dumps(args),))
        return httpx.Response(200, content=body, headers={"Content-Type": JSON, "Content-Range": "0-0/*"})

    async def _parameters(self, function: str, names: set[str]) -> list[tuple[str, str]] | None:
        """The parameters (name, type) of the ``public`` function called ``function`` that takes exactly ``names``."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                select coalesce(p.proargnames, '{}'),
                       array(select format_type(t.type, null)
                               from unnest(p.proargtypes::oid[]) with ordinality as t(type, position)
                              order by t.position)
                  from pg_catalog.pg_proc p
                 where p.pronamespace = 'public'::regnamespace and p.proname = %s
                """,
                (function,),
            )
            for arg_names, arg_types in await cursor.fetchall():
                if set(arg_names) == names:
                    return list(zip(arg_names, arg_types, strict=True))
        return None

    async def _select(self, table: str, params: httpx.QueryParams, claims: dict[str, Any]) -> httpx.Response:
        columns = [sql.Identifier(column) for column in params.get("select", "*").split(",") if column != "*"]
        query = sql.SQL(
            "select coalesce(json_agg(r), '[]')::text from (select {columns} from {table} {limit}) r"
        ).format(
            columns=sql.SQL(", ").join(columns) if columns else sql.SQL("*"),
            table=sql.Identifier("public", table),
            limit=sql.SQL("limit {}").format(int(params["limit"])) if "limit" in params else sql.SQL(""),
        )
        body = await self._as_role(claims, query)
        count = len(json.loads(body))
        content_range = f"0-{count - 1}/*" if count else "*/*"
        return httpx.Response(200, content=body, headers={"Content-Type": JSON, "Content-Range": content_range})

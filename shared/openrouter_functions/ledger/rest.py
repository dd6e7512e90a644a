"""The ledger through Supabase's REST API: supabase-py (async) calling the SQL functions by RPC.

Uses the service-role key, which PostgREST maps to the ``service_role`` database role — the only
role allowed to execute ``ledger_begin``/``ledger_finish``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from . import Admission, LedgerRejected, LedgerUnavailable, Limits, UsageRecord

if TYPE_CHECKING:
    from supabase import AsyncClient

__all__ = ["SupabaseRestLedger", "service_client"]

# SQLSTATE classes of errors over the values sent, not the store: 22 data exception (a NUL in text,
# a number out of range, JSON Postgres cannot hold), 23 integrity constraint violation.
_DATA_CLASSES = ("22", "23")


def _unsendable(params: dict[str, Any]) -> bool:
    """Whether ``params`` cannot become a request body (httpx's encoding: UTF-8, no NaN/Infinity)."""
    try:
        json.dumps(params, ensure_ascii=False, allow_nan=False).encode()
    except (ValueError, TypeError):  # UnicodeEncodeError (a lone surrogate) is a ValueError
        return True
    return False


async def service_client(url: str, key: str, *, call_seconds: float, http: httpx.AsyncClient | None) -> AsyncClient:
    """A supabase-py client for the service role's RPC calls (the ledger's and the thread store's): no
    session, no token refresh, ``call_seconds`` the HTTP timeout of PostgREST calls, over ``http`` when given."""
    from supabase import AsyncClientOptions, acreate_client

    options = AsyncClientOptions(
        postgrest_client_timeout=call_seconds, auto_refresh_token=False, persist_session=False, httpx_client=http
    )
    return await acreate_client(url, key, options=options)


class SupabaseRestLedger:
    """Ledger over PostgREST RPC; the client is created on first use."""

    name = "supabase_rest"

    def __init__(
        self, url: str, service_role_key: str, *, timeout: float = 10.0, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self._url = url
        self._key = service_role_key
        # The HTTP client's own timeout (supabase-py's default is 120 s), so a dead connection is not held
        # for minutes after the meter, which bounds each call, has given up on it.
        self._timeout = timeout
        self._http = http_client
        self._client: AsyncClient | None = None

    async def _supabase(self) -> AsyncClient:
        if self._client is None:
            self._client = await service_client(self._url, self._key, call_seconds=self._timeout, http=self._http)
        return self._client

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        from postgrest.exceptions import APIError

        try:
            client = await self._supabase()
            response = await client.rpc(function, params).execute()
        except APIError as exc:
            failure = LedgerRejected if (exc.code or "")[:2] in _DATA_CLASSES else LedgerUnavailable
            raise failure(f"supabase rpc {function}: {exc.code} {exc.message}") from exc
        except Exception as exc:  # transport errors, and a client that cannot be built (bad SUPABASE_URL)
            # Checked only once something failed, so a call that works pays nothing for it.
            failure = LedgerRejected if _unsendable(params) else LedgerUnavailable
            raise failure(f"supabase rpc {function}: {exc.__class__.__name__}: {exc}") from exc
        return response.data

    async def begin(self, request_id: str, user_id: str, reserve_usd: float, limits: Limits) -> Admission:
        answer = await self._rpc(
            "ledger_begin",
            {
                "p_request_id": request_id,
                "p_user_id": user_id,
                "p_reserve_usd": reserve_usd,
                "p_default_rpm": limits.rpm,
                "p_default_daily_requests": limits.daily_requests,
                "p_default_daily_cost_usd": limits.daily_cost_usd,
            },
        )
        return Admission.from_json(answer)

    async def finish(self, record: UsageRecord) -> bool:
        answer = await self._rpc(
            "ledger_finish", {"p_request_id": record.request_id, "p_user_id": record.user_id, "p_row": record.row()}
        )
        if not isinstance(answer, dict):
            raise LedgerUnavailable(f"unexpected answer from ledger_finish: {answer!r}")
        return bool(answer.get("recorded"))

    async def release_stale(self, user_id: str, older_than_seconds: int) -> int:
        answer = await self._rpc(
            "ledger_release_stale", {"p_user_id": user_id, "p_older_than_seconds": older_than_seconds}
        )
        if not isinstance(answer, int) or isinstance(answer, bool):
            raise LedgerUnavailable(f"unexpected answer from ledger_release_stale: {answer!r}")
        return answer

    async def check(self) -> bool:
        try:
            client = await self._supabase()
            # The cheapest read the service role may make. supabase-py retries a failed GET with backoff
            # (seconds); health wants the store's answer now, so this one is sent once.
            await client.table("usage_daily").select("user_id").limit(1).retry(False).execute()
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        self._client = None

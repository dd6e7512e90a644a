"""Threads through Supabase's REST API: supabase-py (async) calling the thread functions by RPC.

Uses the service-role key, which PostgREST maps to the ``service_role`` database role — the only role
allowed to execute the ``thread_*`` functions (``supabase/migrations/20261202070000_threads.sql``).
PostgREST never retries an RPC, and neither does this store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from . import MessageEnd, StopAnswer, ThreadStoreUnavailable, Turn, TurnRequest, title_for

if TYPE_CHECKING:
    from supabase import AsyncClient

__all__ = ["SupabaseRestThreadStore"]

_ERASED_USER = "23514"  # thread_turn_begin's refusal for a user deleted in the last day


class SupabaseRestThreadStore:
    """Thread store over PostgREST RPC; the client is created on first use."""

    name = "supabase_rest"

    def __init__(
        self, url: str, service_role_key: str, *, timeout: float = 10.0, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self._url = url
        self._key = service_role_key
        self._timeout = timeout  # the HTTP client's own (supabase-py's default is 120 s)
        self._http = http_client
        self._client: AsyncClient | None = None

    async def _supabase(self) -> AsyncClient:
        if self._client is None:
            from ..ledger.rest import service_client

            self._client = await service_client(self._url, self._key, call_seconds=self._timeout, http=self._http)
        return self._client

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        from postgrest.exceptions import APIError

        try:
            client = await self._supabase()
            response = await client.rpc(function, params).execute()
        except APIError as exc:
            if exc.code == _ERASED_USER:
                raise ThreadStoreUnavailable(
                    f"supabase rpc {function}: the user was deleted; nothing more is stored for them"
                ) from exc
            raise ThreadStoreUnavailable(f"supabase rpc {function}: {exc.code} {exc.message}") from exc
        except Exception as exc:  # transport errors, unsendable values, a client that cannot be built
            raise ThreadStoreUnavailable(f"supabase rpc {function}: {exc.__class__.__name__}: {exc}") from exc
        return response.data

    async def begin_turn(self, turn: TurnRequest) -> Turn:
        new = turn.thread_id is None
        answer = await self._rpc(
            "thread_turn_begin",
            {
                "p_user_id": turn.user_id,
                "p_thread_id": turn.thread_id,
                "p_system": turn.system if new else None,
                "p_title": (turn.title or title_for(turn.user_text)) if new else None,
                "p_user_text": turn.user_text,
                "p_model": turn.model,
                "p_request_id": turn.request_id,
                "p_max_messages": turn.max_messages,
                "p_max_tokens": turn.max_tokens,
                "p_stale_seconds": turn.stale_seconds,
            },
        )
        return Turn.from_json(answer)

    async def progress(self, message_id: str, content: str | None) -> bool:
        answer = await self._rpc("thread_message_progress", {"p_message_id": message_id, "p_content": content})
        if not isinstance(answer, dict):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_message_progress: {answer!r}")
        return bool(answer.get("streaming")) and not answer.get("stop_requested")

    async def finish(self, message_id: str, end: MessageEnd) -> bool:
        answer = await self._rpc("thread_message_finish", {"p_message_id": message_id, "p_row": end.row()})
        if not isinstance(answer, bool):
            raise ThreadStoreUnavailable(f"unexpected answer from thread_message_finish: {answer!r}")
        return answer

    async def stop(self, user_id: str, thread_id: str | None, message_id: str | None, stale_seconds: int) -> StopAnswer:
        answer = await self._rpc(
            "thread_stop",
            {
                "p_user_id": user_id,
                "p_thread_id": thread_id,
                "p_message_id": message_id,
                "p_stale_seconds": stale_seconds,
            },
        )
        return StopAnswer.from_json(answer)

    async def aclose(self) -> None:
        self._client = None

"""The ledger: per-user admission (rate window, daily quotas, cost reservation) and usage records.

This module is the contract (docs/ledger.md): the types and the :class:`Ledger` protocol. Three backends
implement it — Supabase REST (RPC), direct Postgres and SQLite (the embedded default for local runs) —
each imported on first use. A backend only talks to its store; time bounds, the breaker, retries and
the failure mode belong to :mod:`.meter`, so they are the same whichever store is configured.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, fields
from typing import Any, Protocol

__all__ = [
    "NIL_USER",
    "UNSTORABLE",
    "Admission",
    "Ledger",
    "LedgerRejected",
    "LedgerUnavailable",
    "Limits",
    "UsageRecord",
    "ledger_user_id",
    "storable",
]

NIL_USER = "00000000-0000-0000-0000-000000000000"

# Text no store can hold: a lone UTF-16 surrogate (there is no UTF-8 for it; a proper pair is one
# character by the time it is a str) and NUL, which PostgreSQL text and jsonb refuse.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str | None, limit: int | None = None) -> str | None:
    """``text`` as every store can hold it: cut to ``limit`` characters, anything unstorable replaced by
    U+FFFD (for text we did not check at the edge: what upstream says)."""
    if text is None:
        return None
    text = text[:limit] if limit is not None else text
    return UNSTORABLE.sub("\ufffd", text) if not text.isascii() or "\x00" in text else text


_SUBJECTS = uuid.UUID("5b1f8a8e-7c1e-4a57-9d0f-6f7a0f1c2b3d")


@functools.lru_cache(maxsize=4096)  # twice per request (admission, record) for a user seen before
def ledger_user_id(user_id: str) -> str:
    """The uuid a caller's usage is kept under: Supabase user ids are uuids already; any other subject
    gets a stable uuid of its own (so two such users never share limits); the service role's bare key
    (no subject) uses the nil uuid."""
    if user_id == "service_role":
        return NIL_USER
    try:
        return str(uuid.UUID(user_id))
    except ValueError:
        return str(uuid.uuid5(_SUBJECTS, user_id))


class LedgerUnavailable(Exception):
    """The ledger's store could not be reached or answered with an error."""


class LedgerRejected(LedgerUnavailable):
    """The store is up but refused this one request's data (a value its columns cannot hold).

    Not an outage: it says nothing about other requests, so the meter neither opens its breaker nor
    retries; the record goes to the ``usage_unrecorded`` line instead.
    """


@dataclass(frozen=True, slots=True)
class Limits:
    """Default per-user limits (``None`` = unlimited); the store's ``user_limits`` row overrides them."""

    rpm: int | None = None
    daily_requests: int | None = None
    daily_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The ledger's answer to ``begin``."""

    admitted: bool
    reason: str | None = None
    limit: str | None = None
    retry_after: int | None = None
    reserved_usd: float = 0.0

    @classmethod
    def from_json(cls, data: Any) -> Admission:
        if not isinstance(data, dict) or not isinstance(data.get("admitted"), bool):
            raise LedgerUnavailable(f"unexpected answer from ledger_begin: {data!r}")
        retry_after = data.get("retry_after")
        return cls(
            admitted=data["admitted"],
            reason=data.get("reason"),
            limit=data.get("limit"),
            retry_after=int(retry_after) if isinstance(retry_after, int | float) else None,
            reserved_usd=float(data.get("reserved_usd") or 0.0),
        )


@dataclass(slots=True)
class UsageRecord:
    """One request's log row and the usage to settle, as ``ledger_finish`` takes it."""

    request_id: str
    user_id: str
    function: str
    model: str | None = None
    status: int = 200
    error_type: str | None = None
    outcome: str = "ok"
    latency_ms: float | None = None
    attempts: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    generation_id: str | None = None
    prompt_preview: str | None = None
    response_preview: str | None = None
    # The request ran (it was admitted, or served while the ledger was down in open mode): its usage is
    # counted even if its reservation is gone.
    admitted: bool = False

    def row(self) -> dict[str, Any]:
        """The ``p_row`` JSON object (everything but the keys passed separately)."""
        # Field by field, not dataclasses.asdict: that deep-copies every value, on every request.
        return {name: getattr(self, name) for name in _ROW_FIELDS}


_ROW_FIELDS = tuple(f.name for f in fields(UsageRecord) if f.name not in ("request_id", "user_id"))


class Ledger(Protocol):
    """What every backend provides: ``ledger_begin`` and ``ledger_finish`` of docs/ledger.md on its store.

    Store failures raise :class:`LedgerUnavailable`; a value the store cannot hold (an error caused by the
    request's own data) raises :class:`LedgerRejected`; a refusal is an answer, not a failure.
    """

    name: str

    async def begin(self, request_id: str, user_id: str, reserve_usd: float, limits: Limits) -> Admission:
        """Admit the request and reserve ``reserve_usd`` (>= 0), or refuse it.

        ``limits`` are the defaults; the store's ``user_limits`` row overrides them per user. A repeated
        begin for the same request id returns the first admission and reserves nothing more.
        """
        ...

    async def finish(self, record: UsageRecord) -> bool:
        """Write the record; False when it was already written (a duplicate finish)."""
        ...

    async def release_stale(self, user_id: str, older_than_seconds: int) -> int:
        """Release the user's reservations taken more than ``older_than_seconds`` ago (their instance died
        before finishing them); returns how many. ``begin`` itself releases them after 15 minutes."""
        ...

    async def check(self) -> bool:
        """Whether the store answers (for health); never raises."""
        ...

    async def aclose(self) -> None: ...

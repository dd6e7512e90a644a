"""A value one request carries that a store cannot hold is that request's problem, on every backend.

Each backend raises :class:`LedgerRejected` (not a plain outage, which would open the meter's breaker
for every user), writes nothing of the refused record, and goes on answering everyone else.
The edge refuses such text and the exchange drops absurd usage before a record is built; these
records reach the store directly, as a bug or a new field could make them.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_ledger_contract import Store, User, finished, settled, steady_clock, store  # noqa: F401 - fixtures

from openrouter_functions.ledger import LedgerRejected, Limits


@pytest.mark.parametrize(
    ("fields", "sqlite_holds_it"),
    [
        ({"model": "openai/gpt-4o\ud800"}, False),  # a lone surrogate: no UTF-8, no jsonb
        ({"completion_tokens": 10**20}, False),  # beyond an integer column
        ({"model": "openai/\x00gpt-4o"}, True),  # NUL: PostgreSQL text refuses it, SQLite keeps it
        ({"error_type": "bad\x00"}, True),
        ({"cost_usd": float("nan")}, True),  # not JSON for Postgres; SQLite stores NaN as NULL
    ],
    ids=["surrogate", "huge-tokens", "nul-model", "nul-error-type", "nan-cost"],
)
async def test_a_value_the_store_cannot_hold_is_rejected_and_the_store_goes_on(
    store: Store,  # noqa: F811 - the fixture imported above
    fields: dict[str, Any],
    sqlite_holds_it: bool,
) -> None:
    user = User()
    await store.ledger.begin(user.request("bad"), user.id, 0.01, Limits())
    await store.ledger.begin(user.request("good"), user.id, 0.01, Limits())
    if store.ledger.name == "sqlite" and sqlite_holds_it:
        assert await store.ledger.finish(finished(user.request("bad"), user.id, **fields)) is True
        return

    with pytest.raises(LedgerRejected):
        await store.ledger.finish(finished(user.request("bad"), user.id, **fields))

    assert await store.ledger.finish(finished(user.request("good"), user.id, cost_usd=0.002)) is True
    assert [row["request_id"] for row in await store.log(user.id)] == [user.request("good")]
    # Nothing of the refused record is written: its reservation waits for the stale sweep.
    assert await store.usage(user.id) == [settled("0.002", in_flight=1, reserved_usd="0.01")]

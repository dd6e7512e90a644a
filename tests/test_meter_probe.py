"""The meter's breaker, half open: while it is open one call at a time, every 0.5 s, finds out whether the
store is back; the others are refused without asking. So the end of an outage is noticed at once, and a
hanging store holds one caller, not all of them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from openrouter_functions.ledger import Admission, LedgerUnavailable, UsageRecord
from openrouter_functions.ledger.meter import PROBE_SECONDS, Meter, Ticket

USER = "6f1c9c1e-2f6a-4c55-9a53-0d3d2b0f7a11"


class Store:
    """A store that is down, hanging or up, as the test says; counts the calls that reached it."""

    name = "store"

    def __init__(self) -> None:
        self.state = "down"
        self.begins = 0

    async def begin(self, *args: Any) -> Admission:
        self.begins += 1
        if self.state == "hanging":
            await asyncio.sleep(30)
        if self.state == "down":
            raise LedgerUnavailable("connection refused")
        return Admission(True, reserved_usd=0.01)

    async def finish(self, record: UsageRecord) -> bool:
        return True

    async def check(self) -> bool:
        return self.state == "up"

    async def aclose(self) -> None:
        return None


async def _admit(meter: Meter) -> Ticket:
    return await meter.admit("ledger-1", USER, "chat", request_id="req-1")


async def _wait_for_probe() -> None:
    await asyncio.sleep(PROBE_SECONDS + 0.05)


async def test_the_first_call_after_the_store_is_back_is_admitted() -> None:
    store = Store()
    meter = Meter(store)  # type: ignore[arg-type]
    with pytest.raises(LedgerUnavailable):
        await _admit(meter)
    with pytest.raises(LedgerUnavailable, match="not retried yet"):
        await _admit(meter)  # within the probe interval: not asked
    assert (store.begins, meter.suspended()) == (1, True)

    await _wait_for_probe()
    with pytest.raises(LedgerUnavailable, match="connection refused"):
        await _admit(meter)  # the probe: still down, the breaker stays open
    assert (store.begins, meter.suspended()) == (2, True)

    store.state = "up"
    await _wait_for_probe()
    assert await _admit(meter) == Ticket(admitted=True, reserved_usd=0.01)  # long before the 5 s breaker
    assert (store.begins, meter.suspended()) == (3, False)
    assert await _admit(meter) == Ticket(admitted=True, reserved_usd=0.01)
    assert store.begins == 4


async def test_while_a_probe_hangs_the_others_are_refused_at_once() -> None:
    store = Store()
    meter = Meter(store)  # type: ignore[arg-type]
    meter.timeout = 0.5
    with pytest.raises(LedgerUnavailable):
        await _admit(meter)
    store.state = "hanging"
    await _wait_for_probe()

    probe = asyncio.create_task(_admit(meter))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(LedgerUnavailable, match="not retried yet"):
            await _admit(meter)
    assert time.monotonic() - started < 0.1
    with pytest.raises(LedgerUnavailable, match="timed out"):
        await probe
    assert store.begins == 2  # the first failure and the one probe

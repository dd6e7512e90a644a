"""A request leaves nothing behind that only the cyclic garbage collector could free, error or not.

Once the functions are loaded the collector runs seldom (hosting.settle_heap: start-up frozen, young
collections every 10,000 allocations). A handled exception used to keep its traceback's frames alive in a
cycle (the frame held the exception, the exception its traceback, the traceback the frame), and with them
the failed request's body and upstream request: a stream of bad requests with large bodies held hundreds
of them at once (envelope.let_go now drops those tracebacks once the error is answered).

The requests go to the router as raw ASGI calls (no HTTP client in between whose own objects would count).
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from helpers import asgi_call, bearer, mint

HI = {"messages": [{"role": "user", "content": "hi"}]}
BIG = "x" * 200_000  # what a kept body would show as


@contextmanager
def cycles_saved() -> Iterator[list[Any]]:
    """Inside: what the cyclic collector finds is kept in the list (``gc.DEBUG_SAVEALL``) instead of
    freed. Whatever was cyclic garbage before is freed first, for real (under DEBUG_SAVEALL a cycle taken
    out of ``gc.garbage`` would only be found again)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()


def kinds(objects: list[Any]) -> Counter[str]:
    return Counter(type(o).__name__ for o in objects)


CASES: dict[str, tuple[str, Any, list[dict[str, Any]]]] = {
    "malformed JSON": ("/chat", b'{"messages": [' + BIG.encode(), []),
    "invalid body": ("/chat", {"messages": [], "note": BIG}, []),
    "no token": ("/chat", {**HI, "note": BIG}, []),
    "unknown path": ("/chat/nowhere", HI, []),
    "upstream 500": ("/chat", {"messages": [{"role": "user", "content": BIG}]}, [{"fault": "status", "status": 500}]),
    "upstream refuses (400)": ("/chat", HI, [{"fault": "status", "status": 400}]),
    "error inside a 200": ("/completion", {"prompt": BIG}, [{"fault": "error_200"}]),
    "not JSON upstream": ("/chat", HI, [{"fault": "malformed"}]),
    "stream fails midway": (
        "/chat",
        {"messages": [{"role": "user", "content": BIG}], "stream": True},
        [{"fault": "midstream_error", "after": 2}],
    ),
    "threaded turn fails upstream": ("/chat", {**HI, "thread_id": "new"}, [{"fault": "status", "status": 500}]),
    "threaded stream fails midway": (
        "/chat",
        {**HI, "thread_id": "new", "stream": True},
        [{"fault": "midstream_error", "after": 2}],
    ),
    "threaded answer": ("/chat", {**HI, "thread_id": "new"}, []),
    "plain answer": ("/chat", HI, []),
    "streamed answer": ("/chat", {**HI, "stream": True}, []),
}


EXPECTED = {
    "malformed JSON": 400,
    "invalid body": 400,
    "no token": 401,
    "unknown path": 404,
    "upstream 500": 502,
    "upstream refuses (400)": 400,
    "error inside a 200": 502,
    "not JSON upstream": 502,
    "stream fails midway": 200,  # the error goes out as an event after the 200
    "threaded turn fails upstream": 502,
    "threaded stream fails midway": 200,
    "threaded answer": 200,
    "plain answer": 200,
    "streamed answer": 200,
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_request_leaves_no_cycle_behind(case: str, router: Any, configure: Any, fake: Any) -> None:
    configure(openrouter_max_retries="0")
    path, body, steps = CASES[case]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [("content-type", "application/json")]
    if case != "no token":
        headers += bearer(mint()).items()
    for _ in range(2):  # the first call of a kind loads and caches what every later one shares
        fake.script(*steps)
        await asgi_call(router, "POST", path, headers=headers, body=raw)

    with cycles_saved() as garbage:
        statuses = []
        for _ in range(3):
            fake.script(*steps)
            statuses.append((await asgi_call(router, "POST", path, headers=headers, body=raw))[0])
        gc.collect()
        left = kinds(garbage).most_common(8)

    assert statuses == [EXPECTED[case]] * 3
    assert left == [], f"{case} ({statuses[0]}) left cycles behind: {left}"

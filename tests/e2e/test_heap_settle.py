"""The garbage collector once the functions are loaded (hosting.settle_heap; timings: bench/gateway_compare.py).

A process serving the functions, deployed (functions-framework loads ``main.py``) or ``openrouter-functions
serve``, has frozen what start-up built out of the cyclic collector's sight and collects its youngest
generation every ``YOUNG_COLLECTION_EVERY`` allocations instead of 700: the collector's full passes over
every module and class had stopped the event loop for 40-60 ms a few times a minute under load. Objects
made afterwards (a request's) are still collected, cycles included. ``serve`` runs no collection at all
while its modules load, and turns the collector back on before it listens.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from e2e_procs import clean_env

from helpers import ROOT
from openrouter_functions.hosting import YOUNG_COLLECTION_EVERY

PROBE = r"""
import gc, json, sys, weakref

def state():
    return {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count(), "young": gc.get_threshold()[0]}

def cycle_collected():
    # A cycle made now is freed by the collector running on its own, without gc.collect().
    class Node:
        pass
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    del a, b
    young = gc.get_stats()[0]["collections"]
    kept = []
    for _ in range(3 * gc.get_threshold()[0]):  # enough allocations for a young collection or more
        kept.append([])
    return alive() is None and gc.get_stats()[0]["collections"] > young

shape, folder = sys.argv[1], sys.argv[2]
out = {"before": state()}
if shape == "serve":
    import uvicorn
    from openrouter_devtools import cli, serve

    seen = {}
    build = serve.build_app

    def build_app(*args, **kwargs):
        seen["collector_while_loading"] = gc.isenabled()
        return build(*args, **kwargs)

    def run(self):  # instead of listening: the state the server would listen in
        seen["listening"] = state()

    serve.build_app = build_app
    uvicorn.Server.run = run
    code = cli.main(["serve", "--port", "0", "--functions-dir", folder])
    out.update(seen, code=code, after=state())
else:  # as functions-framework loads a function where it is deployed
    from functions_framework import create_app

    create_app(shape, f"{folder}/{shape}/main.py")
    out["after"] = state()
    frozen = gc.get_freeze_count()
    from openrouter_functions.hosting import settle_heap

    settle_heap()
    out["again"] = gc.get_freeze_count() - frozen
out["cycle_collected"] = cycle_collected()
print(json.dumps(out))
"""


def run_python(args: list[str], tmp_path: Path, **env: str) -> tuple[Any, str]:
    """``python args...`` in a clean environment (no .env file read): its last line, parsed, and stderr."""
    empty = tmp_path / "empty.env"
    empty.touch()
    done = subprocess.run(
        [sys.executable, *args],
        env=clean_env(ENV_FILE=str(empty), PYTHONPATH=str(ROOT / "shared"), **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def probe(shape: str, tmp_path: Path) -> dict[str, Any]:
    seen, _ = run_python(
        ["-c", PROBE, shape, str(ROOT / "functions")], tmp_path, LEDGER_SQLITE_PATH=str(tmp_path / "ledger.sqlite3")
    )
    assert isinstance(seen, dict)
    return seen


@pytest.mark.parametrize("function", ["chat", "completion", "health"])
def test_a_deployed_function_freezes_what_it_loaded_and_collects_young_objects_less_often(
    function: str, tmp_path: Path
) -> None:
    seen = probe(function, tmp_path)
    before = seen["before"]  # CPython's defaults (700 young allocations in 3.11)
    assert before["enabled"] is True and before["frozen"] == 0 and before["young"] < YOUNG_COLLECTION_EVERY
    after = seen["after"]
    assert after["enabled"] is True
    assert after["young"] == YOUNG_COLLECTION_EVERY > 700
    # Every module and class loaded so far: tens of thousands of objects out of the collector's walks.
    assert after["frozen"] > 20_000
    assert seen["again"] == 0  # once per process
    assert seen["cycle_collected"] is True  # what a request makes later is still collected


def test_serve_loads_without_collecting_then_listens_with_the_collector_on_and_start_up_frozen(
    tmp_path: Path,
) -> None:
    seen = probe("serve", tmp_path)
    assert seen["code"] == 0
    assert seen["collector_while_loading"] is False
    listening = seen["listening"]
    assert listening["enabled"] is True
    assert listening["young"] == YOUNG_COLLECTION_EVERY
    assert listening["frozen"] > 20_000  # all three functions, frozen once they were all loaded
    assert seen["after"]["enabled"] is True
    assert seen["cycle_collected"] is True


def test_serve_refusing_to_start_leaves_the_collector_on(tmp_path: Path) -> None:
    """A configuration refused before anything loads still returns with the collector on (cli.main in
    another program's process)."""
    script = (
        "import gc, json; from openrouter_devtools import cli; "
        "code = cli.main(['serve', '--port', '0']); print(json.dumps([code, gc.isenabled()]))"
    )
    (code, enabled), stderr = run_python(["-c", script], tmp_path, LEDGER_BACKEND="nonsense")
    assert code == 2 and "LEDGER_BACKEND" in stderr
    assert enabled is True

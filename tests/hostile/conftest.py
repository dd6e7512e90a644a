"""The hostile-input suite's set-up: one real ``openrouter-functions serve`` process, configured as a
deployment would be (Supabase JWKS and issuer check, an allow-list of models, the default limits and
``PROMPT_GUARD=block``), the fake OpenRouter as its upstream, and two loopback listeners: the JWKS
endpoint and a canary that must never be contacted.

Every test is one attack; at the end the suite prints how many were tried and how many held. An attack
that leaves the server dead or unresponsive fails, and the next one gets a fresh server: one broken
defence costs one test and a restart, not the rest of the run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # e2e_procs: the process helpers

from e2e_procs import UPSTREAM_KEY, FakeUpstream, clean_env, cli, functions_env
from hostile_support import ALLOWED_MODELS, Hostile, Listener

from helpers import free_port
from jwks_support import RSA_KID, rsa_jwk
from procs import Process


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def canary() -> Iterator[Listener]:
    """A listener nothing may ever connect to ($ref targets, jku headers)."""
    with Listener() as listener:
        yield listener


@pytest.fixture(scope="session")
def hostile(
    rsa_key: rsa.RSAPrivateKey, canary: Listener, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    port = free_port()
    upstream_process = Process(
        "fake-upstream (hostile)",
        cli("fake-upstream", "--port", str(port), "--api-key", UPSTREAM_KEY),
        clean_env(),
        port,
    )
    try:
        upstream_process.wait_ready("/api/v1/models")
        upstream = FakeUpstream(upstream_process)
        with Listener([rsa_jwk(rsa_key, RSA_KID)]) as jwks:
            ledger_dir = tmp_path_factory.mktemp("hostile-ledger")
            env = functions_env(port, ledger_dir)
            # The guard blocks and output is capped at 4,096 tokens here: the attacks are tried against an
            # operator who turned both up (the defaults flag, and cap at 16,384).
            env.update(
                SUPABASE_URL=jwks.url, ALLOWED_MODELS=ALLOWED_MODELS, PROMPT_GUARD="block", MAX_OUTPUT_TOKENS="4096"
            )
            served = Hostile(
                start_serve(env), upstream, ledger_dir / "ledger.sqlite3", f"{jwks.url}/auth/v1", canary, env
            )
            try:
                yield served
            finally:
                served.process.stop()
                served.http.close()
                upstream.close()
    finally:
        upstream_process.stop()


def start_serve(env: dict[str, str]) -> Process:
    """``openrouter-functions serve`` on a free port, once ``/health`` answers (stopped if it never does)."""
    port = free_port()
    process = Process("serve (hostile)", cli("serve", "--port", str(port)), env, port)
    try:
        process.wait_ready("/health")
    except BaseException:
        process.stop()
        raise
    return process


@pytest.fixture
def attack(hostile: Hostile) -> Iterator[Hostile]:
    """The served functions (restarted if an earlier attack broke them) with an empty upstream script and
    request log; afterwards the server must still be alive and answering, and the canary untouched."""
    if not hostile.responsive():
        hostile.process.stop()
        hostile.process = start_serve(hostile.env)
    hostile.upstream.reset()
    yield hostile
    hostile.upstream.reset()
    assert hostile.process.popen.poll() is None, hostile.process.describe()
    assert hostile.responsive(), "the server stopped answering /health within 2 s"
    assert hostile.canary.connections == 0, hostile.canary.paths


# -- tried / held ------------------------------------------------------------------------------------

_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/hostile/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or report.outcome != "passed":
        _OUTCOMES.setdefault(report.nodeid, "held" if report.passed else "not held")
        if not report.passed:
            _OUTCOMES[report.nodeid] = "not held"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _OUTCOMES:
        return
    failed = sorted(node for node, outcome in _OUTCOMES.items() if outcome != "held")
    terminalreporter.write_sep("=", "hostile-input suite")
    terminalreporter.write_line(f"attacks tried: {len(_OUTCOMES)}, held: {len(_OUTCOMES) - len(failed)}")
    for node in failed:
        terminalreporter.write_line(f"not held: {node.split('tests/hostile/', 1)[-1]}")

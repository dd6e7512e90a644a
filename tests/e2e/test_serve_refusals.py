"""``openrouter-functions serve`` refuses to start with an unsafe configuration, and says why."""

from __future__ import annotations

import subprocess

import httpx
import pytest
from e2e_procs import UPSTREAM_KEY, FakeUpstream, clean_env, cli, functions_env, serving

from helpers import HEALTH_DETAIL, JWT_SECRET, free_port

CONFIGURED = {"OPENROUTER_API_KEY": UPSTREAM_KEY, "SUPABASE_JWT_SECRET": JWT_SECRET, "LEDGER_BACKEND": "off"}


def serve_once(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("serve", "--port", str(free_port())),
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {**CONFIGURED, "K_SERVICE": "chat"},
            "refusing to start: ALLOWED_ORIGINS=* on a cloud runtime lets any web page read the answers: list your "
            "web app's origins, or set ALLOW_ANY_ORIGIN=true to confirm.",
        ),
        (
            {**CONFIGURED, "ALLOWED_ORIGINS": "https://app.example,app.example"},
            "refusing to start: ALLOWED_ORIGINS entry 'app.example' has no scheme; write it as https://app.example.",
        ),
        (
            {**CONFIGURED, "OPENROUTER_BASE_URL": "http://openrouter.ai/api/v1"},
            "refusing to start: OPENROUTER_BASE_URL must use https (plain http only towards a loopback host, or with ALLOW_PLAIN_HTTP=true for a private network you trust).",
        ),
    ],
)
def test_serve_refuses_an_unsafe_configuration(env: dict[str, str], reason: str) -> None:
    result = serve_once(**env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == reason
    assert "serving" not in result.stdout


def test_a_confirmed_any_origin_starts_on_a_cloud_runtime(
    fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = functions_env(fake.port, tmp_path_factory.mktemp("ledger"))
    env.update(K_SERVICE="chat", ALLOW_ANY_ORIGIN="true", LEDGER_BACKEND="off")
    with serving("serve (cloud, any origin confirmed)", env) as process:
        health = httpx.get(f"{process.base_url}/health", headers=HEALTH_DETAIL, timeout=10.0)
        assert health.status_code == 200, health.text
        assert health.json()["checks"]["configuration"]["problems"] == []

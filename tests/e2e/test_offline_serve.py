"""``openrouter-functions serve`` with no credentials at all: offline mode with a built-in fake OpenRouter and
a printed dev token; and refusal of offline mode on a cloud runtime."""

from __future__ import annotations

import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from e2e_procs import clean_env, cli, serving

from helpers import free_port
from procs import Process

BANNER = "OFFLINE MODE"


@dataclass
class Offline:
    process: Process
    banner: str
    token: str


@contextmanager
def offline_serve(state: Path) -> Iterator[Offline]:
    # Nothing but where the embedded ledger goes: no OPENROUTER_* or SUPABASE_* at all. FUNCTION_TARGET
    # is set as functions-framework sets it on a laptop too: it is no sign of a cloud runtime.
    env = clean_env(LEDGER_SQLITE_PATH=str(state / "ledger.sqlite3"), FUNCTION_TARGET="chat")
    with serving("serve (offline)", env) as process:
        banner = process.wait_for_output("curl -s")  # printed before the server listens
        match = re.search(r"dev access token[^\n]*:\n\s*(\S+)", banner)
        assert match, f"no dev token in the banner:\n{banner}"
        yield Offline(process, banner, match.group(1))


@pytest.fixture(scope="module")
def offline_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("offline-state")


@pytest.fixture(scope="module")
def offline(offline_state: Path) -> Iterator[Offline]:
    with offline_serve(offline_state) as running:
        yield running


def test_banner_names_offline_mode_token_and_curl(offline: Offline) -> None:
    assert BANNER in offline.banner
    base = offline.process.base_url
    assert f"{base}/chat" in offline.banner
    curl = [line for line in offline.banner.splitlines() if "curl -s" in line]
    assert curl == [f"    curl -s {base}/chat -H 'Authorization: Bearer {offline.token}' \\"]
    assert offline.token.count(".") == 2, "the dev token is a JWT"


def test_chat_with_the_printed_token(offline: Offline) -> None:
    response = httpx.post(
        f"{offline.process.base_url}/chat",
        headers={"Authorization": f"Bearer {offline.token}"},
        json={"messages": [{"role": "user", "content": "Hello!"}]},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Echo: Hello!"


def test_chat_without_the_token_is_refused(offline: Offline) -> None:
    response = httpx.post(
        f"{offline.process.base_url}/chat", json={"messages": [{"role": "user", "content": "Hello!"}]}, timeout=10.0
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401


def test_health_reports_offline_mode(offline: Offline) -> None:
    response = httpx.get(f"{offline.process.base_url}/health", timeout=10.0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert body["offline_mode"] is True


def test_offline_mode_refused_on_cloud_runtime() -> None:
    port = free_port()
    result = subprocess.run(
        cli("serve", "--port", str(port)),
        env=clean_env(K_SERVICE="x"),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode != 0
    message = (result.stderr + result.stdout).lower()
    assert "offline mode" in message
    assert "refus" in message
    assert BANNER not in result.stdout


def test_the_dev_token_survives_a_restart(offline: Offline, offline_state: Path) -> None:
    """A token pasted into a script or page keeps working after serve restarts; it is kept owner-only."""
    token_file = offline_state / "offline-token"
    assert token_file.read_text().strip() == offline.token
    for name in ("offline-secret", "offline-token", "offline-anon-key"):
        assert stat.S_IMODE((offline_state / name).stat().st_mode) == 0o600, name

    with offline_serve(offline_state) as again:
        assert again.token == offline.token
        response = httpx.post(
            f"{again.process.base_url}/functions/v1/chat",
            headers={"Authorization": f"Bearer {offline.token}"},
            json={"messages": [{"role": "user", "content": "still me"}]},
            timeout=10.0,
        )
        assert response.status_code == 200, response.text


def test_a_damaged_token_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "offline-token").write_text("garbage")
    with offline_serve(tmp_path) as running:
        assert running.token != "garbage"
        assert (tmp_path / "offline-token").read_text().strip() == running.token
        response = httpx.post(
            f"{running.process.base_url}/chat",
            headers={"Authorization": f"Bearer {running.token}"},
            json={"messages": [{"role": "user", "content": "hi"}]},
            timeout=10.0,
        )
        assert response.status_code == 200, response.text

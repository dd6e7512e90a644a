"""A real OpenRouter key and no Supabase project: ``openrouter-functions token`` mints a token the local
server accepts, signed with the ``SUPABASE_JWT_SECRET`` both are given (README: "Local use with a real
key")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
from e2e_procs import UPSTREAM_KEY, FakeUpstream, clean_env, cli

from helpers import HOST, JWT_SECRET, free_port
from procs import Process


def token(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("token"), env=clean_env(**env), capture_output=True, text=True, timeout=15, check=False)


def test_the_printed_token_is_accepted_by_serve(serve_url: str, fake: FakeUpstream) -> None:
    minted = token(SUPABASE_JWT_SECRET=JWT_SECRET)
    assert minted.returncode == 0, minted.stderr
    printed = minted.stdout.strip()
    assert printed.count(".") == 2

    response = httpx.post(
        f"{serve_url}/chat",
        headers={"Authorization": f"Bearer {printed}"},
        json={"messages": [{"role": "user", "content": "my own key"}]},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text


def test_no_secret_says_what_to_set() -> None:
    minted = token()
    assert minted.returncode == 2
    assert minted.stdout == ""
    assert "SUPABASE_JWT_SECRET" in minted.stderr


# -- .env for local runs ----------------------------------------------------------------------------------


def test_serve_and_token_read_a_dot_env_file(tmp_path: Path, fake: FakeUpstream) -> None:
    """A developer keeps the key and secret in ./.env; serve and token read it, the environment still wins."""
    (tmp_path / ".env").write_text(
        "# local settings\n"
        f"OPENROUTER_API_KEY={UPSTREAM_KEY}\n"
        f"OPENROUTER_BASE_URL=http://{HOST}:{fake.port}/api/v1\n"
        f'SUPABASE_JWT_SECRET="{JWT_SECRET}"\n'
        f"LEDGER_SQLITE_PATH={tmp_path / 'ledger.sqlite3'}\n"
        "OPENROUTER_MODEL=openai/gpt-4o\n"
    )
    env = clean_env(OPENROUTER_MODEL="openai/gpt-4o-mini")
    minted = subprocess.run(
        cli("token"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=15, check=False
    )
    assert minted.returncode == 0, minted.stderr
    assert "SUPABASE_JWT_SECRET" in minted.stderr and JWT_SECRET not in minted.stderr  # names, never values

    port = free_port()
    process = Process("serve (.env)", cli("serve", "--port", str(port)), env, port, cwd=tmp_path)
    try:
        process.wait_ready("/health")
        assert "OFFLINE MODE" not in process.stdout(), "the key from .env was read"
        response = httpx.post(
            f"{process.base_url}/chat",
            headers={"Authorization": f"Bearer {minted.stdout.strip()}"},
            json={"messages": [{"role": "user", "content": "configured by .env"}]},
            timeout=10.0,
        )
        assert response.status_code == 200, response.text
        assert fake.chat_requests()[-1]["json"]["model"] == "openai/gpt-4o-mini"  # the environment wins
    finally:
        process.stop()


def test_a_missing_env_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    result = subprocess.run(
        cli("token"),
        env=clean_env(ENV_FILE=str(tmp_path / "nope.env")),
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    assert result.returncode != 0
    assert "nope.env does not exist" in result.stderr


def test_dot_env_values_are_taken_as_written(tmp_path: Path) -> None:
    """A secret containing ${...} is not expanded: it must equal the value stored elsewhere (GitHub, Supabase)."""
    from openrouter_devtools.dotenv_file import load_env_file

    (tmp_path / ".env").write_text("SUPABASE_JWT_SECRET=abc${HOME}def$USER-ghi\nEMPTY=\n")
    env = {"ENV_FILE": str(tmp_path / ".env"), "HOME": "/root"}
    loaded = load_env_file(env)
    assert loaded is not None
    assert env["SUPABASE_JWT_SECRET"] == "abc${HOME}def$USER-ghi"

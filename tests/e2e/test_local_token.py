"""A real OpenRouter key and no Supabase project: ``openrouter-functions token`` mints a token the local
server accepts, signed with the ``SUPABASE_JWT_SECRET`` both are given (README: "Local use with a real
key")."""

from __future__ import annotations

import subprocess

import httpx
from e2e_procs import FakeUpstream, clean_env, cli

from helpers import JWT_SECRET


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

"""The secret scan CI runs (scripts/scan_secrets.py): the repository is clean, and a key committed by
mistake is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

SCAN = ROOT / "scripts" / "scan_secrets.py"
# Made-up credentials in the shapes of the real ones (none of them works anywhere).
OPENROUTER_KEY = "sk-or-v1-" + "3f9a1c2b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4"
SERVICE_ROLE_KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6Inh5eiIsInJvbGUiOiJzZXJ2aWNlX3JvbGUifQ"
    ".q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6j7k8l9z0x1c"
)


def scan(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCAN), str(repo)], capture_output=True, text=True, timeout=300, check=False
    )


def repository(tmp_path: Path, files: dict[str, str]) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    (tmp_path / ".secrets.baseline").write_text((ROOT / ".secrets.baseline").read_text())
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "-C", str(tmp_path), "add", "-A"], check=True, timeout=30)
    return tmp_path


def test_the_repository_holds_no_unaudited_secret() -> None:
    result = scan(ROOT)
    assert result.returncode == 0, result.stderr


def test_a_committed_key_fails_the_scan(tmp_path: Path) -> None:
    repo = repository(
        tmp_path,
        {
            "settings.py": f'OPENROUTER_API_KEY = "{OPENROUTER_KEY}"\n',
            "deploy.env": f"SUPABASE_SERVICE_ROLE_KEY={SERVICE_ROLE_KEY}\n",
            "fine.py": "print('hello')\n",
        },
    )
    result = scan(repo)
    assert result.returncode == 1
    assert "settings.py:1" in result.stderr
    assert "deploy.env:1" in result.stderr
    assert "fine.py" not in result.stderr
    assert OPENROUTER_KEY not in result.stderr + result.stdout, "the scan names places, never the secret"

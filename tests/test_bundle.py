"""`openrouter-functions bundle`: each folder deploys as it is — proven by running it with nothing else.

The bundle is started by a bare functions-framework process in its own working directory with the
project's source tree *off* the import path (``python -S`` and an explicit PYTHONPATH of the bundle and
the third-party packages only), and the bundle's copy of the core is marked so the answer proves
which copy ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import JWT_SECRET, ROOT, UPSTREAM_KEY, bearer
from openrouter_devtools.bundle import build_bundle
from openrouter_devtools.fake_upstream import FakeOpenRouter

MARK = "0.1.0+bundled-copy"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(api_key=UPSTREAM_KEY).running_in_thread() as fake:
        yield fake


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_bundle_layout(tmp_path: Path) -> None:
    out = build_bundle("completion", tmp_path / "completion", ROOT / "functions")
    assert (out / "main.py").read_text() == (ROOT / "functions" / "completion" / "main.py").read_text()
    assert (out / "openrouter_service" / "client.py").is_file()
    assert not list(out.rglob("__pycache__"))
    requirements = (out / "requirements.txt").read_text().splitlines()[1:]
    names = {line.split("==")[0] for line in requirements}
    assert {"functions-framework", "httpx", "pydantic", "jsonschema", "PyJWT"} <= names
    assert all("==" in line for line in requirements)
    assert not names & {"pytest", "ruff", "mypy", "openai"}


def test_bundle_refuses_unknown_function(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no function"):
        build_bundle("nope", tmp_path / "x", ROOT / "functions")


@pytest.mark.parametrize("function", ["chat", "completion", "health"])
def test_bundle_runs_alone_under_functions_framework(tmp_path: Path, upstream: FakeOpenRouter, function: str) -> None:
    out = build_bundle(function, tmp_path / function, ROOT / "functions")
    init = out / "openrouter_service" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{MARK}"'))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(out), sysconfig.get_paths()["purelib"]]),
        "OPENROUTER_API_KEY": UPSTREAM_KEY,
        "OPENROUTER_BASE_URL": upstream.url,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "LEDGER_BACKEND": "off",
    }
    argv = [
        sys.executable,
        "-S",
        "-m",
        "functions_framework",
        "--target",
        function,
        "--source",
        "main.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(argv, cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode() if process.stdout else ""
                    pytest.fail(f"bundle did not start: {output[-2000:]}")
                time.sleep(0.1)
        if function == "health":
            response = httpx.get(base, timeout=5)
            assert response.status_code == 200
            assert response.json()["version"] == MARK  # the bundled copy answered
        elif function == "chat":
            response = httpx.post(
                f"{base}/v1/chat/completions",
                headers=bearer(),
                timeout=5,
                json={"messages": [{"role": "user", "content": "from the bundle"}]},
            )
            assert response.status_code == 200
            assert response.json()["choices"][0]["message"]["content"] == "Echo: from the bundle"
        else:
            response = httpx.post(base, headers=bearer(), json={"prompt": "bundled"}, timeout=5)
            assert response.status_code == 200
            assert response.json()["text"] == "Echo: bundled"
        probe = subprocess.run(
            [sys.executable, "-S", "-c", "import openrouter_service as m; print(m.__file__, m.__version__)"],
            cwd=out,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert probe.stdout.split() == [str(init), MARK]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()

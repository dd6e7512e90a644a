"""`openrouter-functions bundle`: each folder deploys as it is — proven by running it with nothing else.

The bundle is started by a bare functions-framework process in its own working directory with the
project's source tree *off* the import path (``python -S`` and an explicit PYTHONPATH of the bundle and
the third-party packages only), and the bundle's copy of the client is marked so the answer proves
which copy ran. It holds the two runtime packages and nothing of the developer tools.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from helpers import HEALTH_DETAIL, HEALTH_TOKEN, HOST, JWT_SECRET, ROOT, UPSTREAM_KEY, bearer, free_port
from openrouter_devtools.bundle import build_bundle
from openrouter_devtools.fake_upstream import FakeOpenRouter
from procs import Process

MARK = "0.1.0+bundled-copy"
# Names only the developer tools define: none may appear anywhere in a bundle.
DEVTOOLS_NAMES = ("openrouter_devtools", "fake_upstream", "FakeOpenRouter", "build_bundle", "FunctionsRouter")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter(api_key=UPSTREAM_KEY).running_in_thread() as fake:
        yield fake


def declared_requirements_pinned() -> list[str]:
    """pyproject.toml's runtime dependencies, each pinned to the version installed here."""
    pinned = []
    for requirement in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        head, _, marker = requirement.partition(";")
        match = re.match(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?", head.strip())
        assert match, requirement
        name, extras = match.group(1), match.group(2) or ""
        marker = marker.strip().replace("'", '"')  # metadata writes markers with double quotes
        pinned.append(f"{name}{extras}=={metadata.version(name)}" + (f"; {marker}" if marker else ""))
    return pinned


def test_bundle_refuses_to_empty_a_folder_it_did_not_write(tmp_path: Path) -> None:
    """A typo in --out must never delete someone's files."""
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")

    with pytest.raises(SystemExit, match="not empty and no earlier bundle wrote it"):
        build_bundle("chat", mine, ROOT / "functions")
    assert (mine / "todo.txt").read_text() == "keep me"


def test_bundle_replaces_its_own_earlier_bundle_and_fills_an_empty_folder(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = build_bundle("chat", empty, ROOT / "functions")
    (out / "stale.py").write_text("left from an older bundle")

    again = build_bundle("completion", out, ROOT / "functions")

    assert not (again / "stale.py").exists()
    assert (again / "main.py").read_text() == (ROOT / "functions" / "completion" / "main.py").read_text()


def test_bundle_layout(tmp_path: Path) -> None:
    out = build_bundle("completion", tmp_path / "completion", ROOT / "functions")
    assert (out / "main.py").read_text() == (ROOT / "functions" / "completion" / "main.py").read_text()
    assert sorted(p.name for p in out.iterdir()) == [
        ".openrouter-functions-bundle",
        "main.py",
        "openrouter_functions",
        "openrouter_service",
        "requirements.txt",
    ]
    assert (out / "openrouter_service" / "client.py").is_file()
    assert (out / "openrouter_functions" / "endpoints.py").is_file()
    assert not list(out.rglob("__pycache__"))


def test_requirements_are_pyproject_runtime_dependencies_pinned(tmp_path: Path) -> None:
    out = build_bundle("chat", tmp_path / "chat", ROOT / "functions")
    comment, *requirements = (out / "requirements.txt").read_text().splitlines()
    assert comment.startswith("#")
    assert requirements == declared_requirements_pinned()
    assert f"PyJWT[crypto]=={metadata.version('PyJWT')}" in requirements
    assert f"psycopg[binary]=={metadata.version('psycopg')}" in requirements
    assert f'uvloop=={metadata.version("uvloop")}; sys_platform != "win32"' in requirements
    names = {re.split(r"[\[=]", line)[0] for line in requirements}
    assert not names & {"pytest", "pytest-asyncio", "ruff", "mypy", "openai"}, "dev tools are not runtime dependencies"


def test_bundle_holds_no_developer_tools(tmp_path: Path) -> None:
    out = build_bundle("chat", tmp_path / "chat", ROOT / "functions")
    assert not (out / "openrouter_devtools").exists()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"main.py", "requirements.txt", "client.py", "endpoints.py"}
    offending = sorted(
        f"{p.relative_to(out)}: {name}" for p in files for name in DEVTOOLS_NAMES if name in p.read_text()
    )
    assert offending == []


def test_bundle_refuses_unknown_function(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no function"):
        build_bundle("nope", tmp_path / "x", ROOT / "functions")


@pytest.mark.parametrize("function", ["chat", "completion", "health"])
def test_bundle_runs_alone_under_functions_framework(tmp_path: Path, upstream: FakeOpenRouter, function: str) -> None:
    out = build_bundle(function, tmp_path / function, ROOT / "functions")
    init = out / "openrouter_service" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', f'__version__ = "{MARK}"'))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(out), sysconfig.get_paths()["purelib"]]),
        "OPENROUTER_API_KEY": UPSTREAM_KEY,
        "OPENROUTER_BASE_URL": upstream.url,
        "SUPABASE_JWT_SECRET": JWT_SECRET,
        "LEDGER_BACKEND": "off",
        "HEALTH_TOKEN": HEALTH_TOKEN,
    }
    port = free_port()
    argv = [sys.executable, "-S", "-m", "functions_framework", "--target", function, "--source", "main.py"]
    argv += ["--host", HOST, "--port", str(port)]
    upstream.reset()
    process = Process(f"bundled {function}", argv, env, port, cwd=out)
    try:
        # Any answer at the root means it is up: health answers GET, the others refuse it.
        process.wait_ready("/", timeout=20, accept=(200, 405))
        base = process.base_url
        if function == "health":
            response = httpx.get(base, headers=HEALTH_DETAIL, timeout=5)
            assert response.status_code == 200
            assert response.json()["version"] == MARK  # the bundled copy answered
        elif function == "chat":
            response = httpx.post(
                f"{base}/v1/chat/completions",
                headers=bearer(),
                timeout=5,
                json={"messages": [{"role": "user", "content": "from the bundle"}]},
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] == "Echo: from the bundle"
            # ...and it came from this test's fake upstream, with the configured key.
            [sent] = [r for r in upstream.received if r.path.endswith("/chat/completions")]
            assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
            assert sent.json()["messages"][-1] == {"role": "user", "content": "from the bundle"}
        else:
            response = httpx.post(base, headers=bearer(), json={"prompt": "bundled"}, timeout=5)
            assert response.status_code == 200
            assert response.json()["text"] == "Echo: bundled"
    finally:
        process.stop()
    probe = "import openrouter_service as m; print(m.__file__, m.__version__); import openrouter_devtools"
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe], cwd=out, env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.stdout.split() == [str(init), MARK]
    assert "No module named 'openrouter_devtools'" in result.stderr, "the developer tools are out of reach"

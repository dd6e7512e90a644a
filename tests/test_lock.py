"""requirements.lock: the whole runtime tree, pinned with hashes, is what the tests run and what deploys.

* it still satisfies pyproject.toml (re-lock with ``bash scripts/lock.sh`` after changing dependencies);
* the test venv runs exactly its versions (scripts/bootstrap.sh installs it first);
* a bundle installs from it alone, hash-checked, into a clean venv of the deployed Python (3.12 when this
  machine has it) and serves.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import httpx
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from helpers import HOST, JWT_SECRET, ROOT, UPSTREAM_KEY, free_port
from openrouter_devtools.bundle import build_bundle, locked, normalise
from openrouter_devtools.fake_upstream import FakeOpenRouter
from procs import Process

LOCK = ROOT / "requirements.lock"


def declared() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def test_the_lock_satisfies_every_declared_dependency() -> None:
    pins = locked(LOCK)
    for requirement in declared():
        name = normalise(requirement.name)
        assert name in pins, f"{requirement.name} is missing from requirements.lock: run bash scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {requirement}: run bash scripts/lock.sh"
        )
        for extra in requirement.extras:  # psycopg[binary], PyJWT[crypto]: their extras' packages are locked
            wanted = [
                normalise(Requirement(r).name)
                for r in metadata.requires(requirement.name) or []
                if Requirement(r).marker is not None
                and Requirement(r).marker.evaluate({**default_environment(), "extra": extra})  # type: ignore[union-attr]
            ]
            assert set(wanted) <= set(pins), (requirement, wanted)


def test_the_tests_run_the_locked_versions() -> None:
    """What is installed here is what ships: a drift means the venv was not built by scripts/bootstrap.sh."""
    drifted = {}
    for name, version in locked(LOCK).items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform-specific package (pypy, windows) this machine does not use
        if installed != version:
            drifted[name] = (installed, version)
    assert drifted == {}, f"installed vs locked: {drifted}; run bash scripts/bootstrap.sh"


def deployed_python() -> str:
    """Python 3.12 (what Cloud Functions and the image run) when this machine has one, else this one."""
    pyenv = sorted((Path.home() / ".pyenv" / "versions").glob("3.12*/bin/python3"))
    for candidate in [*map(str, pyenv), shutil.which("python3.12")]:
        if candidate is None:
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        if probe.stdout.strip() == "True":  # a pyenv shim without that version set answers otherwise
            return candidate
    return sys.executable


def test_a_bundle_installs_from_its_lock_alone_and_serves(tmp_path: Path) -> None:
    out = build_bundle("health", tmp_path / "health", ROOT / "functions")
    venv = tmp_path / "venv"
    python = deployed_python()
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--require-hashes", "--only-binary=:all:", "--requirement", str(out / "requirements.txt")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if install.returncode != 0 and "Could not find a version" in install.stderr and not os.environ.get("CI"):
        pytest.skip(f"no package index reachable: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stderr[-3000:]

    with FakeOpenRouter(api_key=UPSTREAM_KEY).running_in_thread() as upstream:
        port = free_port()
        env = {
            "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(tmp_path),
            "OPENROUTER_API_KEY": UPSTREAM_KEY,
            "OPENROUTER_BASE_URL": upstream.url,
            "SUPABASE_JWT_SECRET": JWT_SECRET,
            "LEDGER_BACKEND": "off",
        }
        argv = [str(venv / "bin" / "functions-framework"), "--target", "health", "--source", "main.py"]
        process = Process("bundle from its lock", [*argv, "--host", HOST, "--port", str(port)], env, port, cwd=out)
        try:
            process.wait_ready("/", timeout=30)
            response = httpx.get(process.base_url, timeout=5)
            assert (response.status_code, response.json()) == (200, {"status": "ok"})
        finally:
            process.stop()

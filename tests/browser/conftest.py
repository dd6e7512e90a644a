"""The example page in a real browser: Debian's Chromium, driven by Playwright for Python.

The process plumbing is the end-to-end tests' (``tests/e2e/e2e_procs.py``), reached by path so this
folder runs on its own too. One static site and two offline ``serve`` processes serve every module here,
each module with its own Chromium (``page_kit.py`` has the parts).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # e2e_procs: the process helpers

import pytest
from e2e_procs import clean_env
from page_kit import (
    CHROMIUM_FLAGS,
    WAIT_MS,
    WEB,
    OfflineServe,
    StaticSite,
    chromium,
    install_web_packages,
    offline_serve,
    ready,
)
from playwright.sync_api import Browser, Page, sync_playwright

from helpers import HOST, free_port
from procs import Process, stop_all


# Per module: Playwright's sync API runs an event loop in this thread while it is open, and the async tests
# of other modules in the same run need the thread's loop free.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium()
    install_web_packages()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, timeout=30_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("BROWSER_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    config = tmp_path_factory.mktemp("page-config") / "config.js"
    config.write_text("export default null;\n", encoding="utf-8")
    port = free_port()
    argv = [sys.executable, str(Path(__file__).with_name("static_server.py")), "--port", str(port)]
    process = Process("static page", [*argv, "--root", str(WEB), "--config", str(config)], clean_env(), port)
    try:
        process.wait_ready("/index.html")
        yield StaticSite(port, config)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def serves(site: StaticSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineServe, OfflineServe]]:
    """Two offline ``serve`` processes, started side by side:

    * open: the local defaults (any origin may call it);
    * strict: allows only the static site's 127.0.0.1 origin and admits no request at all (a per-user
      limit of 0 requests a minute: every chat is a 429 with Retry-After).
    """
    open_folder, strict_folder = tmp_path_factory.mktemp("offline"), tmp_path_factory.mktemp("offline-strict")
    processes: list[Process] = []
    try:
        processes.append(offline_serve("serve (offline)", open_folder))
        processes.append(
            offline_serve(
                "serve (offline, strict)", strict_folder, DEFAULT_RPM="0", ALLOWED_ORIGINS=f"http://{HOST}:{site.port}"
            )
        )
        yield ready(processes[0], open_folder), ready(processes[1], strict_folder)
    finally:
        stop_all(processes)


@pytest.fixture(scope="session")
def open_serve(serves: tuple[OfflineServe, OfflineServe]) -> OfflineServe:
    return serves[0]


@pytest.fixture(scope="session")
def strict_serve(serves: tuple[OfflineServe, OfflineServe]) -> OfflineServe:
    return serves[1]


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()

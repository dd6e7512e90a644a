"""The example web app (``examples/web``) in headless Chromium against real ``openrouter-functions serve`` processes.

The page is loaded from a plain static server on its own port — another origin than the functions, as
in production — with a ``config.js`` pointing at a ``serve`` in offline mode. Shown: the streamed answer
grows on screen piece by piece (supabase-js and the openai SDK), the usage panel reads the new request
from the ledger's tables, a 429 shows its message and the Retry-After wait, and an origin the functions
do not allow gets a failure and no answer. One more page is the one ``serve`` itself hosts at ``/app/``.

Needs Debian's ``chromium`` (``scripts/test.sh`` installs it; without it this module fails when ``CI`` is
set and is skipped otherwise) and the page's npm packages (``npm ci`` in ``examples/web``, run here when
missing). Screenshots go to ``$BROWSER_SCREENSHOTS`` or a temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_procs import clean_env, cli
from playwright.sync_api import Browser, Page, expect, sync_playwright

from helpers import HOST, ROOT, free_port
from procs import Process, stop_all

WEB = ROOT / "examples" / "web"
WAIT_MS = 10_000  # every wait in the page is bounded by this
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# 30 words: the fake OpenRouter streams its echo a word at a time, 20 ms apart.
PROMPT = " ".join(f"word{n}" for n in range(1, 31))
ANSWER = "Echo: " + PROMPT

# Records each new length of the newest answer's text, from the page's own DOM mutations.
RECORD_LENGTHS = """() => {
  window.__lengths = [];
  const transcript = document.getElementById("transcript");
  new MutationObserver(() => {
    const answers = transcript.querySelectorAll('[data-testid="answer"]');
    const last = answers[answers.length - 1];
    if (!last) return;
    const length = last.textContent.length;
    if (window.__lengths[window.__lengths.length - 1] !== length) window.__lengths.push(length);
  }).observe(transcript, { childList: true, subtree: true, characterData: true });
}"""


def _missing(message: str) -> None:
    """Fail under CI (the suite must not silently lose this module), skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _chromium() -> str:
    # Debian's chromium here; the Chrome that GitHub's Ubuntu runners come with there (CHROMIUM names another).
    names = [os.environ.get("CHROMIUM", ""), "chromium", "google-chrome", "google-chrome-stable"]
    path = next((found for name in names if name and (found := shutil.which(name))), None)
    if path is None:
        _missing("Debian's chromium is not installed (apt-get install -y chromium); the example page test needs it")
    assert path is not None
    return path


def _npm_packages_current() -> bool:
    """Whether examples/web/node_modules holds exactly the versions package-lock.json pins."""
    lock = json.loads((WEB / "package-lock.json").read_text(encoding="utf-8"))
    for name, entry in lock["packages"].items():
        if not name:
            continue
        installed = WEB / name / "package.json"
        if not installed.is_file() or json.loads(installed.read_text(encoding="utf-8")).get("version") != entry.get(
            "version"
        ):
            return False
    return True


def _install_web_packages() -> None:
    """The page's npm packages, installed with ``npm ci`` when missing or not the pinned versions."""
    if _npm_packages_current():
        return
    npm = shutil.which("npm")
    if npm is None:
        _missing("npm is not installed; the example page needs `npm ci` in examples/web")
    assert npm is not None
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"npm ci failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert _npm_packages_current()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    _install_web_packages()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS, timeout=30_000)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("BROWSER_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class OfflineServe:
    """A ``serve`` in offline mode: its URL, the developer's token and anon key, its ledger file."""

    url: str
    token: str
    anon_key: str
    ledger: Path

    def page_config(self) -> dict[str, Any]:
        return {
            "supabaseUrl": self.url,
            "functionsUrl": self.url,
            "anonKey": self.anon_key,
            "offline": True,
            "devToken": self.token,
        }

    def newest_request_id(self) -> str | None:
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=2.0)) as db:
            row = db.execute("select request_id from request_log order by created_at desc limit 1").fetchone()
        return None if row is None else str(row[0])


def _offline_serve(name: str, folder: Path, **env: str) -> Process:
    """``openrouter-functions serve`` with no credentials (offline mode), its ledger and tokens in ``folder``."""
    port = free_port()
    return Process(
        name,
        cli("serve", "--port", str(port)),
        clean_env(LEDGER_SQLITE_PATH=str(folder / "ledger.sqlite3"), **env),
        port,
    )


def _ready(process: Process, folder: Path) -> OfflineServe:
    process.wait_ready("/health")
    return OfflineServe(
        process.base_url,
        (folder / "offline-token").read_text(encoding="utf-8").strip(),
        (folder / "offline-anon-key").read_text(encoding="utf-8").strip(),
        folder / "ledger.sqlite3",
    )


@dataclass
class StaticSite:
    """The page on a static server of its own (another origin than any ``serve``)."""

    port: int
    config: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def point_at(self, serve: OfflineServe) -> None:
        self.config.write_text("export default " + json.dumps(serve.page_config()) + ";\n", encoding="utf-8")


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def serves(site: StaticSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineServe, OfflineServe]]:
    """Two offline ``serve`` processes, started side by side:

    * open: the local defaults (any origin may call it);
    * strict: allows only the static site's 127.0.0.1 origin and admits no request at all (a per-user
      limit of 0 requests a minute: every chat is a 429 with Retry-After).
    """
    open_folder, strict_folder = tmp_path_factory.mktemp("offline"), tmp_path_factory.mktemp("offline-strict")
    processes: list[Process] = []
    try:
        processes.append(_offline_serve("serve (offline)", open_folder))
        processes.append(
            _offline_serve(
                "serve (offline, strict)", strict_folder, DEFAULT_RPM="0", ALLOWED_ORIGINS=f"http://{HOST}:{site.port}"
            )
        )
        yield _ready(processes[0], open_folder), _ready(processes[1], strict_folder)
    finally:
        stop_all(processes)


@pytest.fixture(scope="module")
def open_serve(serves: tuple[OfflineServe, OfflineServe]) -> OfflineServe:
    return serves[0]


@pytest.fixture(scope="module")
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


def _open(page: Page, url: str) -> None:
    """Load the page and wait until it has signed in offline and shown the usage it read."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    expect(page.locator("#workspace")).to_be_visible()
    assert not errors, errors
    expect(page.locator("#mode")).to_have_text("Offline mode")
    expect(page.get_by_test_id("offline-note")).to_be_visible()
    expect(page.get_by_test_id("who")).to_have_text("developer@localhost")


def _usage_loaded(page: Page) -> int:
    """Today's request count once the usage panel has read the tables."""
    today = page.get_by_test_id("today-requests")
    expect(today).to_have_text(re.compile(r"^\d+$"))
    return int(today.inner_text())


def _send(page: Page, client: str, prompt: str = PROMPT) -> None:
    page.locator(f'input[name="client"][value="{client}"]').check(force=True)  # the radio is styled as a button
    page.evaluate(RECORD_LENGTHS)
    page.fill("#prompt", prompt)
    page.click("#send")


def _assert_streamed(page: Page, mid_stream_shot: Path | None = None) -> None:
    """The answer is complete, and it grew on screen in many steps before the stream ended."""
    answer = page.get_by_test_id("answer").last
    if mid_stream_shot is not None:
        page.wait_for_function("() => (window.__lengths || []).length >= 2")
        page.screenshot(path=mid_stream_shot)  # usually caught while the answer streams
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")
    expect(answer).to_have_text(ANSWER)
    lengths: list[int] = page.evaluate("window.__lengths")
    assert lengths == sorted(set(lengths)), f"the answer's text only ever grows: {lengths}"
    assert lengths[-1] == len(ANSWER)
    assert len(lengths) >= 8, f"the answer appeared in too few steps to be a stream: {lengths}"
    expect(page.get_by_test_id("chat-error")).to_be_hidden()


def test_supabase_js_streams_token_by_token_and_usage_shows_the_request(
    page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path
) -> None:
    site.point_at(open_serve)
    _open(page, site.url)
    before = _usage_loaded(page)

    _send(page, "supabase")
    _assert_streamed(page, screenshots / "supabase-js-mid-stream.png")

    # The usage panel re-reads usage_daily and request_log (through /rest/v1, under the user's token).
    expect(page.get_by_test_id("today-requests")).to_have_text(str(before + 1))
    newest = page.get_by_test_id("requests").locator("tbody tr").first
    expect(newest).to_have_attribute("data-request-id", open_serve.newest_request_id() or "?")
    expect(newest.locator("td").nth(1)).to_have_text("chat")
    expect(newest.locator(".pill")).to_have_text("200")
    expect(page.get_by_test_id("usage-error")).to_be_hidden()
    page.screenshot(path=screenshots / "usage-after-chat.png", full_page=True)


def test_openai_sdk_toggle_streams_too(
    page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path
) -> None:
    site.point_at(open_serve)
    _open(page, site.url)
    before = _usage_loaded(page)

    _send(page, "openai")
    _assert_streamed(page)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-client", "openai")
    expect(page.get_by_test_id("today-requests")).to_have_text(str(before + 1))
    page.screenshot(path=screenshots / "openai-sdk-done.png", full_page=True)


@pytest.mark.parametrize("client", ["supabase", "openai"])
def test_rate_limit_shows_the_message_and_the_wait(
    page: Page, site: StaticSite, strict_serve: OfflineServe, screenshots: Path, client: str
) -> None:
    site.point_at(strict_serve)
    _open(page, site.url)
    _usage_loaded(page)

    _send(page, client, "Hello!")
    error = page.get_by_test_id("chat-error")
    expect(error).to_be_visible()
    expect(error).to_have_attribute("data-status", "429")
    expect(error).to_contain_text("Too many requests; slow down.")  # the envelope's error.message
    expect(error).to_contain_text(re.compile(r"Try again in \d+ s\."))
    wait = int(error.get_attribute("data-retry-after") or "0")
    assert 1 <= wait <= 60, "Retry-After is the rest of the one-minute window"
    expect(page.locator("#send")).to_be_disabled()  # held until the wait is over
    expect(page.get_by_test_id("answer")).to_have_count(0)
    # The refused request is logged too, and the panel shows it.
    expect(page.get_by_test_id("requests").locator("tbody tr .pill").first).to_have_text("429")
    page.screenshot(path=screenshots / f"rate-limited-{client}.png", full_page=True)


@pytest.mark.parametrize("client", ["supabase", "openai"])
def test_an_origin_the_functions_do_not_allow_gets_no_answer(
    page: Page, site: StaticSite, strict_serve: OfflineServe, screenshots: Path, client: str
) -> None:
    # The same static site as http://localhost:<port>: another origin than the one strict_serve allows.
    site.point_at(strict_serve)
    _open(page, f"http://localhost:{site.port}/")

    _send(page, client, "Hello!")
    error = page.get_by_test_id("chat-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("Could not reach the chat function")
    expect(error).to_contain_text(f"http://localhost:{site.port}")
    expect(error).not_to_contain_text("Too many requests")  # the browser never let the page read the 429
    expect(page.get_by_test_id("answer")).to_have_count(0)
    expect(page.get_by_test_id("usage-error")).to_be_visible()  # the tables refuse that origin as well
    page.screenshot(path=screenshots / f"origin-refused-{client}.png", full_page=True)


def test_the_page_serve_hosts_at_app(page: Page, open_serve: OfflineServe) -> None:
    # Same origin as the functions: serve's own /app/ with its generated config.js.
    _open(page, f"{open_serve.url}/app/")
    before = _usage_loaded(page)
    _send(page, "supabase")
    _assert_streamed(page)
    expect(page.get_by_test_id("today-requests")).to_have_text(str(before + 1))

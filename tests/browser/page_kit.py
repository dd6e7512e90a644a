"""What the browser tests share: finding Chromium and the page's npm packages, the offline ``serve`` processes
and the static site the page is loaded from, and the steps every test takes on the page.

The fixtures built on these are in ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from e2e_procs import clean_env, cli
from playwright.sync_api import Page, expect

from helpers import HOST, ROOT, free_port
from procs import Process

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


def missing(message: str) -> None:
    """Fail under CI (the suite must not silently lose these tests), skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def chromium() -> str:
    # Debian's chromium here; the Chrome that GitHub's Ubuntu runners come with there (CHROMIUM names another).
    names = [os.environ.get("CHROMIUM", ""), "chromium", "google-chrome", "google-chrome-stable"]
    path = next((found for name in names if name and (found := shutil.which(name))), None)
    if path is None:
        missing("Debian's chromium is not installed (apt-get install -y chromium); the example page test needs it")
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


def install_web_packages() -> None:
    """The page's npm packages, installed with ``npm ci`` when missing or not the pinned versions."""
    if _npm_packages_current():
        return
    npm = shutil.which("npm")
    if npm is None:
        missing("npm is not installed; the example page needs `npm ci` in examples/web")
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

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of the ledger file (the ledger's and the thread store's tables; none before they exist)."""
        with contextlib.closing(sqlite3.connect(self.ledger, timeout=2.0)) as db:
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []
                raise

    def newest_request_id(self) -> str | None:
        rows = self.query("select request_id from request_log order by created_at desc limit 1")
        return None if not rows else str(rows[0][0])


def offline_serve(name: str, folder: Path, **env: str) -> Process:
    """``openrouter-functions serve`` with no credentials (offline mode), its ledger and tokens in ``folder``."""
    port = free_port()
    return Process(
        name,
        cli("serve", "--port", str(port)),
        clean_env(LEDGER_SQLITE_PATH=str(folder / "ledger.sqlite3"), **env),
        port,
    )


def ready(process: Process, folder: Path) -> OfflineServe:
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


def open_page(page: Page, url: str) -> None:
    """Load the page and wait until it has signed in offline and shown the usage it read."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    expect(page.locator("#workspace")).to_be_visible()
    assert not errors, errors
    expect(page.locator("#mode")).to_have_text("Offline mode")
    expect(page.get_by_test_id("offline-note")).to_be_visible()
    expect(page.get_by_test_id("who")).to_have_text("developer@localhost")


def usage_loaded(page: Page) -> int:
    """Today's request count once the usage panel has read the tables."""
    today = page.get_by_test_id("today-requests")
    expect(today).to_have_text(re.compile(r"^\d+$"))
    return int(today.inner_text())


def send(page: Page, client: str, prompt: str = PROMPT) -> None:
    page.locator(f'input[name="client"][value="{client}"]').check(force=True)  # the radio is styled as a button
    page.evaluate(RECORD_LENGTHS)
    page.fill("#prompt", prompt)
    page.click("#send")


def recorded_lengths(page: Page) -> list[int]:
    """The lengths the newest answer's text has had on screen since RECORD_LENGTHS ran."""
    lengths: list[int] = page.evaluate("window.__lengths")
    return lengths


def assert_streamed(page: Page, answer_text: str = ANSWER, mid_stream_shot: Path | None = None) -> None:
    """The answer is complete, and it grew on screen in many steps before the stream ended."""
    answer = page.get_by_test_id("answer").last
    if mid_stream_shot is not None:
        page.wait_for_function("() => (window.__lengths || []).length >= 2")
        page.screenshot(path=mid_stream_shot)  # usually caught while the answer streams
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-state", "done")
    expect(answer).to_have_text(answer_text)
    lengths = recorded_lengths(page)
    assert lengths == sorted(set(lengths)), f"the answer's text only ever grows: {lengths}"
    assert lengths[-1] == len(answer_text)
    assert len(lengths) >= 8, f"the answer appeared in too few steps to be a stream: {lengths}"
    expect(page.get_by_test_id("chat-error")).to_be_hidden()

"""The example web app (``examples/web``) in headless Chromium against real ``openrouter-functions serve`` processes.

The page is loaded from a plain static server on its own port — another origin than the functions, as
in production — with a ``config.js`` pointing at a ``serve`` in offline mode. Shown: the streamed answer
grows on screen piece by piece (supabase-js and the openai SDK), the usage panel reads the new request
from the ledger's tables, a 429 shows its message and the Retry-After wait, and an origin the functions
do not allow gets a failure and no answer. One more page is the one ``serve`` itself hosts at ``/app/``.
Conversations (the thread list, stop, reload) are ``test_threads_page.py``'s.

Needs Debian's ``chromium`` (``scripts/test.sh`` installs it; without it these tests fail when ``CI`` is
set and are skipped otherwise) and the page's npm packages (``npm ci`` in ``examples/web``, run here when
missing). Screenshots go to ``$BROWSER_SCREENSHOTS`` or a temporary folder. Fixtures: ``conftest.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from page_kit import OfflineServe, StaticSite, assert_streamed, open_page, send, usage_loaded
from playwright.sync_api import Page, expect


def test_supabase_js_streams_token_by_token_and_usage_shows_the_request(
    page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path
) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    before = usage_loaded(page)

    send(page, "supabase")
    assert_streamed(page, mid_stream_shot=screenshots / "supabase-js-mid-stream.png")

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
    open_page(page, site.url)
    before = usage_loaded(page)

    send(page, "openai")
    assert_streamed(page)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-client", "openai")
    expect(page.get_by_test_id("today-requests")).to_have_text(str(before + 1))
    page.screenshot(path=screenshots / "openai-sdk-done.png", full_page=True)


@pytest.mark.parametrize("client", ["supabase", "openai"])
def test_rate_limit_shows_the_message_and_the_wait(
    page: Page, site: StaticSite, strict_serve: OfflineServe, screenshots: Path, client: str
) -> None:
    site.point_at(strict_serve)
    open_page(page, site.url)
    usage_loaded(page)

    send(page, client, "Hello!")
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
    open_page(page, f"http://localhost:{site.port}/")

    send(page, client, "Hello!")
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
    open_page(page, f"{open_serve.url}/app/")
    before = usage_loaded(page)
    send(page, "supabase")
    assert_streamed(page)
    expect(page.get_by_test_id("today-requests")).to_have_text(str(before + 1))

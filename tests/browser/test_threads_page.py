"""Conversations in the example page (docs/threads.md), in headless Chromium against an offline ``serve``.

The page keeps its chats as threads: it sends only the new message with ``thread_id``, lists the user's
threads (``supabase.from("threads")``), loads a thread's messages, stops a generation through
``POST /chat/stop`` (from any tab), and after a reload follows an answer still being written by re-reading
its row. Shown here, with the page on its own origin as in production: a thread continued over two turns
(supabase-js, then the openai SDK), a stop from the same tab and from another one (the message stays
``stopped`` with the text so far), a reload mid-answer that resumes and completes, renaming and deleting.

The fake OpenRouter echoes the last user message a word at a time, 20 ms apart: a prompt of a few hundred
words makes an answer that takes seconds, long enough to stop or reload in the middle.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from page_kit import (
    OfflineServe,
    StaticSite,
    assert_streamed,
    offline_serve,
    open_page,
    ready,
    recorded_lengths,
    send,
    usage_loaded,
)
from playwright.sync_api import Page, expect

from openrouter_functions.threads import title_for

LONG_PROMPT = " ".join(f"w{n}" for n in range(1, 251))  # its echo streams for about 5 s
LONG_ANSWER = "Echo: " + LONG_PROMPT
THREAD_HASH = re.compile(r"#thread=([0-9a-f-]{36})$")


def _thread_id(page: Page) -> str:
    """The shown thread, from the page's address (the page puts it there once the server has named it)."""
    expect(page).to_have_url(THREAD_HASH)
    match = THREAD_HASH.search(page.url)
    assert match is not None
    return match.group(1)


def _messages(serve: OfflineServe, thread_id: str) -> list[dict[str, Any]]:
    columns = ("seq", "role", "content", "status", "stop_requested", "prompt_tokens")
    rows = serve.query(f"select {', '.join(columns)} from messages where thread_id = ? order by seq", thread_id)
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _answer_longer_than(page: Page, chars: int) -> None:
    page.wait_for_function(
        """(chars) => {
          const answers = document.querySelectorAll('[data-testid="answer"]');
          return answers.length && answers[answers.length - 1].textContent.length > chars;
        }""",
        arg=chars,
    )


def test_a_thread_is_continued_and_listed(
    page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path
) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    usage_loaded(page)
    threads = page.get_by_test_id("thread-list").locator("li.thread")
    before = len(open_serve.query("select id from threads"))
    expect(threads).to_have_count(before)

    first = "What is row level security, and why would a web app that talks to Supabase want it on every table?"
    send(page, "supabase", first)
    assert_streamed(page, "Echo: " + first)
    thread_id = _thread_id(page)
    expect(threads).to_have_count(before + 1)
    newest = threads.first  # newest first
    expect(newest).to_have_attribute("data-thread-id", thread_id)
    expect(newest).to_have_attribute("aria-current", "true")
    expect(newest.locator(".thread-title")).to_have_text(title_for(first))  # the server names it after the question
    expect(page.get_by_test_id("chat-title")).to_have_text(newest.locator(".thread-title").inner_text())

    second = "And how do I turn it on for a table that already has rows in it, without locking anybody out?"
    send(page, "openai", second)
    assert_streamed(page, "Echo: " + second)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-client", "openai")
    assert _thread_id(page) == thread_id  # the same thread, continued
    expect(threads).to_have_count(before + 1)
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "complete")

    stored = _messages(open_serve, thread_id)
    assert [(m["seq"], m["role"], m["content"], m["status"]) for m in stored] == [
        (1, "user", first, "complete"),
        (2, "assistant", "Echo: " + first, "complete"),
        (3, "user", second, "complete"),
        (4, "assistant", "Echo: " + second, "complete"),
    ]
    # The model saw the first turn with the second: the fake counts a token per 4 characters of all it got.
    assert stored[1]["prompt_tokens"] < len(first + first + second) // 4 <= stored[3]["prompt_tokens"]
    page.screenshot(path=screenshots / "thread-continued.png", full_page=True)

    # A new chat, then the thread again from the list; and after a reload, from the address.
    page.get_by_test_id("new-chat").click()
    expect(page.get_by_test_id("chat-title")).to_have_text("New chat")
    expect(page.get_by_test_id("answer")).to_have_count(0)
    expect(page).not_to_have_url(THREAD_HASH)
    newest.locator(".thread-open").click()
    expect(page.locator(".msg")).to_have_text([first, "Echo: " + first, second, "Echo: " + second])
    page.reload()
    expect(page.locator(".msg")).to_have_text([first, "Echo: " + first, second, "Echo: " + second])
    expect(threads.first).to_have_attribute("aria-current", "true")


def test_renaming_and_deleting_a_thread(page: Page, site: StaticSite, open_serve: OfflineServe) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    send(page, "supabase", "A chat to rename and then delete")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "complete")
    thread_id = _thread_id(page)
    item = page.locator(f'li.thread[data-thread-id="{thread_id}"]')

    item.get_by_role("button", name="Rename", exact=True).click()
    page.get_by_label("New title").fill("Renamed here")
    page.get_by_label("New title").press("Enter")
    expect(item.locator(".thread-title")).to_have_text("Renamed here")
    expect(page.get_by_test_id("chat-title")).to_have_text("Renamed here")
    assert open_serve.query("select title from threads where id = ?", thread_id) == [("Renamed here",)]

    page.once("dialog", lambda dialog: dialog.accept())
    item.get_by_role("button", name="Delete", exact=True).click()
    expect(item).to_have_count(0)
    expect(page.get_by_test_id("chat-title")).to_have_text("New chat")
    expect(page.get_by_test_id("answer")).to_have_count(0)
    assert open_serve.query("select count(*) from messages where thread_id = ?", thread_id) == [(0,)]
    assert open_serve.query("select count(*) from threads where id = ?", thread_id) == [(0,)]


def _assert_stopped(page: Page, serve: OfflineServe, thread_id: str) -> str:
    """The answer is marked stopped, with part of the text; the store has the same; returns that text."""
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer.get_by_test_id("status-note")).to_have_text("Stopped")
    expect(page.get_by_test_id("chat-error")).to_be_hidden()
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    text = answer.get_by_test_id("answer").inner_text()
    assert LONG_ANSWER.startswith(text) and len("Echo: w1") < len(text) < len(LONG_ANSWER), text
    stored = _messages(serve, thread_id)[-1]
    assert (stored["role"], stored["status"], stored["content"]) == ("assistant", "stopped", text)
    return text


def test_stop_in_this_tab(page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    send(page, "openai", LONG_PROMPT)
    _answer_longer_than(page, 40)
    thread_id = _thread_id(page)
    page.locator("#stop").click()
    text = _assert_stopped(page, open_serve, thread_id)
    page.screenshot(path=screenshots / "stopped-here.png", full_page=True)
    # Stopped for good: the store's text does not grow any more, and the thread takes a new turn.
    page.wait_for_timeout(1000)
    assert _messages(open_serve, thread_id)[-1]["content"] == text
    send(page, "supabase", "after the stop")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "complete")
    expect(page.get_by_test_id("answer").last).to_have_text("Echo: after the stop")


def test_stop_from_another_tab(page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    send(page, "supabase", "a first question")
    expect(page.locator(".msg.assistant").last).to_have_attribute("data-status", "complete")
    thread_id = _thread_id(page)
    # The same user has the thread open in another tab, then asks a long question in the first one.
    other = page.context.new_page()
    open_page(other, f"{site.url}#thread={thread_id}")
    expect(other.locator(".msg")).to_have_count(2)
    send(page, "supabase", LONG_PROMPT)
    _answer_longer_than(page, 40)

    # The other tab, not knowing, asks too: the thread is busy, and it shows the running answer instead,
    # followed from the store.
    send(other, "openai", "me too")
    error = other.get_by_test_id("chat-error")
    expect(error).to_contain_text("409 · thread_busy")
    followed = other.locator(".msg.assistant").last
    expect(followed).to_have_attribute("data-status", "streaming")
    expect(other.locator(".msg")).to_have_count(4)  # "me too" was not stored
    expect(other.locator("#prompt")).to_have_value("me too")  # kept to send later
    expect(other.locator("#stop")).to_be_visible()
    expect(other.locator("#send")).to_be_disabled()
    shown = len(followed.get_by_test_id("answer").inner_text())
    other.wait_for_function(
        """(shown) => {
          const answers = document.querySelectorAll('[data-testid="answer"]');
          return answers[answers.length - 1].textContent.length > shown;
        }""",
        arg=shown,
    )  # it grows there too
    other.screenshot(path=screenshots / "followed-in-another-tab.png", full_page=True)

    other.locator("#stop").click()  # the stop goes to the server, which ends the stream in the first tab
    text = _assert_stopped(page, open_serve, thread_id)
    expect(followed).to_have_attribute("data-status", "stopped")
    expect(followed.get_by_test_id("answer")).to_have_text(text)
    expect(other.locator("#send")).to_be_enabled()
    page.screenshot(path=screenshots / "stopped-from-another-tab.png", full_page=True)


def test_a_reload_mid_answer_resumes_it(
    page: Page, site: StaticSite, open_serve: OfflineServe, screenshots: Path
) -> None:
    site.point_at(open_serve)
    open_page(page, site.url)
    send(page, "supabase", LONG_PROMPT)
    _answer_longer_than(page, 40)
    thread_id = _thread_id(page)

    page.reload()  # the request ends with the page; the generation goes on (background: true)
    answer = page.locator(".msg.assistant").last
    expect(answer).to_have_attribute("data-status", "streaming")
    page.evaluate(
        """() => {
          window.__lengths = [];
          const transcript = document.getElementById("transcript");
          new MutationObserver(() => {
            const answers = transcript.querySelectorAll('[data-testid="answer"]');
            const length = answers.length ? answers[answers.length - 1].textContent.length : 0;
            if (window.__lengths[window.__lengths.length - 1] !== length) window.__lengths.push(length);
          }).observe(transcript, { childList: true, subtree: true, characterData: true });
        }"""
    )
    expect(page.locator("#stop")).to_be_visible()
    page.wait_for_function("() => (window.__lengths || []).length >= 2")
    page.screenshot(path=screenshots / "resumed-after-reload.png", full_page=True)

    expect(answer).to_have_attribute("data-status", "complete", timeout=20_000)
    expect(answer.get_by_test_id("answer")).to_have_text(LONG_ANSWER)
    lengths = recorded_lengths(page)
    assert lengths == sorted(set(lengths)), f"the followed answer only ever grows: {lengths}"
    assert len(lengths) >= 3, f"the answer should be seen growing after the reload: {lengths}"
    expect(page.locator("#stop")).to_be_hidden()
    expect(page.locator("#send")).to_be_enabled()
    expect(page.get_by_test_id("status-note")).to_have_count(0)
    stored = _messages(open_serve, thread_id)
    assert [(m["role"], m["status"]) for m in stored] == [("user", "complete"), ("assistant", "complete")]
    assert stored[1]["content"] == LONG_ANSWER
    page.screenshot(path=screenshots / "completed-after-reload.png", full_page=True)


def test_a_server_that_keeps_no_threads_gets_the_history_from_the_page(
    page: Page, site: StaticSite, tmp_path: Path
) -> None:
    process = offline_serve("serve (offline, no store)", tmp_path, LEDGER_BACKEND="off")
    try:
        serve = ready(process, tmp_path)
        site.point_at(serve)
        open_page(page, site.url)
        send(page, "supabase", "first")  # sent with thread_id, refused (400 threads_unavailable), sent again
        expect(page.get_by_test_id("answer").last).to_have_text("Echo: first")
        expect(page.get_by_test_id("threads-note")).to_contain_text("This server keeps no conversations")
        expect(page.get_by_test_id("threads-error")).to_be_hidden()
        send(page, "openai", "second")
        expect(page.get_by_test_id("answer").last).to_have_text("Echo: second")
        expect(page.locator(".msg")).to_have_count(4)
        expect(page.get_by_test_id("chat-error")).to_be_hidden()
        expect(page).not_to_have_url(THREAD_HASH)
    finally:
        process.stop()

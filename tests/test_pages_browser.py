"""The website in a real browser against real server processes: chat and watch pages
live, the buttons, hostile text, a server restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser import chromium, log_in, new_page, open_live, screenshot
from tests.conftest import use_slow_model
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = ["Alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta."]
REPLY = "".join(TOKENS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def host(django_db_setup, django_db_blocker) -> Iterator[str]:
    with live_servers("uvicorn", 1) as hosts:
        yield hosts[0]


def record_bot_text(page: Page) -> None:
    """Keep every text the page shows in a bot turn while it changes."""
    page.evaluate(
        """() => {
            window.__seen = [];
            new MutationObserver(() => {
                const body = document.querySelector('.turn.role-bot .body');
                if (body) window.__seen.push(body.textContent);
            }).observe(document.getElementById('transcript'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )


def test_a_reply_streams_live_to_the_chat_page_and_an_anonymous_watch_page(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.15, tokens=TOKENS)
    chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    assert watch.locator("#composer, textarea").count() == 0
    expect(watch.locator("#watchers")).to_have_text("1 watching")
    record_bot_text(watch)

    chat.fill("#text", "Hello, **bot**")
    chat.press("#text", "Enter")

    for page in (chat, watch):
        expect(page.locator(".turn.role-user .body")).to_have_text("Hello, bot")
        expect(page.locator(".turn.role-user strong")).to_have_text("bot")
        expect(page.locator(".turn.role-bot .body")).to_have_text(REPLY)
        expect(page.locator(".turn.role-bot")).not_to_have_class("generating")
    assert chat.input_value("#text") == ""
    seen = [text.strip() for text in watch.evaluate("window.__seen") if text.strip()]
    partial = {text for text in seen if text != REPLY}
    # Token by token: several growing prefixes of the reply before the whole of it.
    assert len(partial) >= 3, seen
    assert all(REPLY.startswith(text) for text in partial), partial
    for page in (chat, watch):
        assert page.errors == []  # type: ignore[attr-defined]

    index = new_page(browser)
    index.goto(f"http://{host}/")
    expect(index.locator("tr[data-channel=lobby] td.num")).to_have_text("2")
    screenshot(index, "index")
    screenshot(chat, "channel")
    screenshot(watch, "watch")

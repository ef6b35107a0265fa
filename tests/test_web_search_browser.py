"""The composer's "Search the web" (a message's web_search) in a real browser against a
real server process whose instance has a search endpoint: the toggle sends web_search:
true for that message only, the model is offered the tool; a completion-mode channel
hides it. Without an endpoint the page has no toggle (tests/test_chat_page_browser.py's
server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from chat.models import Channel, Turn
from chat.services import update_channel
from tests.browser import chat_page, no_script_errors, send
from tests.conftest import use_slow_model
from tests.processes import live_servers

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def host(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    # Never fetched: only the tool's offer to the model is looked at.
    with live_servers("uvicorn", 1, WEB_SEARCH_URL="http://127.0.0.1:9/search") as hosts:
        yield hosts[0]


def offered(body: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in body.get("tools") or []]


def test_search_the_web_asks_for_web_search_for_that_message_only(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Found."])
    chat = chat_page(browser, host, "alice")
    toggle = chat.locator("#web-search")
    expect(toggle).to_be_visible()
    toggle.check()
    send(chat, "What is new?")
    expect(chat.locator(".turn.role-bot:not(.generating) .body")).to_have_text("Found.")
    assert "web_search" in offered(openai_server.requests[-1])
    assert Turn.objects.get(role="user").request["web_search"] is True
    toggle.uncheck()
    send(chat, "And now?")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    assert "web_search" not in offered(openai_server.requests[-1])
    no_script_errors(chat)


def test_a_completion_mode_channel_hides_it(host, browser, channel, alice):
    chat = chat_page(browser, host, "alice")
    expect(chat.locator("#web-search")).to_be_visible()
    update_channel(channel=channel, user=alice, changes={"mode": Channel.Mode.COMPLETION})
    expect(chat.locator("#web-search-toggle")).to_be_hidden()
    no_script_errors(chat)

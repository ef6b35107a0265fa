"""A reply's citations in a real browser (issue 16), against a real server process: the
numbered sources show under the reply on the chat page and a private room's watch page
before the model's first token, each linking to its passage, names and snippets as text
(a hostile document name and passage run nothing); after a reload, history brings them."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import expect

from chat.models import ApiToken, Turn
from chat.services import add_member, create_channel
from tests.browser import chat_page, new_page, no_script_errors, open_live, screenshot
from tests.conftest import add_provider, use_provider, wait_until_no_generation
from tests.knowledge_rows import add_document, make_base

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_NAME = '<img src=x onerror="window.pwned=1">.pdf'
PASSAGES = [
    (2, "Refunds: <script>window.pwned=2</script> a purchase may be returned within 45 days for a refund."),
    (4, "Parking: staff park in the north lot; visitors use the south lot."),
]


def test_citations_show_before_the_first_token_on_chat_and_watch_pages_and_link_to_the_passage(
    host, browser, alice, bob, openai_server
):
    room = create_channel(name="backroom", owner=alice, visibility="private")
    add_member(actor=alice, channel=room, user=bob)
    openai_server.behaviour.stall_after = 0  # the model never sends a token: sources come first
    add_provider("llama", openai_server.base_url, context_window=100_000)
    use_provider(room, "llama")
    base = make_base("Staff <b>handbook</b>", channel=room)
    add_document(base, HOSTILE_NAME, PASSAGES)

    chat = chat_page(browser, host, "alice", "backroom")
    watch = open_live(new_page(browser), f"http://{host}/watch/backroom?key={room.watch_key}")
    chat.fill("#text", "How many days do I have to return a purchase for a refund?")
    chat.press("#text", "Enter")

    for page in (chat, watch):
        reply = page.locator(".turn.role-bot")
        first = reply.locator(".sources .source").first
        expect(first).to_be_visible(timeout=30_000)
        expect(reply.locator(".body")).to_have_text("")  # no token yet
        anchor = first.locator("a")
        expect(anchor).to_have_text(f"[1] {HOSTILE_NAME}, page 2")
        expect(first.locator(".source-kb")).to_have_text(" — Staff <b>handbook</b>")
        expect(first.locator(".snippet")).to_contain_text("<script>window.pwned=2</script>")
        assert reply.locator(".sources img, .sources script, .sources b").count() == 0
    turn = Turn.objects.filter(role="bot").latest("id")
    chunk = turn.sources[0]["chunk"]
    href = chat.locator(".sources .source a").first.get_attribute("href")
    assert href == f"/knowledge/{base.pk}/?chunk={chunk}&turn={turn.pk}"
    watch_href = watch.locator(".sources .source a").first.get_attribute("href")
    assert watch_href == f"/knowledge/{base.pk}/?chunk={chunk}&turn={turn.pk}&key={room.watch_key}"
    # The passage the link opens is served to whoever may read the citing reply.
    passage = httpx.get(
        f"http://{host}/api/knowledge-bases/{base.pk}/chunks/{chunk}?turn={turn.pk}&key={room.watch_key}",
        timeout=10,
    )
    assert passage.status_code == 200 and passage.json()["text"].startswith("Refunds:")
    screenshot(chat, "reply-citations")

    # Stopped, the reply keeps its sources; a reload brings them from history.
    httpx.post(
        f"http://{host}/api/channels/backroom/interrupt",
        headers={"Authorization": f"Bearer {ApiToken.issue(alice)}"},
        timeout=10,
    )
    wait_until_no_generation()
    for page in (chat, watch):
        page.reload()
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
        expect(page.locator(".turn.role-bot .sources .source")).to_have_count(len(turn.sources))
        assert page.evaluate("window.pwned") is None
    no_script_errors(chat, watch)

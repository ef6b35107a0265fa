"""Compaction in the page (issue 17), in a real browser against a real server process:
the checkpoint appears live, folded after the turn it summarises up to, unfolds to its
summary as text, comes again with a fresh page, and goes when a summarised turn is
hidden. The offline demo is the model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from chat import services
from chat.agents.checkpoints import latest
from chat.models import Provider, Turn
from tests.browser import chat_page, no_script_errors, screenshot, send
from tests.conftest import use_provider, wait_for, wait_until_no_generation
from tests.processes import live_servers
from tests.test_compaction import seed

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def compacting_host(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with live_servers("uvicorn", 1, COMPACT_AT="0.7") as hosts:
        yield hosts[0]


def test_the_checkpoint_shows_folded_in_place_and_goes_with_a_hidden_turn(
    compacting_host, browser, channel, alice, mona
):
    # The server process made the demo provider as it started.
    Provider.objects.update_or_create(name="demo", defaults={"kind": "demo", "context_window": 500})
    use_provider(channel, "demo", max_tokens=40)
    turns = seed(channel, alice, 10, label="Point")
    seed_hostile = Turn.objects.get(pk=turns[2].pk)
    seed_hostile.text = "<img src=x onerror=window.__xss=1> is worth keeping. " + seed_hostile.text
    seed_hostile.save()
    chat = chat_page(browser, compacting_host, "alice")
    send(chat, "Tell me more")

    folded = chat.locator("#transcript .checkpoint")
    expect(folded).to_have_count(1, timeout=15_000)
    expect(folded.locator("summary")).to_have_text("Earlier conversation summarised (7 turns)")
    checkpoint = wait_for(lambda: latest(channel.active_session.pk))
    # Right after the turn it summarises up to.
    before = folded.locator("xpath=preceding-sibling::li[1]")
    expect(before).to_have_attribute("data-turn-id", str(checkpoint.through_turn_id))
    folded.locator("summary").click()
    expect(folded.locator(".checkpoint-summary")).to_contain_text("- alice: Point 0 is worth keeping.")
    expect(folded.locator(".checkpoint-summary")).to_contain_text("<img src=x onerror=window.__xss=1>")
    assert chat.locator("#transcript .checkpoint img").count() == 0
    screenshot(chat, "compaction-checkpoint")

    chat.reload()
    expect(chat.locator("#transcript .checkpoint")).to_have_count(1)

    services.hide_turn(actor=mona, turn=Turn.objects.get(pk=turns[4].pk))
    expect(chat.locator("#transcript .checkpoint")).to_have_count(0)
    assert chat.evaluate("window.__xss") is None
    no_script_errors(chat)
    wait_until_no_generation()

"""A reply's tool calls in a real browser (issue 17), against a real server process and a
fake model that streams scripted tool calls: each step is a folded card in place in the
reply's text, on the chat page and on a watch page opened mid-run; a call that needs
approval pauses until the author of the message clicks Approve or Deny (others see it
wait, with no buttons); tool names, arguments and results are hostile text and run
nothing; a result that is one person's data is hidden from the rest of the room and
shown to that person on asking."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from playwright.sync_api import Dialog, Page, expect

from chat.models import Membership, Turn
from tests.browser import chat_page, new_page, no_script_errors, open_live, screenshot, send
from tests.conftest import add_provider, use_provider, wait_until_no_generation
from tests.knowledge_rows import add_document, make_base

pytestmark = pytest.mark.django_db(transaction=True)

ATTACK = "<img src=x onerror=alert(1)>"
DURATION = re.compile(r"^\d+(\.\d)? m?s$")
GENERATING = re.compile(r"\bgenerating\b")


def tool_channel(channel: Any, server: Any, tools: list[str], approval: tuple[str, ...] = ()) -> None:
    add_provider("tooly", server.base_url)
    use_provider(channel, "tooly")
    channel.tools = tools
    channel.tools_requiring_approval = list(approval)
    channel.save()


def call(call_id: str, name: str, **arguments: Any) -> dict[str, str]:
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments)}


def body_parts(page: Page) -> list[str]:
    """The reply's body in order: "card:<call id>" for a step, else the text."""
    return page.locator(".turn.role-bot .body").evaluate(
        """body => [...body.children].map(child => child.classList.contains("step")
             ? `card:${child.dataset.callId}` : child.textContent.trim())"""
    )


def test_steps_show_in_place_on_chat_and_watch_pages_and_the_author_approves(
    host, browser, channel, alice, bob, carol, openai_server
):
    behaviour = openai_server.behaviour
    behaviour.tool_text = ["Let me work it out."]
    behaviour.tool_calls = [[call("c1", "calculator", expression="6*7"), call("t1", "current_time")]]
    behaviour.tool_fragment, behaviour.tool_interleave = 4, True  # arguments streamed in pieces
    behaviour.tokens = ["It is", " 42."]
    tool_channel(channel, openai_server, ["calculator", "current_time"], approval=("calculator",))
    Membership.objects.create(user=carol, channel=channel)

    author = chat_page(browser, host, "bob")
    other = chat_page(browser, host, "carol")
    send(author, "What is 6*7?")

    # The calculator waits for approval: its author sees the buttons and the arguments.
    waiting = author.locator('.step[data-call-id="c1"]')
    expect(waiting).to_have_attribute("data-status", "awaiting_approval", timeout=30_000)
    expect(waiting.locator(".step-state")).to_have_text("waiting for approval")
    expect(waiting.locator(".step-arguments")).to_have_text(json.dumps({"expression": "6*7"}, indent=2))
    expect(waiting.locator(".approve-tool")).to_be_visible()
    # current_time needed nobody: it ran at once, folded.
    clock = author.locator('.step[data-call-id="t1"]')
    expect(clock).to_have_attribute("data-status", "ok")
    assert clock.locator("details").get_attribute("open") is None
    # Another member sees it wait, without buttons.
    expect(other.locator('.step[data-call-id="c1"] .step-state')).to_have_text("waiting for approval")
    assert other.locator(".approve-tool, .deny-tool").count() == 0

    # A watcher joining now gets the steps from history: the cards in place, no buttons.
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    expect(watch.locator('.step[data-call-id="c1"]')).to_have_attribute("data-status", "awaiting_approval")
    assert watch.locator(".approve-tool, .deny-tool").count() == 0
    assert body_parts(watch) == ["Let me work it out.", "card:c1", "card:t1"]

    author.locator('.step[data-call-id="c1"] .approve-tool').click()
    for page in (author, other, watch):
        card = page.locator('.step[data-call-id="c1"]')
        expect(card).to_have_attribute("data-status", "ok")
        expect(card.locator(".step-state")).to_have_text("✓")
        expect(page.locator(".turn.role-bot")).not_to_have_class(GENERATING)
        assert body_parts(page) == ["Let me work it out.", "card:c1", "card:t1", "It is 42."]
        expect(page.locator(".turn.role-bot .activity")).to_be_hidden()
        assert page.locator(".approve-tool, .deny-tool").count() == 0
    watch.locator('.step[data-call-id="c1"] summary').click()
    unfolded = watch.locator('.step[data-call-id="c1"]')
    expect(unfolded.locator(".step-result")).to_have_text("42")
    expect(unfolded.locator(".step-approved")).to_have_text("approved by bob")
    expect(unfolded.locator(".step-time")).to_have_text(DURATION)

    # The author's page: the approved card still unfolded, the clock's folded.
    expect(author.locator('.step[data-call-id="c1"] .step-result')).to_be_visible()
    author.locator(".turn.role-bot").scroll_into_view_if_needed()
    screenshot(author, "tools")  # docs/screenshots/tools.png is this one

    # After a reload, history brings the finished steps in place.
    watch.reload()
    expect(watch.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(watch.locator('.step[data-call-id="c1"]')).to_have_attribute("data-status", "ok")
    assert body_parts(watch) == ["Let me work it out.", "card:c1", "card:t1", "It is 42."]
    no_script_errors(author, other, watch)


def test_the_author_denies_a_call_and_the_model_is_told(host, browser, channel, alice, bob, openai_server):
    behaviour = openai_server.behaviour
    behaviour.tool_calls = [[call("c1", "calculator", expression="2**10")]]
    behaviour.tokens = ["I was not allowed to calculate."]
    tool_channel(channel, openai_server, ["calculator"], approval=("calculator",))

    author = chat_page(browser, host, "bob")
    owner = chat_page(browser, host, "alice")
    send(author, "What is 2**10?")
    # The channel's owner may decide too; the author does. The status line says why
    # the reply waits, until its next token.
    expect(owner.locator('.step[data-call-id="c1"] .deny-tool')).to_be_visible(timeout=30_000)
    expect(owner.locator(".turn.role-bot .activity")).to_have_text("waiting for approval of calculator…")
    author.locator('.step[data-call-id="c1"] .deny-tool').click()
    for page in (author, owner):
        card = page.locator('.step[data-call-id="c1"]')
        expect(card).to_have_attribute("data-status", "denied")
        expect(card.locator(".step-state")).to_have_text("denied")
        expect(page.locator(".turn.role-bot .body")).to_contain_text("I was not allowed to calculate.")
        assert page.locator(".approve-tool, .deny-tool").count() == 0
    card = author.locator('.step[data-call-id="c1"]')
    expect(card.locator(".step-approved")).to_have_text("denied by bob")
    expect(card.locator(".step-result")).to_contain_text("denied by bob")
    wait_until_no_generation()
    [step] = Turn.objects.get(role="bot").steps
    assert step["status"] == "denied" and step["approved_by"] == "bob"
    no_script_errors(author, owner)


def test_hostile_tool_names_arguments_and_results_run_nothing(
    host, browser, channel, alice, bob, openai_server
):
    behaviour = openai_server.behaviour
    behaviour.tool_calls = [[call("c1", "calculator", expression=ATTACK), call("c2", ATTACK, note=ATTACK)]]
    behaviour.tokens = ["Done."]
    tool_channel(channel, openai_server, ["calculator"])

    author = chat_page(browser, host, "bob")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    dialogs: list[str] = []

    def noted(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for page in (author, watch):
        page.on("dialog", noted)
    send(author, "Break the page.")
    for page in (author, watch):
        expect(page.locator(".turn.role-bot .body")).to_contain_text("Done.", timeout=30_000)
        for call_id in ("c1", "c2"):
            expect(page.locator(f'.step[data-call-id="{call_id}"]')).to_have_attribute("data-status", "error")
            page.locator(f'.step[data-call-id="{call_id}"] summary').click()
        first, second = page.locator('.step[data-call-id="c1"]'), page.locator('.step[data-call-id="c2"]')
        expect(first.locator(".step-arguments")).to_contain_text(ATTACK)
        expect(first.locator(".step-result")).to_contain_text("Error:")
        expect(second.locator(".step-name")).to_have_text(ATTACK)
        expect(second.locator(".step-result")).to_contain_text(ATTACK)
        assert page.locator(".turn img, .step img, .step script").count() == 0
    assert dialogs == []
    no_script_errors(author, watch)


def test_a_result_from_a_personal_base_is_hidden_from_the_room_and_shown_to_its_owner(
    host, browser, channel, alice, bob, openai_server
):
    base = make_base("Alice's notes", owner=alice, attach_to=channel)
    add_document(base, "diary.txt", [(None, "The locker code of the gym is 4711.")])
    behaviour = openai_server.behaviour
    behaviour.tool_calls = [[call("k1", "kb_search", query="locker code of the gym")]]
    behaviour.tokens = ["Found it."]
    tool_channel(channel, openai_server, ["kb_search"])

    author = chat_page(browser, host, "bob")
    owner = chat_page(browser, host, "alice")
    send(author, "Where is that code?")
    for page in (author, owner):
        card = page.locator('.step[data-call-id="k1"]')
        expect(card).to_have_attribute("data-status", "ok", timeout=30_000)
        card.locator("summary").click()
        expect(card.locator(".step-redacted")).to_contain_text("result hidden: alice's personal data")
        assert card.locator(".step-result").count() == 0
    # Only its owner may read it back.
    assert author.locator('.step[data-call-id="k1"] .step-show').count() == 0
    owner.locator('.step[data-call-id="k1"] .step-show').click()
    revealed = owner.locator('.step[data-call-id="k1"] .step-revealed')
    expect(revealed).to_contain_text("4711")
    expect(owner.locator('.step[data-call-id="k1"] .step-redacted')).to_have_text(
        "your personal data: only you can see this result"
    )
    assert "4711" not in author.locator('.step[data-call-id="k1"]').inner_text()
    no_script_errors(author, owner)

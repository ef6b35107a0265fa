"""The agent and tools settings in a real browser (issue 17), against a real server
process: the owner switches tools off, asks approval for one, binds the room to an
agent and lets members choose; a member's composer then offers the agents and the
message carries the one picked."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from chat.models import Agent, Channel, Turn
from chat.services import update_channel
from tests.browser import chat_page, no_script_errors, send
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_owner_sets_tools_and_agent_and_a_member_picks_an_agent(host, browser, channel, alice, bob):
    Agent.objects.create(name="helper", description="Helps <b>kindly</b>")
    Agent.objects.create(name="critic")
    update_channel(channel=channel, user=alice, changes={"tools": ["calculator", "current_time"]})
    owner = chat_page(browser, host, "alice")
    member = chat_page(browser, host, "bob")
    # A member of a "fixed" room gets no agent picker.
    expect(member.locator("#choice-agent")).to_be_hidden()

    owner.click(".settings summary")
    expect(owner.locator("#tools-settings")).to_be_visible()
    calculator = owner.locator('#tools-checklist li[data-tool="calculator"]')
    expect(calculator.locator('input[name="tools"]')).to_be_checked()
    owner.locator('#tools-checklist li[data-tool="current_time"] input[name="tools"]').uncheck()
    calculator.locator('input[name="tools_requiring_approval"]').check()
    # The agent's description is text, not markup.
    helper = owner.locator('#channel-agent option[value="helper"]')
    expect(helper).to_have_text("helper — Helps <b>kindly</b>")
    owner.select_option("#channel-agent", "helper")
    owner.check("#agent-choice")
    owner.check("#channel-memory")
    owner.click("#settings-form button[type=submit]")
    wait_for(lambda: Channel.objects.get(pk=channel.pk).agent_id is not None)
    saved = Channel.objects.get(pk=channel.pk)
    assert saved.tools == ["calculator"] and saved.tools_requiring_approval == ["calculator"]
    assert saved.agent_choice == "members" and saved.memory is True

    # The member's page follows live (channel_updated): the picker appears.
    member.click("#choices summary")
    picker = member.locator("#choice-agent")
    expect(picker).to_be_visible()
    expect(picker.locator("option").first).to_have_text("channel's agent (helper)")
    picker.select_option("critic")
    send(member, "Who answers?")
    asked = wait_for(lambda: Turn.objects.filter(role="user", text="Who answers?").first())
    assert asked.request["agent"] == "critic"
    no_script_errors(owner, member)

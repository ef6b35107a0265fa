"""Instructions and the channel's member policy on the pages, in a real browser against
real server processes: the composer's instruction picker, the owner's settings editor
(the channel's instruction and member_params), and the account page's own
instructions (issue 14)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from chat import services
from chat.models import Channel, Instruction, Turn
from tests.browser import chat_page, log_in, no_script_errors, open_live, send
from tests.conftest import use_slow_model

pytestmark = pytest.mark.django_db(transaction=True)


def system_prompt(request: dict) -> str:
    return str(next(m["content"] for m in request["messages"] if m["role"] == "system"))


def shared_instruction(name: str, text: str) -> Instruction:
    # Shared ones are the admins' (the admin writes them straight to the table).
    return Instruction.objects.create(owner=None, name=name, text=text)


# --- the composer's instruction picker ----------------------------------------------------------


def test_the_instruction_picked_in_the_composer_reaches_the_model(host, browser, channel, bob, openai_server):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Yes."])
    shared_instruction("Concise", "Answer in one sentence.")
    services.create_instruction(user=bob, name="Pirate", text="Talk like a pirate.")
    chat = chat_page(browser, host, "bob")
    expect(chat.locator("#choices")).to_be_visible()
    chat.click("#choices summary")
    picker = chat.locator("#choice-instruction")
    expect(picker.locator("option")).to_have_text(["channel's default", "none", "Concise", "Pirate (mine)"])

    chat.select_option("#choice-instruction", label="Pirate (mine)")
    send(chat, "Hello")
    expect(chat.locator(".turn.role-bot:not(.generating) .body")).to_have_text("Yes.")
    assert system_prompt(openai_server.requests[-1]).startswith("Talk like a pirate.\n\n")
    assert Turn.objects.get(role="bot").instruction == "Pirate"
    no_script_errors(chat)


def test_none_overrides_the_channels_instruction_for_one_message(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Fine."])
    concise = shared_instruction("Concise", "Answer in one sentence.")
    services.update_channel(channel=channel, user=alice, changes={"instruction": concise.pk})
    chat = chat_page(browser, host, "alice")
    chat.click("#choices summary")
    expect(chat.locator("#choice-instruction option").first).to_have_text("channel's default (Concise)")

    send(chat, "First")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(1)
    assert "Answer in one sentence." in str(openai_server.requests[-1]["messages"])

    chat.select_option("#choice-instruction", "none")
    send(chat, "Second")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    assert "Answer in one sentence." not in str(openai_server.requests[-1]["messages"])
    bots = Turn.objects.filter(role="bot").order_by("id")
    assert [bot.instruction for bot in bots] == ["Concise", ""]
    assert Turn.objects.filter(role="user").latest("id").request == {"instruction": None}
    no_script_errors(chat)


# --- the owner's settings editor -------------------------------------------------------------


def open_settings(page: Page) -> None:
    page.click(".settings summary")
    expect(page.locator("#member-policy")).to_be_visible()


def test_the_owners_policy_edit_limits_what_a_members_picker_shows(
    host, browser, channel, alice, bob, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0)
    concise = shared_instruction("Concise", "Answer in one sentence.")
    owner = chat_page(browser, host, "alice")
    member = chat_page(browser, host, "bob")
    expect(member.locator(".settings")).to_have_count(0)
    expect(member.locator("#choice-model")).to_be_hidden()

    open_settings(owner)
    owner.check('#policy-models input[value="slow/test-model"]')
    owner.fill("#policy-temperature-min", "0.2")
    owner.fill("#policy-temperature-max", "0.8")
    owner.fill("#policy-max_tokens-max", "64")
    owner.check("#policy-thinking")
    owner.select_option("#channel-instruction", str(concise.pk))
    owner.click("#settings-form button[type=submit]")
    expect(owner.locator("#notice")).to_have_text("Settings saved.")

    channel.refresh_from_db()
    assert channel.member_params == {
        "models": ["slow/test-model"],
        "temperature": {"min": 0.2, "max": 0.8},
        "max_tokens": {"max": 64},
        "thinking": True,
    }
    assert channel.instruction_id == concise.pk
    # The member's open page follows live (channel_updated).
    member.click("#choices summary")
    expect(member.locator("#choice-model option")).to_have_text(["channel's model", "slow/test-model"])
    temperature = member.locator('#choice-params input[name="temperature"]')
    expect(temperature).to_have_attribute("min", "0.2")
    expect(temperature).to_have_attribute("max", "0.8")
    expect(member.locator('#choice-params input[name="max_tokens"]')).to_have_attribute("max", "64")
    assert member.locator('#choice-params input[name="top_p"]').count() == 0
    expect(member.locator("#thinking-toggle")).to_be_visible()
    expect(member.locator("#choice-instruction option").first).to_have_text("channel's default (Concise)")

    # Taking the models away again hides the model picker.
    owner.uncheck('#policy-models input[value="slow/test-model"]')
    owner.click("#settings-form button[type=submit]")
    expect(member.locator("#choice-model")).to_be_hidden()
    no_script_errors(owner, member)


def test_a_bad_policy_value_shows_the_servers_error_next_to_its_field(host, browser, channel, alice):
    owner = chat_page(browser, host, "alice")
    open_settings(owner)
    owner.fill("#policy-temperature-min", "1.5")
    owner.fill("#policy-temperature-max", "0.5")
    owner.fill("#policy-top_p-max", "3")
    owner.click("#settings-form button[type=submit]")
    expect(owner.locator('[data-error-for="member_params.temperature"]')).to_have_text(
        "Must not be greater than max."
    )
    expect(owner.locator('[data-error-for="member_params.top_p"]')).to_contain_text("required")
    expect(owner.locator('[data-error-for="member_params.top_p"]')).to_contain_text("less than or equal to 1")
    expect(owner.locator("#notice")).to_have_text("Invalid member_params.")
    assert Channel.objects.get(pk=channel.pk).member_params == {}
    no_script_errors(owner)


def test_a_moderator_edits_the_policy_and_a_member_sees_no_editor(host, browser, channel, mona, bob):
    moderator = chat_page(browser, host, "mona")
    open_settings(moderator)
    moderator.fill("#policy-top_k-min", "1")
    moderator.fill("#policy-top_k-max", "50")
    moderator.click("#settings-form button[type=submit]")
    expect(moderator.locator("#notice")).to_have_text("Settings saved.")
    assert Channel.objects.get(pk=channel.pk).member_params == {"top_k": {"min": 1, "max": 50}}
    member = chat_page(browser, host, "bob")
    expect(member.locator("#settings-form")).to_have_count(0)
    expect(member.locator('#choice-params input[name="top_k"]')).to_have_attribute("max", "50")


# --- the account page ---------------------------------------------------------------------------


def test_an_instruction_made_on_the_account_page_appears_in_the_picker(
    host, browser, channel, bob, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Arr."])
    page = log_in(browser, host, "bob")
    page.goto(f"http://{host}/account/")
    expect(page.locator("#my-instructions .empty")).to_be_visible()
    page.click("#new-instruction summary")
    page.fill("#id_new_instruction_name", "<b>Pirate</b>")
    page.fill("#id_new_instruction_text", "Talk like a pirate.")
    page.click("#create-instruction")
    expect(page.locator("#my-instructions .instruction-name")).to_have_text("<b>Pirate</b>")
    created = Instruction.objects.get(owner=bob)

    chat = open_live(page, f"http://{host}/channel/lobby")
    chat.click("#choices summary")
    chat.select_option("#choice-instruction", label="<b>Pirate</b> (mine)")
    send(chat, "Ahoy")
    expect(chat.locator(".turn.role-bot:not(.generating) .body")).to_have_text("Arr.")
    assert system_prompt(openai_server.requests[-1]).startswith("Talk like a pirate.")
    assert Turn.objects.filter(role="user").latest("id").request == {"instruction": created.pk}
    no_script_errors(chat)


def test_the_account_page_renames_rewrites_and_deletes_your_instructions(host, browser, bob):
    services.create_instruction(user=bob, name="Pirate", text="Talk like a pirate.")
    services.create_instruction(user=bob, name="Tutor", text="Ask questions back.")
    page = log_in(browser, host, "bob")
    page.goto(f"http://{host}/account/")
    pirate = page.locator("#my-instructions li", has_text="Pirate")

    # A name taken by another of yours: the service's error, next to the name.
    pirate.locator("summary").click()
    pirate.locator('input[name="name"]').fill("Tutor")
    pirate.locator("button", has_text="Save").click()
    pirate = page.locator("#my-instructions li", has_text="Pirate")
    expect(pirate.locator(".errorlist")).to_have_text("Taken.")

    pirate.locator('input[name="name"]').fill("Sailor")
    pirate.locator('textarea[name="text"]').fill("Talk like a sailor.")
    pirate.locator("button", has_text="Save").click()
    expect(page.locator("#my-instructions .instruction-name")).to_have_text(["Sailor", "Tutor"])
    assert Instruction.objects.get(name="Sailor").text == "Talk like a sailor."

    page.locator("#my-instructions li", has_text="Tutor").locator("button", has_text="Delete").click()
    expect(page.locator("#my-instructions .instruction-name")).to_have_text(["Sailor"])
    assert list(Instruction.objects.values_list("name", flat=True)) == ["Sailor"]
    no_script_errors(page)


def test_another_users_instruction_cannot_be_changed_from_the_account_page(browser, host, alice, bob):
    theirs = services.create_instruction(user=alice, name="Mine", text="Private.")
    page = log_in(browser, host, "bob")
    page.goto(f"http://{host}/account/")
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    for kind in ("instruction-edit", "instruction-delete"):
        answer = page.request.post(
            f"http://{host}/account/",
            form={
                "csrfmiddlewaretoken": token,
                "form": kind,
                "id": str(theirs.pk),
                "name": "Stolen",
                "text": "x",
            },
        )
        assert answer.status == 404
    assert Instruction.objects.get(pk=theirs.pk).name == "Mine"

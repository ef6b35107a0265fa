"""The chat page people use every day, in a real browser against real server
processes: code blocks, copying, the stop button, drafts, the keyboard, a phone-sized
screen, older turns, regenerate, edit-and-resend, the sidebar and archived sessions.
The sidebar's session management, search, the composer's per-message choices and
prompt suggestions follow the issue-14 contract (/api/sessions PATCH, `q=`,
`member_params`, `/api/prompts`)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from chat import services
from chat.models import Channel, Session, Turn
from chat.realtime.events import publish, reset_event
from tests.browser import chat_page, no_script_errors, open_live, screenshot, send
from tests.conftest import use_slow_model, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)

CODE = 'def greet(name):\n    return f"Hello, {name}"'
CODE_REPLY = f"Here you are:\n\n```python\n{CODE}\n```\n\nThat is all."
WORDS = [f"word{i} " for i in range(80)]


def allow_clipboard(page: Page, host: str) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=f"http://{host}")


def clipboard(page: Page) -> str:
    return str(page.evaluate("navigator.clipboard.readText()"))


# --- the transcript -----------------------------------------------------------------------


def test_a_code_block_is_highlighted_and_its_copy_button_copies_just_the_code(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=[CODE_REPLY])
    chat = chat_page(browser, host, "alice")
    allow_clipboard(chat, host)
    send(chat, "Write me a greeting function")

    block = chat.locator(".turn.role-bot .code-block")
    expect(block.locator("code.hljs.language-python .hljs-keyword").first).to_have_text("def")
    expect(block.locator(".code-language")).to_have_text("python")
    block.locator(".copy-code").click()
    expect(block.locator(".copy-code")).to_have_text("Copied")
    assert clipboard(chat) == CODE

    # Copy-message copies the message as written (its Markdown), not the rendering.
    chat.locator(".turn.role-bot .tool.copy-message").click()
    expect(chat.locator(".turn.role-bot .tool.copy-message")).to_have_text("Copied")
    assert clipboard(chat) == CODE_REPLY
    chat.locator(".turn.role-user .tool.copy-message").click()
    expect(chat.locator(".turn.role-user .tool.copy-message")).to_have_text("Copied")
    assert clipboard(chat) == "Write me a greeting function"
    no_script_errors(chat)


def test_code_in_a_hostile_language_tag_stays_text(host, browser, channel, alice, openai_server):
    hostile = '```"><img src=x onerror="window.__xss=1">\n<script>window.__xss = 2</script>\n```'
    use_slow_model(channel, openai_server, delay=0.0, tokens=[hostile])
    chat = chat_page(browser, host, "alice")
    send(chat, "Say something odd")
    code = chat.locator(".turn.role-bot .code-block code")
    expect(code).to_contain_text("<script>window.__xss = 2</script>")
    assert chat.locator("#transcript img, #transcript script, #transcript [onerror]").count() == 0
    assert chat.evaluate("window.__xss") is None
    no_script_errors(chat)


def test_the_stop_button_takes_the_send_buttons_place_while_a_reply_runs(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.2, tokens=WORDS)
    chat = chat_page(browser, host, "alice")
    expect(chat.locator("#send")).to_be_visible()
    expect(chat.locator("#interrupt")).to_be_hidden()
    send(chat, "Count slowly")
    expect(chat.locator(".turn.role-bot.generating .body")).to_contain_text("word1")
    expect(chat.locator("#interrupt")).to_be_visible()
    expect(chat.locator("#send")).to_be_hidden()
    chat.click("#interrupt")
    expect(chat.locator(".turn.role-bot .status")).to_have_text("interrupted")
    expect(chat.locator("#send")).to_be_visible()
    expect(chat.locator("#interrupt")).to_be_hidden()
    assert Turn.objects.get(role="bot").finish_reason == "interrupted"


def test_scrolling_up_loads_older_turns_while_the_live_tail_keeps_streaming(
    host, browser, channel, alice, openai_server
):
    for number in range(70):
        services.inject(channel=channel, user=alice, role="user", text=f"old line {number}")
    use_slow_model(channel, openai_server, delay=0.1, tokens=WORDS[:30])
    chat = chat_page(browser, host, "alice")
    turns = chat.locator("#transcript .turn")
    expect(turns).to_have_count(50)
    expect(turns.first.locator(".body")).to_have_text("old line 20")

    send(chat, "Keep talking")
    expect(chat.locator(".turn.role-bot.generating .body")).to_contain_text("word2")
    chat.evaluate("window.scrollTo(0, 0)")
    expect(turns.first.locator(".body")).to_have_text("old line 0")
    # Where the reader was stays on screen: the page did not jump to the new top.
    assert chat.evaluate("window.scrollY") > 0
    expect(chat.locator("#transcript .more")).to_have_count(0)
    expect(chat.locator(".turn.role-bot .body")).to_have_text("".join(WORDS[:30]))
    expect(chat.locator(".turn.role-bot")).not_to_have_class("generating")
    texts = [text.strip() for text in chat.locator("#transcript .turn .body").all_text_contents()]
    assert texts == [f"old line {n}" for n in range(70)] + ["Keep talking", "".join(WORDS[:30]).strip()]
    no_script_errors(chat)


def test_regenerate_is_offered_on_the_last_finished_reply_only(host, browser, channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["First ", "answer."])
    chat = chat_page(browser, host, "alice")
    send(chat, "One")
    expect(chat.locator(".turn.role-bot .body")).to_have_text("First answer.")
    send(chat, "Two")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    regenerate = chat.locator(".turn.role-bot .tool.regenerate")
    expect(regenerate.nth(0)).to_be_hidden()
    expect(regenerate.nth(1)).to_be_visible()
    expect(chat.locator(".turn.role-user .tool.regenerate")).to_have_count(2)  # present, never shown
    replaced = chat.locator(".turn.role-bot").last.get_attribute("data-turn-id")

    openai_server.behaviour.tokens = ["Second ", "thoughts."]
    regenerate.nth(1).click()
    expect(chat.locator(".turn.role-bot .body")).to_have_text(["First answer.", "Second thoughts."])
    expect(chat.locator(f'.turn[data-turn-id="{replaced}"]')).to_have_count(0)
    no_script_errors(chat)


def test_a_member_edits_their_last_message_and_sends_it_again(host, browser, channel, bob, openai_server):
    """A member may not truncate the session: the edited text goes out as a new message."""
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Noted."])
    chat = chat_page(browser, host, "bob")
    send(chat, "What is the capital of Frnace?")
    expect(chat.locator(".turn.role-bot .body")).to_have_text("Noted.")
    edit = chat.locator(".turn.role-user .tool.edit")
    expect(edit).to_be_visible()
    expect(chat.locator(".turn.role-bot .tool.edit")).to_be_hidden()
    edit.click()
    expect(chat.locator("#text")).to_have_value("What is the capital of Frnace?")
    expect(chat.locator("#editing")).to_be_visible()
    chat.fill("#text", "What is the capital of France?")
    chat.press("#text", "Enter")
    expect(chat.locator(".turn.role-user .body")).to_have_text(
        ["What is the capital of Frnace?", "What is the capital of France?"]
    )
    expect(chat.locator("#editing")).to_be_hidden()
    # Only the newest of one's own messages can be edited.
    expect(chat.locator(".turn.role-user .tool.edit").first).to_be_hidden()
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    expect(chat.locator(".turn.role-user .tool.edit").last).to_be_visible()


def test_the_watch_page_offers_copy_but_no_edit_or_regenerate_even_to_the_author(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Fine."])
    chat = chat_page(browser, host, "alice")
    send(chat, "Mine")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(1)
    watch = open_live(chat.context.new_page(), f"http://{host}/watch/lobby")
    expect(watch.locator(".turn .body")).to_have_text(["Mine", "Fine."])
    expect(watch.locator(".turn .tool.copy-message")).to_have_count(2)
    assert watch.locator(".turn .tool.edit, .turn .tool.regenerate").count() == 0


def test_someone_elses_message_offers_no_edit(host, browser, channel, alice, bob):
    services.inject(channel=channel, user=alice, role="user", text="Alice speaks")
    chat = chat_page(browser, host, "bob")
    expect(chat.locator(".turn.role-user .body")).to_have_text("Alice speaks")
    expect(chat.locator(".turn.role-user .tool.edit")).to_be_hidden()


# --- the composer ---------------------------------------------------------------------------


def test_unsent_text_survives_a_reload_and_is_forgotten_once_sent(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["ok"])
    chat = chat_page(browser, host, "alice")
    chat.locator("#text").press_sequentially("A thought I have not finished")
    chat.reload()
    expect(chat.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(chat.locator("#text")).to_have_value("A thought I have not finished")
    # Per channel: another channel's composer starts empty.
    services.create_channel(name="elsewhere", owner=alice)
    other = open_live(chat, f"http://{host}/channel/elsewhere")
    expect(other.locator("#text")).to_have_value("")
    chat = open_live(other, f"http://{host}/channel/lobby")
    expect(chat.locator("#text")).to_have_value("A thought I have not finished")
    chat.press("#text", "Enter")
    expect(chat.locator(".turn.role-user .body")).to_have_text("A thought I have not finished")
    chat.reload()
    expect(chat.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(chat.locator("#text")).to_have_value("")


def test_the_keyboard_enter_sends_shift_enter_breaks_esc_stops_ctrl_k_searches(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.2, tokens=WORDS)
    chat = chat_page(browser, host, "alice")
    chat.click("#text")
    chat.keyboard.type("first line")
    chat.keyboard.press("Shift+Enter")
    chat.keyboard.type("second line")
    expect(chat.locator("#text")).to_have_value("first line\nsecond line")
    chat.keyboard.press("Enter")
    expect(chat.locator(".turn.role-user .body br")).to_have_count(1)
    assert Turn.objects.get(role="user").text == "first line\nsecond line"
    expect(chat.locator(".turn.role-bot.generating .body")).to_contain_text("word1")

    chat.keyboard.press("Escape")
    expect(chat.locator(".turn.role-bot .status")).to_have_text("interrupted")

    for chord in ("Control+k", "Meta+k"):
        chat.click("#text")
        chat.keyboard.press(chord)
        expect(chat.locator("#session-search")).to_be_focused()


def test_owners_pick_among_every_enabled_model_and_members_get_no_picker_without_a_policy(
    host, browser, channel, alice, bob, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0)
    owner = chat_page(browser, host, "alice")
    expect(owner.locator("#choices")).to_be_visible()
    owner.click("#choices summary")
    expect(owner.locator("#choice-model option").first).to_have_text("channel's model")
    assert owner.locator("#web-search").count() == 0  # this instance has no search endpoint
    expect(owner.locator("#choice-model option", has_text="slow/test-model")).to_have_count(1)
    expect(owner.locator('#choice-params input[name="temperature"]')).to_have_attribute("max", "2")
    member = chat_page(browser, host, "bob")
    expect(member.locator("#choices")).to_be_hidden()
    expect(member.locator("#thinking-toggle")).to_be_hidden()


# --- the sidebar ----------------------------------------------------------------------------


def test_the_sidebar_lists_my_channels_with_unread_markers_and_a_writing_dot(
    host, browser, channel, alice, openai_server
):
    other = services.create_channel(name="other", owner=alice, title="<b>Other</b> room")
    services.inject(channel=other, user=alice, role="user", text="hello there")
    chat = chat_page(browser, host, "alice")
    rows = chat.locator("#channel-list .channel-item")
    expect(rows).to_have_count(2)
    expect(chat.locator('#channel-list [data-channel="lobby"]')).to_have_class("channel-item current")
    other_row = chat.locator('#channel-list [data-channel="other"]')
    # Titles are text, never markup.
    expect(other_row.locator(".channel-link")).to_have_text("<b>Other</b> room")
    assert other_row.locator("b").count() == 0
    expect(other_row).to_have_class("channel-item unread")

    other_row.locator(".channel-link").click()
    expect(chat.locator("#conn")).to_have_attribute("data-state", "connected")
    expect(chat.locator('#channel-list [data-channel="other"]')).to_have_class("channel-item current")
    chat.locator('#channel-list [data-channel="lobby"] .channel-link').click()
    expect(chat.locator('#channel-list [data-channel="lobby"]')).to_have_class("channel-item current")
    expect(chat.locator('#channel-list [data-channel="other"]')).to_have_class("channel-item")

    use_slow_model(other, openai_server, delay=0.3, tokens=WORDS[:20])
    services.post_message(channel=other, user=alice, text="Talk in the other room")
    chat.reload()
    other_row = chat.locator('#channel-list [data-channel="other"]')
    expect(other_row.locator(".writing-dot")).to_be_visible()
    expect(other_row).to_have_class("channel-item unread writing")
    wait_until_no_generation()
    no_script_errors(chat)


def test_an_archived_session_opens_read_only_and_pages_back_while_the_live_one_goes_on(
    host, browser, channel, alice
):
    for number in range(60):
        services.inject(channel=channel, user=alice, role="user", text=f"archived line {number}")
    services.reset(channel=channel, user=alice)
    services.inject(channel=channel, user=alice, role="user", text="live line")
    chat = chat_page(browser, host, "alice")
    sessions = chat.locator("#session-list .session-item")
    expect(sessions).to_have_count(2)
    archived = chat.locator('#session-list .session-item[data-status="archived"]')
    expect(archived.locator(".session-status")).to_have_text("archived")

    archived.locator(".session-open").click()
    expect(chat.locator("#archive-banner")).to_be_visible()
    expect(chat.locator("#composer")).to_be_hidden()
    expect(chat.locator("#transcript")).to_be_hidden()
    old = chat.locator("#archive-transcript .turn")
    expect(old.last.locator(".body")).to_have_text("archived line 59")
    assert old.locator(".tool.edit, .tool.regenerate").count() == 0
    chat.evaluate("window.scrollTo(0, 0)")
    expect(old).to_have_count(60)
    expect(old.first.locator(".body")).to_have_text("archived line 0")

    # Meanwhile the live session goes on, and is all there on the way back.
    services.inject(channel=channel, user=alice, role="agent", text="said while you read")
    chat.click("#back-to-live")
    expect(chat.locator("#archive-banner")).to_be_hidden()
    expect(chat.locator("#composer")).to_be_visible()
    expect(chat.locator("#transcript .turn .body")).to_have_text(["live line", "said while you read"])
    no_script_errors(chat)


def test_on_a_phone_the_sidebar_folds_behind_a_button(host, browser, channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.0, tokens=[CODE_REPLY])
    # Titled sessions, as a used channel has them (for the screenshots).
    for title in ("Tomatoes on a balcony", "Trip plans for Lisbon"):
        services.inject(channel=channel, user=alice, role="user", text=title)
        services.update_session(session=channel.active_session, user=alice, title=title, status="archived")
    services.update_session(session=channel.active_session, user=alice, title="A greeting in Python")
    chat = chat_page(browser, host, "alice")
    send(chat, "Show me some code")
    expect(chat.locator(".turn.role-bot:not(.generating) .code-block")).to_have_count(1)
    expect(chat.locator("#sidebar")).to_be_visible()
    expect(chat.locator("#sidebar-toggle")).to_be_hidden()
    screenshot(chat, "chat-desktop")

    chat.set_viewport_size({"width": 390, "height": 844})
    expect(chat.locator("#sidebar")).to_be_hidden()
    expect(chat.locator("#sidebar-toggle")).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling.
    assert chat.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(chat, "chat-phone")
    chat.click("#sidebar-toggle")
    expect(chat.locator("#sidebar")).to_be_visible()
    expect(chat.locator("#sidebar-toggle")).to_have_attribute("aria-expanded", "true")
    expect(chat.locator("#channel-list .channel-item")).to_have_count(1)
    chat.locator("#session-search").focus()
    chat.keyboard.press("Escape")
    expect(chat.locator("#sidebar")).to_be_hidden()
    # Ctrl+K opens it again, on the search field.
    chat.keyboard.press("Control+k")
    expect(chat.locator("#sidebar")).to_be_visible()
    expect(chat.locator("#session-search")).to_be_focused()
    no_script_errors(chat)


# --- after the issue-14 endpoints are merged (contract-14) -------------------------------------


def test_the_owner_renames_archives_and_deletes_sessions_and_titles_change_live_for_everyone(
    host, browser, channel, alice, bob
):
    services.inject(channel=channel, user=alice, role="user", text="about the garden")
    first = Session.objects.get(channel=channel, status="active")
    owner = chat_page(browser, host, "alice")
    member = chat_page(browser, host, "bob")
    # Members may not manage sessions: no tools for them.
    expect(member.locator("#session-list .session-item")).to_have_count(1)
    assert member.locator("#session-list .session-tools").count() == 0

    row = owner.locator(f'#session-list [data-session="{first.pk}"]')
    row.locator(".tool.rename").click()
    owner.fill("#session-list .rename-input", "<i>Garden</i> plans")
    owner.press("#session-list .rename-input", "Enter")
    for page in (owner, member):
        # session_updated reaches every page of the channel; the title stays text.
        expect(page.locator(f'[data-session="{first.pk}"] .session-title')).to_have_text(
            "<i>Garden</i> plans"
        )
        assert page.locator("#session-list i").count() == 0
    first.refresh_from_db()
    assert first.title == "<i>Garden</i> plans" and first.title_by_person

    owner.locator(f'[data-session="{first.pk}"] .tool.archive').click()
    # Archiving the live session starts a fresh one, as reset does.
    for page in (owner, member):
        expect(page.locator("#session-list .session-item")).to_have_count(2)
        expect(page.locator(f'[data-session="{first.pk}"]')).to_have_attribute("data-status", "archived")
        expect(page.locator("#transcript .turn")).to_have_count(0)

    # Reopening makes it the live session again, its turns back on every page.
    owner.locator(f'[data-session="{first.pk}"] .tool.restore').click()
    for page in (owner, member):
        expect(page.locator(f'[data-session="{first.pk}"]')).to_have_attribute("data-status", "active")
        expect(page.locator("#transcript .turn .body")).to_have_text(["about the garden"])

    owner.once("dialog", lambda dialog: dialog.accept())
    owner.locator(f'[data-session="{first.pk}"] .tool.delete').click()
    for page in (owner, member):
        expect(page.locator(f'[data-session="{first.pk}"]')).to_have_count(0)
    first.refresh_from_db()
    assert first.status == "deleted"
    no_script_errors(owner, member)


def test_searching_sessions_matches_titles_and_the_text_of_turns(host, browser, channel, alice):
    services.inject(channel=channel, user=alice, role="user", text="we talked about tulips")
    tulips = Session.objects.get(channel=channel, status="active")
    services.reset(channel=channel, user=alice)
    services.inject(channel=channel, user=alice, role="user", text="nothing to see")
    services.reset(channel=channel, user=alice)
    chat = chat_page(browser, host, "alice")
    expect(chat.locator("#session-list .session-item")).to_have_count(3)
    chat.keyboard.press("Control+k")
    chat.keyboard.type("TULIP")
    expect(chat.locator("#session-list .session-item")).to_have_count(1)
    expect(chat.locator("#session-list .session-item")).to_have_attribute("data-session", str(tulips.pk))
    chat.fill("#session-search", "no such words anywhere")
    expect(chat.locator("#session-list .empty")).to_have_text("No session matches.")
    chat.fill("#session-search", "")
    expect(chat.locator("#session-list .session-item")).to_have_count(3)


def test_the_owner_edits_the_last_message_and_it_replaces_the_old_one_and_its_reply(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Noted."])
    chat = chat_page(browser, host, "alice")
    send(chat, "Hello")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(1)
    send(chat, "What is 2+3?")
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    chat.locator(".turn.role-user .tool.edit").last.click()
    chat.fill("#text", "What is 2+2?")
    chat.press("#text", "Enter")
    expect(chat.locator(".turn.role-user .body")).to_have_text(["Hello", "What is 2+2?"])
    expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(2)
    visible = Turn.objects.filter(session__channel=channel, hidden=False).order_by("id")
    assert [t.text for t in visible if t.role == "user"] == ["Hello", "What is 2+2?"]
    no_script_errors(chat)


def test_a_member_picks_a_model_parameters_and_thinking_within_the_owners_bounds(
    host, browser, channel, alice, bob, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Thought ", "through."])
    services.update_channel(
        channel=channel,
        user=alice,
        changes={
            "member_params": {
                "models": ["slow/test-model"],
                "temperature": {"min": 0, "max": 1},
                "thinking": True,
            }
        },
    )
    settings_before = Channel.objects.get(pk=channel.pk).params
    chat = chat_page(browser, host, "bob")
    expect(chat.locator("#choices")).to_be_visible()
    chat.click("#choices summary")
    # The options are filled once the page has asked for instructions and bases: wait for them.
    expect(chat.locator("#choice-model option")).to_have_text(["channel's model", "slow/test-model"])
    temperature = chat.locator('#choice-params input[name="temperature"]')
    expect(temperature).to_have_attribute("max", "1")
    assert chat.locator('#choice-params input[name="top_p"]').count() == 0
    chat.select_option("#choice-model", "slow/test-model")
    temperature.fill("0.3")
    chat.check("#thinking")
    send(chat, "Think about it")
    expect(chat.locator(".turn.role-bot:not(.generating) .body")).to_have_text("Thought through.")
    assert openai_server.requests[-1]["temperature"] == 0.3
    bot = Turn.objects.get(role="bot")
    assert bot.params["temperature"] == 0.3 and bot.params["thinking"] is True
    channel.refresh_from_db()
    assert channel.params == settings_before  # that reply only
    # The substrate view says what the reply was written with.
    chat.click(".turn.role-bot .substrate summary")
    expect(chat.locator(".turn.role-bot .substrate dl")).to_contain_text("temperature 0.3")
    expect(chat.locator(".turn.role-bot .substrate dl")).to_contain_text("thinking true")
    no_script_errors(chat)


def test_an_empty_session_offers_prompt_suggestions_that_fill_the_composer(host, browser, channel, alice):
    chat = chat_page(browser, host, "alice")
    expect(chat.locator("#suggest")).to_be_visible()
    chat.click("#suggest")
    chips = chat.locator("#suggestions .suggestion")
    expect(chips.first).to_be_visible()
    first = chips.first.text_content() or ""
    assert first.strip()
    chips.first.click()
    expect(chat.locator("#text")).to_have_value(first)
    services.inject(channel=channel, user=alice, role="user", text="now it is not empty")
    expect(chat.locator("#suggest")).to_be_hidden()
    expect(chat.locator("#suggestions")).to_be_hidden()


def test_a_reply_stranded_in_a_session_that_left_vanishes_from_the_new_one(
    host, browser, channel, alice, openai_server
):
    """The outcome of the race a reset leaves open (tests/test_session_management.py):
    the session left under a running reply. The reply stops itself; the page, on the
    fresh session, keeps nothing of it and offers Send again."""
    use_slow_model(channel, openai_server, delay=0.1, tokens=WORDS)
    chat = chat_page(browser, host, "alice")
    send(chat, "Count slowly")
    expect(chat.locator(".turn.role-bot.generating .body")).to_contain_text("word1")
    old = channel.active_session
    Session.objects.filter(pk=old.pk).update(status=Session.Status.ARCHIVED)
    fresh = Session.objects.create(channel=channel, started_by=alice)
    publish(channel.pk, channel.name, reset_event(fresh.pk))
    wait_until_no_generation()
    assert Turn.objects.get(role="bot", session=old).finish_reason == "interrupted"
    expect(chat.locator("#transcript .turn")).to_have_count(0)
    expect(chat.locator("#send")).to_be_visible()
    expect(chat.locator("#interrupt")).to_be_hidden()
    no_script_errors(chat)

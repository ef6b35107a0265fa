"""The website in a real browser against real server processes: chat and watch pages
live, the buttons, hostile text, a server restart."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from chat.models import ApiToken, Turn
from tests.browser import log_in, new_page, open_live, screenshot
from tests.conftest import use_slow_model, wait_until_no_generation
from tests.processes import free_port, live_env, live_server, live_servers

pytestmark = pytest.mark.django_db(transaction=True)

TOKENS = ["Alpha ", "beta ", "gamma ", "delta ", "epsilon ", "zeta ", "eta ", "theta."]
REPLY = "".join(TOKENS)


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


def test_unfolding_a_replys_substrate_shows_the_exact_prompt_and_raw_completion_fetched_on_demand(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=TOKENS)
    chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    chat.fill("#text", "What did you see?")
    chat.press("#text", "Enter")
    for page in (chat, watch):
        expect(page.locator(".turn.role-bot .body")).to_have_text(REPLY)
        expect(page.locator(".turn.role-bot")).not_to_have_class("generating")
    bot = Turn.objects.get(role="bot")
    assert bot.prompt and bot.raw_completion
    for page in (chat, watch):
        substrate = page.locator(".turn.role-bot .substrate")
        substrate.locator("summary").click()
        # history and turn events carry no prompt: the page asked for it with get_turn.
        # (the raw completion and the prompt arrive in one answer and render together;
        # before the click is handled the view is empty, not "loading…")
        expect(substrate.locator("pre.raw")).to_have_text(bot.raw_completion)
        assert substrate.locator("pre.prompt").text_content() == bot.prompt
        assert substrate.locator("pre.raw").text_content() == bot.raw_completion
        assert page.errors == []  # type: ignore[attr-defined]


def test_interrupt_regenerate_inject_and_reset_buttons_act_on_both_pages(
    host, browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.2, tokens=[f"word{i} " for i in range(60)])
    chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    pages = (chat, watch)

    chat.fill("#text", "Count for me")
    chat.click("#composer button[type=submit]")
    for page in pages:
        expect(page.locator(".turn.role-bot.generating .body")).to_contain_text("word1")
    chat.click("#interrupt")
    for page in pages:
        expect(page.locator(".turn.role-bot .status")).to_have_text("interrupted")
    first_reply = chat.locator(".turn.role-bot").get_attribute("data-turn-id")

    openai_server.behaviour.delay = 0.0
    openai_server.behaviour.tokens = ["A ", "fresh ", "answer."]
    chat.click(".turn.role-bot .tool.regenerate")
    for page in pages:
        expect(page.locator(".turn.role-bot .body")).to_have_text("A fresh answer.")
        expect(page.locator(f'.turn[data-turn-id="{first_reply}"]')).to_have_count(0)

    chat.select_option("#inject-role", "agent")
    chat.fill("#text", "The narrator enters.")
    chat.click("#inject")
    for page in pages:
        expect(page.locator(".turn.role-agent .body")).to_have_text("The narrator enters.")
    assert Turn.objects.filter(role="agent", text="The narrator enters.").exists()

    chat.once("dialog", lambda dialog: dialog.accept())
    chat.click("#reset")
    for page in pages:
        expect(page.locator(".turn")).to_have_count(0)
        expect(page.locator("#notice")).to_have_text("A new session started.")
    assert channel.sessions.count() == 2


def test_the_owner_edits_framing_and_parameters_and_sees_the_protocols_messages(
    host, browser, channel, alice
):
    chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
    chat.click(".settings summary")
    chat.fill("#params-temperature", "7")
    chat.fill("#framing-user_prefix", "Q: ")
    chat.click("#settings-form button[type=submit]")
    expect(chat.locator('[data-error-for="params.temperature"]')).to_contain_text("2")
    chat.fill("#params-temperature", "0.5")
    chat.click("#settings-form button[type=submit]")
    expect(chat.locator("#notice")).to_have_text("Settings saved.")
    channel.refresh_from_db()
    assert channel.params["temperature"] == 0.5
    assert channel.framing["user_prefix"] == "Q: "


def test_a_member_who_does_not_own_the_channel_gets_no_settings_editor(host, browser, channel, bob):
    chat = open_live(log_in(browser, host, "bob"), f"http://{host}/channel/lobby")
    assert chat.locator("#settings-form").count() == 0
    assert chat.locator("#composer").count() == 1


class OutsideHost:
    """A server on another origin that counts every request made to it: a page that
    loads an image or anything else from outside shows up here."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        outside = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outside.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://localhost:{self.httpd.server_address[1]}"


def xss_corpus(outside: str) -> list[str]:
    return [
        "<script>window.__xss = 'script'</script>",
        "<img src=x onerror=\"window.__xss = 'img'\">",
        "<svg onload=\"window.__xss = 'svg'\"><circle r=5></circle></svg>",
        "[click me](javascript:window.__xss='md-link')",
        "<a href=\"javascript:window.__xss='a'\">a link</a>",
        f"![tracker]({outside}/pixel.png)",
        f'<img src="{outside}/raw-img.png">',
        f"<style>body {{ background: url({outside}/css.png) }}</style>",
        "<iframe src=\"javascript:window.__xss='iframe'\"></iframe>",
        "<details open ontoggle=\"window.__xss='details'\">x</details>",
        "\"><script>window.__xss = 'attr'</script>",
        "```html\n<script>window.__xss = 'code'</script>\n```",
    ]


def test_hostile_text_from_users_and_the_model_runs_no_script_and_loads_nothing_from_outside(
    host, browser, channel, alice, openai_server
):
    outside = OutsideHost()
    corpus = xss_corpus(outside.url)
    # The model answers with the whole corpus too.
    use_slow_model(channel, openai_server, delay=0.0, tokens=["\n\n".join(corpus)])
    chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    requests: list[str] = []
    dialogs: list[str] = []

    def note_and_dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for page in (chat, watch):
        page.on("request", lambda request: requests.append(request.url))
        page.on("dialog", note_and_dismiss)

    for number, payload in enumerate(corpus, start=1):
        chat.fill("#text", payload)
        chat.press("#text", "Enter")
        # One at a time: messages sent while the bot writes are answered together.
        expect(chat.locator(".turn.role-bot:not(.generating)")).to_have_count(number)
    for page in (chat, watch):
        expect(page.locator(".turn.role-bot:not(.generating)")).to_have_count(len(corpus))
        expect(page.locator(".turn.role-user")).to_have_count(len(corpus))
        # The text is there, as text.
        expect(page.locator(".turn.role-user").first).to_contain_text("<script>window.__xss")
        transcript = page.locator("#transcript")
        assert (
            transcript.locator("script, img, svg, iframe, style, [onerror], [onload], [ontoggle]").count()
            == 0
        )
        assert transcript.locator('a[href^="javascript"]').count() == 0
        assert page.evaluate("window.__xss") is None
        page.locator("#transcript a").first.hover()
    assert dialogs == []
    assert outside.hits == []
    assert [url for url in requests if not url.startswith(f"http://{host}/")] == []
    outside.httpd.shutdown()


def test_after_a_server_restart_both_pages_reconnect_and_recover_the_transcript_without_a_reload(
    browser, channel, alice, openai_server
):
    use_slow_model(channel, openai_server, delay=0.0, tokens=["Before ", "the ", "restart."])
    env = live_env()
    port = free_port()
    host = f"127.0.0.1:{port}"
    with live_server("uvicorn", port, env):
        chat = open_live(log_in(browser, host, "alice"), f"http://{host}/channel/lobby")
        watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
        chat.fill("#text", "First message")
        chat.press("#text", "Enter")
        for page in (chat, watch):
            expect(page.locator(".turn.role-bot .body")).to_have_text("Before the restart.")
            page.evaluate("window.__sameDocument = true")

    for page in (chat, watch):
        expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    # While this server is down, the conversation goes on through another one.
    token = ApiToken.issue(alice)
    with live_servers("uvicorn", 1) as (other,):
        answer = httpx.post(
            f"http://{other}/api/channels/lobby/inject",
            json={"role": "agent", "text": "Said while you were away."},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 201, answer.text

    with live_server("uvicorn", port, env):
        for page in (chat, watch):
            expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=30_000)
            expect(page.locator(".turn .body")).to_have_text(
                ["First message", "Before the restart.", "Said while you were away."]
            )
            assert page.evaluate("window.__sameDocument") is True
        chat.fill("#text", "After the restart")
        chat.press("#text", "Enter")
        expect(watch.locator(".turn.role-user .body").last).to_have_text("After the restart")
        wait_until_no_generation()


def test_a_watch_page_whose_key_is_rotated_says_so_and_stops_retrying(host, browser, private_channel, alice):
    from chat import services

    watch = open_live(new_page(browser), f"http://{host}/watch/backroom?key={private_channel.watch_key}")
    services.rotate_watch_key(channel=private_channel, user=alice)
    expect(watch.locator("#conn")).to_have_attribute("data-state", "closed")
    expect(watch.locator("#notice")).to_contain_text("watch link is no longer valid")
    watch.reload()
    expect(watch.locator("h1")).to_have_text("This watch link is not valid")


def test_a_turn_hidden_by_a_moderator_vanishes_from_the_watch_page(host, browser, channel, alice, admin_user):
    from chat import services

    turn = services.inject(channel=channel, user=alice, role="user", text="Something regrettable")
    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    expect(watch.locator(".turn .body")).to_have_text(["Something regrettable"])
    services.hide_turn(actor=admin_user, turn=turn)
    expect(watch.locator(".turn")).to_have_count(0)
    services.unhide_turn(actor=admin_user, turn=turn)
    expect(watch.locator(".turn .body")).to_have_text(["Something regrettable"])


TRANSCRIPT_JS = """() => [...document.querySelectorAll('#transcript .turn')].map(
    (turn) => [Number(turn.dataset.turnId), turn.className.replace(' generating', ''),
               turn.querySelector('.body').textContent.trim()])"""


def test_the_pages_own_event_handling_ends_where_a_fresh_page_starts(
    host, browser, channel, alice, admin_user
):
    """The consistency rule (history + events == a fresh history) through the browser's
    own reducer (static/js/colloquy.js), not a test's copy of it."""
    from chat import services

    watch = open_live(new_page(browser), f"http://{host}/watch/lobby")
    turns = [services.inject(channel=channel, user=alice, role="user", text=f"line {i}") for i in range(4)]
    services.post_message(channel=channel, user=alice, text="I am curious")
    wait_until_no_generation()
    services.hide_turn(actor=admin_user, turn=turns[1])
    services.delete_turn(actor=admin_user, turn=turns[2])
    services.regenerate(channel=channel, user=alice)
    wait_until_no_generation()
    services.unhide_turn(actor=admin_user, turn=Turn.objects.get(pk=turns[1].pk))
    services.update_channel(channel=channel, user=alice, changes={"params": {"max_tokens": 9}})
    services.inject(channel=channel, user=alice, role="agent", text="the end")
    expect(watch.locator("#transcript .turn").last).to_contain_text("the end")
    fresh = open_live(new_page(browser), f"http://{host}/watch/lobby")
    expect(fresh.locator("#transcript .turn").last).to_contain_text("the end")
    assert watch.evaluate(TRANSCRIPT_JS) == fresh.evaluate(TRANSCRIPT_JS)
    assert watch.errors == [] and fresh.errors == []  # type: ignore[attr-defined]

"""Files and voice in a real browser (issue 15), against a real server process and a real
worker: drag-and-drop and paste become chips that follow the upload's processing live,
the message goes with them and every page of the room shows the image as a thumbnail and
the PDF as a chip; cancelling removes the upload; a private channel's watch link shows the
thumbnail only with its key; the microphone button picks a type the browser records."""

from __future__ import annotations

import base64
import re
from typing import Any, cast

import httpx
import pytest
from playwright.sync_api import Page, expect

from chat.models import Upload
from chat.services.channels import change_lock
from tests import files
from tests.browser import (
    chat_page,
    new_page,
    no_script_errors,
    open_live,
    screenshot,
)
from tests.conftest import add_provider, use_provider, wait_for, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSED = 30_000  # ms: an upload is processed by the worker well within this


# --- putting files into the page as a person would ------------------------------------------------

MAKE_TRANSFER = """(files) => {
    const transfer = new DataTransfer();
    for (const [name, type, encoded] of files) {
        const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
        transfer.items.add(new File([bytes], name, { type }));
    }
    return transfer;
}"""


def transfer(page: Page, files: list[tuple[str, str, bytes]]) -> Any:
    encoded = [[name, mime, base64.b64encode(data).decode()] for name, mime, data in files]
    return page.evaluate_handle(MAKE_TRANSFER, encoded)


def drop(page: Page, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drag files from the desktop onto ``selector``: Playwright's documented way, a
    real DataTransfer made in the page with dragenter/dragover/drop dispatched."""
    data = transfer(page, files)
    for kind in ("dragenter", "dragover", "drop"):
        page.dispatch_event(selector, kind, {"dataTransfer": data})


def paste(page: Page, files: list[tuple[str, str, bytes]]) -> None:
    """A paste into the message box whose clipboard holds files (a screenshot, say)."""
    data = transfer(page, files)
    page.focus("#text")
    page.evaluate(
        """(data) => document.getElementById('text').dispatchEvent(
            new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true }))""",
        data,
    )


def chip(page: Page, name: str) -> Any:
    return page.locator(".upload-chip", has_text=name)


def wait_ready(page: Page, *names: str) -> None:
    for name in names:
        expect(chip(page, name).locator(".state")).to_have_text("ready", timeout=PROCESSED)


def image_loaded(page: Page, selector: str) -> bool:
    locator = page.locator(selector).first
    expect(locator).to_be_visible()
    locator.scroll_into_view_if_needed()
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=PROCESSED,
    )
    return True


def seeing_model(channel: Any, openai_server: Any) -> None:
    """The channel's model reads images (a real OpenAI-compatible HTTP server)."""
    openai_server.behaviour.tokens = ["Nice ", "picture."]
    add_provider("seer", openai_server.base_url, vision=True)
    use_provider(channel, "seer")


# --- the tests ----------------------------------------------------------------------------------


def test_dropped_files_become_chips_and_the_turn_shows_a_thumbnail_and_a_chip_to_everyone(
    host, browser, worker, channel, alice, bob, openai_server
):
    seeing_model(channel, openai_server)
    chat = chat_page(browser, host, "alice")
    other = chat_page(browser, host, "bob")

    drop(
        chat,
        "#transcript",
        [
            ("photo.png", "image/png", files.png((240, 160))),
            ("notes.pdf", "application/pdf", files.pdf(2)),
            ("logo.svg", "image/svg+xml", files.svg()),
        ],
    )
    expect(chat.locator(".upload-chip")).to_have_count(3)
    # The image's chip previews the file itself; the PDF's and the SVG's show their type.
    expect(chip(chat, "photo.png").locator(".preview img")).to_have_count(1)
    expect(chip(chat, "logo.svg").locator(".preview img")).to_have_count(0)
    expect(chip(chat, "logo.svg").locator(".kind-icon")).to_have_text("SVG")
    expect(chip(chat, "notes.pdf").locator(".kind-icon")).to_have_text("PDF")
    wait_ready(chat, "photo.png", "notes.pdf", "logo.svg")
    expect(chat.locator("#send")).to_be_enabled()
    expect(chat.locator("#send-blocked")).to_be_hidden()
    screenshot(chat, "composer-with-chips")

    chat.fill("#text", "What do these show?")
    chat.press("#text", "Enter")

    for page in (chat, other):
        turn = page.locator(".turn.role-user")
        expect(turn.locator(".body")).to_have_text("What do these show?")
        thumb = turn.locator(".attachment.thumb img")
        expect(thumb).to_have_attribute("alt", "photo.png")
        expect(thumb).to_have_attribute("loading", "lazy")
        assert "inline=1" in (thumb.get_attribute("src") or "")
        assert image_loaded(page, ".turn.role-user .attachment.thumb img")
        document = turn.locator(".attachment.file-chip", has_text="notes.pdf")
        expect(document).to_contain_text("notes.pdf")
        expect(document).to_contain_text("document")
        href = document.locator("a").get_attribute("href") or ""
        assert href.startswith("/api/uploads/") and href.endswith("/content")
        # An SVG can carry script: a download chip, never an <img>.
        expect(turn.locator(".attachment.file-chip", has_text="logo.svg")).to_have_count(1)
        expect(turn.locator("img[alt='logo.svg']")).to_have_count(0)
    # Sent: the chips are gone, the box is empty.
    expect(chat.locator(".upload-chip")).to_have_count(0)
    expect(chat.locator("#text")).to_have_value("")
    expect(chat.locator(".turn.role-bot .body")).to_have_text("Nice picture.")
    screenshot(chat, "turn-with-thumbnail")
    wait_until_no_generation()
    no_script_errors(chat, other)


def test_a_pasted_image_is_a_chip_and_cancelling_removes_it_and_the_upload(
    host, browser, worker, channel, alice
):
    chat = chat_page(browser, host, "alice")
    paste(chat, [("image.png", "image/png", files.png((32, 32)))])
    wait_ready(chat, "image.png")
    upload_id = chip(chat, "image.png").get_attribute("data-upload-id")
    assert upload_id
    found = chat.evaluate("(id) => fetch(`/api/uploads/${id}`).then((r) => r.status)", upload_id)
    assert found == 200
    # Nothing of the paste went into the box as text.
    expect(chat.locator("#text")).to_have_value("")

    chip(chat, "image.png").locator("button.remove").click()
    expect(chat.locator(".upload-chip")).to_have_count(0)
    expect(chat.locator("#uploads")).to_be_hidden()
    chat.wait_for_function(
        "(id) => fetch(`/api/uploads/${id}`).then((r) => r.status === 404)", arg=upload_id, timeout=10_000
    )
    no_script_errors(chat)


def test_refused_and_failed_files_name_themselves_and_block_sending_until_removed(
    host, browser, worker, channel, alice
):
    chat = chat_page(browser, host, "alice")
    # An HTML page under a PDF's name is refused at once (415); a PDF that breaks
    # pypdf is taken, then fails in the worker (an attachment_updated event says so).
    drop(chat, "#composer", [("report.pdf", "application/pdf", files.html())])
    expect(chip(chat, "report.pdf").locator(".state")).to_contain_text("failed:")
    expect(chat.locator("#notice")).to_contain_text("report.pdf")
    drop(chat, "#composer", [("broken.pdf", "application/pdf", files.broken_pdf())])
    expect(chip(chat, "broken.pdf").locator(".state")).to_contain_text("failed:", timeout=PROCESSED)
    expect(chat.locator("#notice")).to_contain_text("broken.pdf")
    expect(chat.locator("#send")).to_be_disabled()
    blocked = chat.locator("#send-blocked")
    expect(blocked).to_contain_text("Remove the failed files first: report.pdf, broken.pdf")
    chat.fill("#text", "Hello")
    chat.press("#text", "Enter")
    expect(chat.locator(".turn")).to_have_count(0)

    chip(chat, "report.pdf").locator("button.remove").click()
    expect(blocked).to_contain_text("Remove the failed file first: broken.pdf")
    chip(chat, "broken.pdf").locator("button.remove").click()
    expect(chat.locator("#send")).to_be_enabled()
    expect(chat.locator("#send-blocked")).to_be_hidden()
    no_script_errors(chat)
    # The page does not wait for the server's delete; the test does, so that the server's
    # transaction is not still running when the database is emptied for the next test
    # (PostgreSQL found a deadlock between the two in CI).
    wait_for(lambda: not Upload.objects.exists())


def test_a_refused_message_gives_its_files_and_text_back_to_send_again(
    host, browser, worker, channel, alice, bob, openai_server
):
    seeing_model(channel, openai_server)
    chat = chat_page(browser, host, "bob")
    drop(chat, "#composer", [("chart.png", "image/png", files.png((100, 80)))])
    wait_ready(chat, "chart.png")
    change_lock(actor=alice, channel=channel, locked=True)
    expect(chat.locator("body")).to_have_class(re.compile(r"\blocked\b"))
    chat.fill("#text", "See the chart")
    chat.press("#text", "Enter")
    # Refused (the channel is locked): the chip is ready again and the text is back.
    expect(chat.locator("#notice")).to_have_attribute("data-kind", "error")
    expect(chip(chat, "chart.png").locator(".state")).to_have_text("ready")
    expect(chat.locator("#text")).to_have_value("See the chart")
    expect(chat.locator(".turn")).to_have_count(0)

    change_lock(actor=alice, channel=channel, locked=False)
    expect(chat.locator("body")).not_to_have_class(re.compile(r"\blocked\b"))
    chat.press("#text", "Enter")
    expect(chat.locator(".turn.role-user .attachment.thumb img")).to_have_count(1)
    expect(chat.locator(".upload-chip")).to_have_count(0)
    expect(chat.locator("#text")).to_have_value("")
    wait_until_no_generation()
    no_script_errors(chat)


def test_a_private_channels_watch_link_shows_the_thumbnail_only_with_its_key(
    host, browser, worker, private_channel, alice, openai_server
):
    seeing_model(private_channel, openai_server)
    chat = chat_page(browser, host, "alice", "backroom")
    drop(chat, "#transcript", [("plan.png", "image/png", files.png((80, 60)))])
    wait_ready(chat, "plan.png")
    chat.press("#text", "Enter")  # files alone, no text
    expect(chat.locator(".turn.role-user .attachment.thumb img")).to_have_count(1)
    src = chat.locator(".turn.role-user .attachment.thumb img").get_attribute("src") or ""
    content = src.split("?")[0]

    key = private_channel.watch_key
    watch = open_live(new_page(browser), f"http://{host}/watch/backroom?key={key}")
    image = watch.locator(".turn.role-user .attachment.thumb img")
    expect(image).to_have_count(1)
    assert f"key={key}" in (image.get_attribute("src") or "")
    assert "inline=1" in (image.get_attribute("src") or "")
    assert image_loaded(watch, ".turn.role-user .attachment.thumb img")
    link = watch.locator(".turn.role-user .attachment.thumb a").get_attribute("href") or ""
    assert f"key={key}" in link and "inline" not in link
    screenshot(watch, "watch-with-thumbnail")

    # Logged out, without the key (or with a wrong one) the picture is not served.
    assert httpx.get(f"http://{host}{content}?inline=1").status_code == 404
    assert httpx.get(f"http://{host}{content}?inline=1&key=wrong").status_code == 404
    assert httpx.get(f"http://{host}{content}?inline=1&key={key}").status_code == 200

    # The owner deletes the file: every page shows it as deleted, without a link.
    upload_id = content.split("/")[3]
    deleted = chat.evaluate(
        """(id) => fetch(`/api/uploads/${id}`, {method: 'DELETE',
            headers: {'X-CSRFToken': document.getElementById('live').dataset.csrf}}).then((r) => r.status)""",
        upload_id,
    )
    assert deleted == 204
    for page in (chat, watch):
        gone = page.locator(".turn.role-user .attachment.deleted")
        expect(gone).to_contain_text("plan.png")
        expect(gone).to_contain_text("file deleted")
        expect(page.locator(".turn.role-user .attachment :is(img, a)")).to_have_count(0)
    wait_until_no_generation()
    no_script_errors(chat, watch)


# --- the microphone (its recording: tests/test_microphone_browser.py) ------------------------------


def test_the_mic_picks_a_recording_type_the_browser_has_and_hides_without_one(host, browser, channel, alice):
    chat = chat_page(browser, host, "alice")
    chosen = chat.evaluate(
        """async () => {
            const mic = await import('/static/js/mic.js');
            const only = (types) => (type) => types.includes(type);
            return {
                chrome: mic.recordingType(only(['audio/webm;codecs=opus', 'audio/webm'])),
                firefox: mic.recordingType(only(['audio/ogg;codecs=opus'])),
                safari: mic.recordingType(only(['audio/mp4'])),
                none: mic.recordingType(only([])),
                thisOne: mic.recordingType(),
                languages: [mic.transcriptionLanguage(['en']), mic.transcriptionLanguage(['fr-CA', 'de']),
                            mic.transcriptionLanguage(['xx']), mic.transcriptionLanguage(['pt-br'])],
            };
        }"""
    )
    assert chosen["chrome"] == ["audio/webm;codecs=opus", "webm"]
    assert chosen["firefox"] == ["audio/ogg;codecs=opus", "ogg"]
    assert chosen["safari"] == ["audio/mp4", "m4a"]
    assert chosen["none"] is None
    assert chosen["thisOne"] == ["audio/webm;codecs=opus", "webm"]  # Chromium itself
    assert chosen["languages"] == ["en-US", "fr-FR", "en-US", "pt-BR"]

    # A browser without MediaRecorder: no button.
    bare = new_page(browser)
    bare.add_init_script("delete window.MediaRecorder")
    # alice's session cookie (a Cookie read back is a valid cookie to set).
    bare.context.add_cookies(cast(Any, chat.context.cookies()))
    open_live(bare, f"http://{host}/channel/lobby")
    expect(bare.locator("#send")).to_be_visible()
    expect(bare.locator("#mic")).to_be_hidden()
    no_script_errors(chat, bare)

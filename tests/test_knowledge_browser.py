"""Knowledge bases in a real browser (issue 16), against a real server process and a real
worker (indexing with the offline embedder): a base is made on the knowledge page, a
pasted text and a PDF become ready while the page shows their progress, the search box
finds a passage and its link opens it highlighted, the base is attached to a room in the
channel settings; a room's member reads and searches a room's base without edit
controls, an outsider sees nothing of a private room's base; deleting asks first."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Dialog, FilePayload, Page, expect

from chat.models import Channel, KnowledgeBase
from tests import files
from tests.browser import log_in, new_page, no_script_errors, screenshot

pytestmark = pytest.mark.django_db(transaction=True)

INDEXED = 60_000  # ms: a short document is read and indexed by the worker well within this

OWLS = (
    "# Burrowing owls\n\n"
    "The burrowing owl nests underground, in burrows dug by prairie dogs or ground squirrels. "
    "It hunts insects and small mammals at dusk.\n\n"
    "# Snowy owls\n\n"
    "The snowy owl breeds on the Arctic tundra and winters on open fields and shores; "
    "its ring number in our survey is SN-4471."
)


def document_row(page: Page, name: str) -> Any:
    return page.locator("tr.document", has_text=name)


def paste_text(page: Page, name: str, text: str) -> None:
    if page.locator("#kb-paste").get_attribute("open") is None:
        page.click("#kb-paste summary")
    page.fill("#kb-text-name", name)
    page.fill("#kb-text-body", text)
    page.click("#kb-text-submit")
    expect(document_row(page, name)).to_be_visible()


def create_base(page: Page, host: str, name: str, description: str = "", room: str = "") -> str:
    """Make a base through the list page's form; its id, from the page it opens."""
    page.goto(f"http://{host}/knowledge/")
    page.fill("#kb-name", name)
    page.fill("#kb-description", description)
    if room:
        page.select_option("#kb-channel", room)
    page.click("#kb-create-submit")
    expect(page.locator("#kb-title")).to_have_text(name)
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def accept_dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    def accept(dialog: Dialog) -> None:
        seen.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return seen


def test_a_base_is_made_filled_searched_and_attached_to_a_room_from_the_pages(
    host, browser, worker, channel, alice
):
    page = log_in(browser, host, "alice")
    page.click("header nav >> text=Knowledge")
    expect(page.locator("h1")).to_have_text("Knowledge bases")
    expect(page.locator("#kb-empty")).to_be_visible()
    base_id = create_base(page, host, "Field guide", "Birds we <b>ringed</b>")
    # Text the user typed is shown as text.
    expect(page.locator("#kb-description")).to_have_text("Birds we <b>ringed</b>")
    expect(page.locator("#kb-manage")).to_be_visible()

    paste_text(page, "owls.md", OWLS)
    row = document_row(page, "owls.md")
    expect(row).to_be_visible()
    expect(row.locator(".doc-state")).to_have_text("ready", timeout=INDEXED)
    assert int(row.locator("td.num").inner_text()) >= 1

    # A file: its upload, then the worker reads and indexes it while the page follows.
    page.set_input_files(
        "#kb-files",
        files=[FilePayload(name="survey.pdf", mimeType="application/pdf", buffer=files.pdf(3))],
    )
    expect(document_row(page, "survey.pdf").locator(".doc-state")).to_have_text("ready", timeout=INDEXED)
    expect(page.locator("#kb-uploads")).to_be_hidden()

    page.fill("#kb-query", "where do burrowing owls nest")
    page.press("#kb-query", "Enter")
    first = page.locator("#search-results .result").first
    expect(first).to_contain_text("burrows dug by prairie dogs")
    expect(first.locator(".result-where")).to_contain_text("owls.md")
    expect(first.locator("mark").first).to_be_visible()
    score = float(first.locator(".score").inner_text())
    assert 0 < score <= 1

    # A rare code is found by its keyword; a PDF's passage names the page it starts on
    # (the short PDF is one passage).
    page.fill("#kb-query", "colloquy-0002")
    page.press("#kb-query", "Enter")
    code = page.locator("#search-results .result").first
    expect(code).to_contain_text("colloquy-0002")
    expect(code.locator(".result-where")).to_have_text("survey.pdf · page 1")

    # The passage view, as a citation link opens it.
    page.fill("#kb-query", "SN-4471 snowy owl")
    page.press("#kb-query", "Enter")
    hit = page.locator("#search-results .result", has_text="SN-4471").first
    chunk = hit.get_attribute("data-chunk")
    hit.locator(".result-where").click()
    expect(page).to_have_url(f"http://{host}/knowledge/{base_id}/?chunk={chunk}")
    expect(page.locator("#passage .passage-text")).to_contain_text("SN-4471")
    expect(document_row(page, "owls.md")).to_have_class("document cited")
    # docs/screenshots/knowledge.png is this one (test-artifacts/knowledge.png).
    screenshot(page, "knowledge")
    page.reload()  # the link alone opens it
    expect(page.locator("#passage .passage-text")).to_contain_text("SN-4471")
    expect(page.locator("#passage .passage-where")).to_contain_text("owls.md")

    page.goto(f"http://{host}/knowledge/")
    listed = page.locator(f'tr[data-base="{base_id}"]')
    expect(listed.locator("td.num")).to_have_text("2")
    expect(listed.locator(".kb-state")).to_have_text("2 ready")

    # Attached to the room in its settings.
    page.goto(f"http://{host}/channel/lobby")
    expect(page.locator("#conn")).to_have_attribute("data-state", "connected")
    page.click(".settings summary")
    box = page.locator(f'#kb-checklist input[value="{base_id}"]')
    expect(box).not_to_be_checked()
    box.check()
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#notice")).to_have_text("Settings saved.")
    assert list(Channel.objects.get(name="lobby").knowledge_bases.values_list("pk", flat=True)) == [
        KnowledgeBase.objects.get().pk
    ]
    page.reload()
    page.click(".settings summary")
    expect(page.locator(f'#kb-checklist input[value="{base_id}"]')).to_be_checked()
    no_script_errors(page)


def test_a_rooms_member_reads_and_searches_its_base_an_outsider_sees_nothing_of_it(
    host, browser, worker, private_channel, alice, bob, carol
):
    owner = log_in(browser, host, "alice")
    base_id = create_base(owner, host, "Backroom notes", room="backroom")
    paste_text(owner, "plans.txt", "The harvest festival is on the second Saturday of October.")
    expect(document_row(owner, "plans.txt").locator(".doc-state")).to_have_text("ready", timeout=INDEXED)
    expect(owner.locator("#kb-owner")).to_have_text("room backroom")

    member = log_in(browser, host, "bob")
    member.goto(f"http://{host}/knowledge/")
    expect(member.locator(f'tr[data-base="{base_id}"]')).to_contain_text("room backroom")
    member.goto(f"http://{host}/knowledge/{base_id}/")
    expect(document_row(member, "plans.txt")).to_be_visible()
    expect(member.locator("#kb-manage")).to_be_hidden()
    expect(member.locator(".doc-delete")).to_have_count(0)
    member.fill("#kb-query", "when is the harvest festival")
    member.press("#kb-query", "Enter")
    expect(member.locator("#search-results .result").first).to_contain_text("second Saturday")

    outsider = log_in(browser, host, "carol")
    outsider.goto(f"http://{host}/knowledge/")
    expect(outsider.locator("#kb-empty")).to_be_visible()
    outsider.goto(f"http://{host}/knowledge/{base_id}/")
    expect(outsider.locator("#kb-title")).to_have_text("No such knowledge base")
    expect(outsider.locator("#kb-body")).to_be_hidden()
    no_script_errors(owner, member, outsider)


def test_deleting_a_document_and_the_base_asks_first(host, browser, worker, alice):
    page = log_in(browser, host, "alice")
    base_id = create_base(page, host, "Scratch")
    paste_text(page, "one.txt", "First note.")
    paste_text(page, "two.txt", "Second note.")
    expect(document_row(page, "two.txt").locator(".doc-state")).to_have_text("ready", timeout=INDEXED)

    declined: list[str] = []

    def decline(dialog: Dialog) -> None:
        declined.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    document_row(page, "one.txt").locator(".doc-delete").click()
    expect(document_row(page, "one.txt")).to_have_count(1)
    assert declined == ['Delete "one.txt" from this knowledge base?']

    asked = accept_dialogs(page)
    document_row(page, "one.txt").locator(".doc-delete").click()
    expect(document_row(page, "one.txt")).to_have_count(0)
    page.click(".kb-edit summary")
    page.click("#kb-delete")
    expect(page).to_have_url(f"http://{host}/knowledge/")
    assert asked[-1] == 'Delete the knowledge base "Scratch" and its 1 document? This cannot be undone.'
    assert not KnowledgeBase.objects.filter(pk=base_id).exists()
    no_script_errors(page)


def test_a_citation_link_shows_its_passage_to_a_reader_of_the_reply_and_nothing_else(
    host, browser, worker, channel, alice
):
    """A reply's citation links to /knowledge/{base}/?chunk=N&turn=T: a watch page's
    anonymous visitor, who cannot read alice's own base, sees that passage (the API lets
    readers of the citing reply read it) and nothing more of the base."""
    from chat import services

    page = log_in(browser, host, "alice")
    base_id = create_base(page, host, "Field guide")
    paste_text(page, "owls.md", OWLS)
    expect(document_row(page, "owls.md").locator(".doc-state")).to_have_text("ready", timeout=INDEXED)
    chunk = KnowledgeBase.objects.get().chunks.order_by("ordinal").first()
    assert chunk is not None
    reply = services.inject(channel=channel, user=alice, role="bot", text="They nest underground [1].")
    reply.sources = [
        {
            "n": 1,
            "kb": {"id": base_id, "name": "Field guide"},
            "document": {"id": str(chunk.document_id), "name": "owls.md"},
            "chunk": chunk.pk,
            "score": 0.8,
            "snippet": chunk.text[:300],
            "page": None,
        }
    ]
    reply.save(update_fields=["sources"])

    visitor = new_page(browser)
    visitor.goto(f"http://{host}/knowledge/{base_id}/?chunk={chunk.pk}&turn={reply.pk}")
    expect(visitor.locator("#passage .passage-text")).to_contain_text("burrowing owl")
    expect(visitor.locator("#kb-title")).to_have_text("Field guide")
    expect(visitor.locator("#kb-body")).to_be_hidden()
    visitor.goto(f"http://{host}/knowledge/{base_id}/?chunk={chunk.pk}")
    expect(visitor.locator("#kb-title")).to_have_text("No such knowledge base")
    expect(visitor.locator("#passage")).to_be_hidden()
    no_script_errors(page, visitor)

"""The knowledge-base REST API: create, list, read, change, delete; documents from uploads
and pasted text; attaching bases to a channel; the events a room hears; strict input.
Access rules, attacked: tests/test_knowledge_access.py."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from chat.models import KnowledgeBase, KnowledgeChunk, KnowledgeDocument, ModerationAction, Upload
from chat.uploads.services import create_upload
from tests.conftest import channel_events, client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]

KB = "/api/knowledge-bases"


def create(user, **body):
    return client_for(user).post(KB, body, format="json")


def ready_upload(user, text: str = "Tomatoes need warmth.\n", name: str = "notes.txt", **meta) -> Upload:
    """An upload of the user's, read already (as the worker leaves it)."""
    upload = create_upload(user=user, data_or_file=text.encode(), name=name)
    Upload.objects.filter(pk=upload.pk).update(status="ready", progress=100, text=text, meta=meta)
    upload.refresh_from_db()
    return upload


def kb_events(channel) -> list[dict]:
    return [e for e in channel_events(channel) if e["type"] == "knowledge_base_updated"]


def test_a_person_creates_a_base_of_their_own_and_only_they_see_it(alice, bob):
    made = create(alice, name="  Garden notes ", description="What I learnt")
    assert made.status_code == 201, made.content
    body = made.json()
    assert body["name"] == "Garden notes" and body["description"] == "What I learnt"
    assert body["owner"] == "alice" and body["channel"] is None
    assert body["embedder"] == "local:wordllama-l2-256" and body["dims"] == 256
    assert body["documents"] == [] and body["can_manage"] is True
    assert client_for(alice).get(f"{KB}/{body['id']}").json() == body
    assert client_for(alice).get(KB).json() == {"knowledge_bases": [body]}
    assert client_for(bob).get(f"{KB}/{body['id']}").status_code == 404
    assert client_for(bob).get(KB).json() == {"knowledge_bases": []}


def test_a_channel_base_is_attached_at_once_and_the_room_is_told(channel, alice, bob):
    made = create(alice, name="Lobby FAQ", channel="lobby").json()
    assert made["owner"] is None and made["channel"] == "lobby"
    detail = client_for(bob).get("/api/channels/lobby").json()
    assert detail["knowledge_base_ids"] == [made["id"]]
    seen = client_for(bob).get(f"{KB}/{made['id']}").json()
    assert seen["can_manage"] is False and seen["name"] == "Lobby FAQ"
    (told,) = kb_events(channel)
    assert told == {**told, "knowledge_base": made["id"], "document": None}
    updates = [e for e in channel_events(channel) if e["type"] == "channel_updated"]
    assert updates[-1]["knowledge_base_ids"] == [made["id"]]


def test_only_the_owner_or_a_moderator_may_give_a_channel_a_base(channel, bob, mona):
    refused = create(bob, name="Mine", channel="lobby")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert create(mona, name="Rules", channel="lobby").status_code == 201
    assert ModerationAction.objects.filter(action="create_knowledge_base", actor=mona).exists()
    assert create(bob, name="x", channel="nowhere").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "ok", "description": "d" * 2001}, "description"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"name": "a\u0000b"}, "name"),
        ({}, "name"),
    ],
)
def test_bad_input_to_create_is_400_naming_the_field(alice, body, field):
    response = create(alice, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not KnowledgeBase.objects.exists()


def test_a_form_body_is_refused(alice):
    response = client_for(alice).post(KB, {"name": "x"}, format="multipart")
    assert response.status_code == 400 and response.json()["code"] == "invalid"


def test_rename_and_describe_by_the_manager_only(channel, alice, bob):
    made = create(alice, name="FAQ", channel="lobby").json()
    url = f"{KB}/{made['id']}"
    changed = client_for(alice).patch(url, {"name": "Lobby FAQ", "description": "new"}, format="json")
    assert changed.status_code == 200 and changed.json()["name"] == "Lobby FAQ"
    assert client_for(bob).patch(url, {"name": "Mine"}, format="json").status_code == 403
    assert client_for(alice).patch(url, {"owner": "bob"}, format="json").status_code == 400
    assert client_for(alice).patch(url, {"name": ""}, format="json").status_code == 400
    assert KnowledgeBase.objects.get().name == "Lobby FAQ"
    assert len(kb_events(channel)) == 2  # created, renamed


def test_pasted_text_becomes_a_document_queued_for_indexing(alice):
    base = create(alice, name="Notes").json()
    added = client_for(alice).post(
        f"{KB}/{base['id']}/documents", {"name": "Recipe", "text": "Basil likes sun."}, format="json"
    )
    assert added.status_code == 201, added.content
    (document,) = added.json()["documents"]
    assert document["name"] == "Recipe" and document["upload"] is None
    assert document["status"] in ("indexing", "ready")
    row = KnowledgeDocument.objects.get(pk=document["id"])
    assert row.text == "Basil likes sun." and row.added_by == alice
    several = client_for(alice).post(
        f"{KB}/{base['id']}/documents",
        {"texts": [{"name": "a", "text": "one"}, {"name": "b", "text": "two"}]},
        format="json",
    )
    assert several.status_code == 201 and len(several.json()["documents"]) == 2
    listed = client_for(alice).get(f"{KB}/{base['id']}").json()["documents"]
    assert [d["name"] for d in listed] == ["Recipe", "a", "b"]


def test_pasted_text_over_the_limit_is_413_naming_the_field(alice, settings):
    settings.KB_MAX_TEXT_CHARS = 10
    base = create(alice, name="Notes").json()
    url = f"{KB}/{base['id']}/documents"
    one = client_for(alice).post(url, {"name": "big", "text": "x" * 11}, format="json")
    assert one.status_code == 413 and one.json()["code"] == "too_large"
    assert "KB_MAX_TEXT_CHARS (10 characters)" in one.json()["detail"] and "text" in one.json()["fields"]
    many = client_for(alice).post(
        url, {"texts": [{"name": "a", "text": "x" * 6}, {"name": "b", "text": "y" * 6}]}, format="json"
    )
    assert many.status_code == 413 and many.json()["fields"] == {
        "texts": {"1": {"text": [many.json()["detail"]]}}
    }
    assert not KnowledgeDocument.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "hello"}, "name"),
        ({"name": "n"}, "text"),
        ({"name": "n", "text": "   "}, "text"),
        ({"name": "", "text": "x"}, "name"),
        ({"uploads": "not-a-list"}, "uploads"),
        ({"uploads": [5]}, "uploads"),
        ({"uploads": ["nope"]}, "uploads"),
        ({"texts": [{"name": "a", "text": "b", "page": 1}]}, "texts"),
        ({"texts": [{"name": "a"}]}, "texts"),
        ({"uploads": [], "text": "x", "name": "n"}, "non_field_errors"),
        ({}, "non_field_errors"),
        ({"url": "http://example.com"}, "url"),
    ],
)
def test_bad_documents_are_400_naming_the_field(alice, body, field):
    base = create(alice, name="Notes").json()
    response = client_for(alice).post(f"{KB}/{base['id']}/documents", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"], response.json()
    assert not KnowledgeDocument.objects.exists()


def test_uploads_become_documents_by_their_state(alice):
    base = create(alice, name="Files").json()
    url = f"{KB}/{base['id']}/documents"
    ready = ready_upload(alice, "Page one.\fPage two.", name="book.pdf", page_starts=[0, 10])
    sheet = ready_upload(alice, "a,b", name="t.xlsx", sheet_starts=[["Sheet1", 0]])
    waiting = create_upload(user=alice, data_or_file=b"still being read\n", name="later.txt")
    added = client_for(alice).post(
        url, {"uploads": [str(ready.pk), str(sheet.pk), str(waiting.pk)]}, format="json"
    )
    assert added.status_code == 201, added.content
    docs = {d["name"]: d for d in added.json()["documents"]}
    assert docs["later.txt"]["status"] == "waiting" and docs["later.txt"]["upload"] == str(waiting.pk)
    assert docs["book.pdf"]["status"] in ("indexing", "ready")
    book = KnowledgeDocument.objects.get(pk=docs["book.pdf"]["id"])
    assert book.text == "Page one.\fPage two." and book.meta == {"pages": [0, 10]}
    assert KnowledgeDocument.objects.get(pk=docs["t.xlsx"]["id"]).meta == {"sheets": [["Sheet1", 0]]}
    again = client_for(alice).post(url, {"uploads": [str(ready.pk)]}, format="json")
    assert again.status_code == 400 and "already" in again.json()["detail"]


def test_an_image_a_failed_upload_and_someone_elses_are_refused_naming_them(alice, bob):
    from tests import files

    base = create(alice, name="Files").json()
    url = f"{KB}/{base['id']}/documents"
    image = create_upload(user=alice, data_or_file=files.png(), name="cat.png")
    refused = client_for(alice).post(url, {"uploads": [str(image.pk)]}, format="json")
    assert refused.status_code == 415 and refused.json()["code"] == "unsupported_type"
    assert str(image.pk) in refused.json()["fields"]["uploads"][0]
    failed = create_upload(user=alice, data_or_file=b"x\n", name="x.txt")
    Upload.objects.filter(pk=failed.pk).update(status="failed", error="broken PDF")
    refused = client_for(alice).post(url, {"uploads": [str(failed.pk)]}, format="json")
    assert refused.status_code == 400 and "broken PDF" in refused.json()["detail"]
    assert str(failed.pk) in refused.json()["detail"]
    theirs = ready_upload(bob)
    refused = client_for(alice).post(url, {"uploads": [str(theirs.pk)]}, format="json")
    missing = client_for(alice).post(
        url, {"uploads": ["00000000-0000-0000-0000-000000000000"]}, format="json"
    )
    assert refused.status_code == missing.status_code == 400
    assert refused.json()["detail"].replace(str(theirs.pk), "ID") == missing.json()["detail"].replace(
        "00000000-0000-0000-0000-000000000000", "ID"
    )  # the same words: ids cannot be probed
    assert not KnowledgeDocument.objects.exists()


def test_a_base_holds_at_most_kb_max_documents(alice, settings):
    settings.KB_MAX_DOCUMENTS_PER_BASE = 2
    base = create(alice, name="Small").json()
    url = f"{KB}/{base['id']}/documents"
    texts = [{"name": str(i), "text": "x"} for i in range(3)]
    refused = client_for(alice).post(url, {"texts": texts}, format="json")
    assert refused.status_code == 413 and "KB_MAX_DOCUMENTS_PER_BASE (2)" in refused.json()["detail"]
    assert client_for(alice).post(url, {"texts": texts[:2]}, format="json").status_code == 201
    assert client_for(alice).post(url, {"name": "n", "text": "x"}, format="json").status_code == 413


def test_a_base_being_reembedded_takes_no_documents(alice):
    base = create(alice, name="Moving").json()
    KnowledgeBase.objects.filter(pk=base["id"]).update(next_embedder="provider:x:y")
    refused = client_for(alice).post(
        f"{KB}/{base['id']}/documents", {"name": "n", "text": "x"}, format="json"
    )
    assert refused.status_code == 409 and refused.json()["code"] == "not_ready"


def add_chunk(document: KnowledgeDocument, text: str = "a passage", page: int | None = 1) -> KnowledgeChunk:
    base = document.knowledge_base
    return KnowledgeChunk.objects.create(
        knowledge_base=base,
        document=document,
        generation=base.generation,
        ordinal=0,
        text=text,
        page=page,
        start=0,
        end=len(text),
        dims=base.dims,
    )


def test_deleting_a_document_takes_its_passages_and_moves_the_revision(channel, alice, bob):
    base = create(alice, name="FAQ", channel="lobby").json()
    (doc,) = (
        client_for(alice)
        .post(f"{KB}/{base['id']}/documents", {"name": "n", "text": "x"}, format="json")
        .json()["documents"]
    )
    add_chunk(KnowledgeDocument.objects.get(pk=doc["id"]))
    revision = KnowledgeBase.objects.get().revision
    url = f"{KB}/{base['id']}/documents/{doc['id']}"
    assert client_for(bob).delete(url).status_code == 403
    assert client_for(alice).delete(url).status_code == 204
    assert not KnowledgeDocument.objects.exists() and not KnowledgeChunk.objects.exists()
    assert KnowledgeBase.objects.get().revision == revision + 1
    assert client_for(alice).delete(url).status_code == 404
    assert client_for(alice).delete(f"{KB}/{base['id']}/documents/not-an-id").status_code == 404
    last = kb_events(channel)[-1]
    assert last["document"]["id"] == doc["id"] and last["document"]["status"] == "deleted"


def test_deleting_a_base_takes_everything_and_detaches_it(channel, alice, bob):
    base = create(alice, name="FAQ", channel="lobby").json()
    mine = create(alice, name="Mine").json()
    patched = client_for(alice).patch(
        "/api/channels/lobby", {"knowledge_base_ids": [base["id"], mine["id"]]}, format="json"
    )
    assert patched.status_code == 200
    assert sorted(patched.json()["knowledge_base_ids"]) == sorted([base["id"], mine["id"]])
    (doc,) = (
        client_for(alice)
        .post(f"{KB}/{base['id']}/documents", {"name": "n", "text": "x"}, format="json")
        .json()["documents"]
    )
    add_chunk(KnowledgeDocument.objects.get(pk=doc["id"]))
    assert client_for(bob).delete(f"{KB}/{base['id']}").status_code == 403
    assert client_for(alice).delete(f"{KB}/{base['id']}").status_code == 204
    assert not KnowledgeDocument.objects.exists() and not KnowledgeChunk.objects.exists()
    assert client_for(alice).get("/api/channels/lobby").json()["knowledge_base_ids"] == [mine["id"]]
    assert client_for(alice).get(f"{KB}/{base['id']}").status_code == 404
    updates = [e for e in channel_events(channel) if e["type"] == "channel_updated"]
    assert updates[-1]["knowledge_base_ids"] == [mine["id"]]


def test_a_channel_attaches_its_own_and_its_managers_bases_only(channel, alice, bob, carol):
    own = create(alice, name="Lobby", channel="lobby").json()
    alices = create(alice, name="Alice's").json()
    bobs = create(bob, name="Bob's").json()
    url = "/api/channels/lobby"
    refused = client_for(alice).patch(url, {"knowledge_base_ids": [own["id"], bobs["id"]]}, format="json")
    assert refused.status_code == 400 and bobs["id"] in refused.json()["fields"]["knowledge_base_ids"][0]
    unknown = "11111111-1111-1111-1111-111111111111"
    missing = client_for(alice).patch(url, {"knowledge_base_ids": [unknown]}, format="json")
    assert missing.status_code == 400 and unknown in missing.json()["detail"]
    assert client_for(alice).patch(url, {"knowledge_base_ids": ["x"]}, format="json").status_code == 400
    assert client_for(alice).patch(url, {"knowledge_base_ids": "x"}, format="json").status_code == 400
    assert client_for(bob).patch(url, {"knowledge_base_ids": [bobs["id"]]}, format="json").status_code == 403
    both = client_for(alice).patch(
        url, {"knowledge_base_ids": [alices["id"], own["id"], alices["id"]]}, format="json"
    )
    assert both.status_code == 200 and sorted(both.json()["knowledge_base_ids"]) == sorted(
        [alices["id"], own["id"]]
    )
    before = len([e for e in channel_events(channel) if e["type"] == "channel_updated"])
    cleared = client_for(alice).patch(url, {"knowledge_base_ids": [], "title": "Lobby!"}, format="json")
    assert cleared.status_code == 200 and cleared.json()["knowledge_base_ids"] == []
    updates = [e for e in channel_events(channel) if e["type"] == "channel_updated"]
    assert len(updates) == before + 1 and updates[-1]["knowledge_base_ids"] == []  # one event
    # an attached base stays attachable (a moderator attached theirs; the owner keeps it)
    client_for(alice).patch(url, {"knowledge_base_ids": [alices["id"]]}, format="json")
    kept = client_for(alice).patch(url, {"knowledge_base_ids": [alices["id"], own["id"]]}, format="json")
    assert kept.status_code == 200


def test_a_channel_uses_at_most_20_bases(channel, alice):
    ids = [create(alice, name=f"b{i}").json()["id"] for i in range(21)]
    refused = client_for(alice).patch("/api/channels/lobby", {"knowledge_base_ids": ids}, format="json")
    assert refused.status_code == 413 and "knowledge_base_ids" in refused.json()["fields"]


def test_available_lists_own_the_channels_and_attached(channel, alice, bob, carol):
    own = create(alice, name="Lobby", channel="lobby").json()
    alices = create(alice, name="Alice's").json()
    client_for(alice).patch(
        "/api/channels/lobby", {"knowledge_base_ids": [own["id"], alices["id"]]}, format="json"
    )
    bobs = create(bob, name="Bob's").json()
    create(carol, name="Carol's")
    seen = client_for(bob).get(f"{KB}/available?channel=lobby").json()["knowledge_bases"]
    assert sorted(b["id"] for b in seen) == sorted([own["id"], alices["id"], bobs["id"]])
    assert client_for(bob).get(f"{KB}/available").status_code == 400
    assert client_for(bob).get(f"{KB}/available?channel=nowhere").status_code == 404
    assert client_for(bob).get(f"{KB}/available?channel=lobby&x=1").status_code == 400
    # the channel's list: its own and attached ones
    listed = client_for(carol).get(f"{KB}?channel=lobby").json()["knowledge_bases"]
    assert sorted(b["id"] for b in listed) == sorted([own["id"], alices["id"]])


def test_an_admin_deletes_any_base_through_the_service_and_it_is_audited(alice, admin_user):
    base = create(alice, name="Spam").json()
    assert client_for(admin_user).delete(f"{KB}/{base['id']}").status_code == 404  # not theirs to read
    from django.test import Client

    desk = Client()
    desk.force_login(admin_user)
    answer = desk.post(
        "/admin/chat/knowledgebase/",
        {"action": "delete_selected", "_selected_action": [base["id"]], "post": "yes"},
    )
    assert answer.status_code == 302
    assert not KnowledgeBase.objects.exists()
    record = ModerationAction.objects.get(action="delete_knowledge_base")
    assert record.actor == admin_user and record.target_id == base["id"]


def test_the_desk_shows_bases_and_documents(channel, alice, admin_user):
    base = create(alice, name="FAQ", channel="lobby").json()
    client_for(alice).post(f"{KB}/{base['id']}/documents", {"name": "n", "text": "x"}, format="json")
    from django.test import Client

    desk = Client()
    desk.force_login(admin_user)
    for path in ("knowledgebase", "knowledgedocument", "knowledgechunk"):
        assert desk.get(f"/admin/chat/{path}/").status_code == 200
    assert desk.get(f"/admin/chat/knowledgebase/{base['id']}/change/").status_code == 200
    assert desk.get(f"/admin/chat/channel/{channel.pk}/change/").status_code == 200


def test_anonymous_callers_are_401(alice):
    base = create(alice, name="Mine").json()
    anonymous = APIClient()
    assert anonymous.get(KB).status_code == 401
    assert anonymous.post(KB, {"name": "x"}, format="json").status_code == 401
    assert anonymous.get(f"{KB}/{base['id']}").status_code == 401
    assert anonymous.delete(f"{KB}/{base['id']}").status_code == 401
    assert anonymous.get(f"{KB}/available?channel=lobby").status_code == 401
    assert anonymous.post(f"{KB}/{base['id']}/search", {"query": "x"}, format="json").status_code == 401
    assert KnowledgeBase.objects.count() == 1


def test_session_logins_need_the_csrf_token(alice):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(KB, {"name": "x"}, format="json").status_code == 403
    assert client.get(KB).status_code == 200
    assert not KnowledgeBase.objects.exists()


def test_a_form_upload_in_the_documents_body_is_refused(alice):
    base = create(alice, name="Files").json()
    response = client_for(alice).post(
        f"{KB}/{base['id']}/documents", {"file": SimpleUploadedFile("a.txt", b"x")}, format="multipart"
    )
    assert response.status_code == 400

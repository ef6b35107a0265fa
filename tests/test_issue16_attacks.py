"""Issue 16 (knowledge bases) attacked from outside: a second door around a limit the
uploads keep, and a document left waiting for ever on an upload that went. Each test here
failed on the code it guards."""

from __future__ import annotations

import pytest
from django.test import override_settings

from chat import limits
from chat.knowledge import services as kb_services
from chat.models import KnowledgeDocument
from chat.uploads.services import create_upload, delete_upload
from tests.conftest import channel_events, client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]

KB = "/api/knowledge-bases"


@override_settings(DAILY_UPLOAD_BYTES=1000)
def test_pasted_text_counts_against_the_daily_upload_limit(alice):
    """Pasted text is stored and indexed like an uploaded file's: without counting it, a
    base (500 documents of 2,000,000 characters, bases without number) was a door around
    DAILY_UPLOAD_BYTES."""
    base = kb_services.create_base(user=alice, name="Mine")
    url = f"{KB}/{base.pk}/documents"
    first = client_for(alice).post(url, {"name": "a", "text": "é" * 300}, format="json")
    assert first.status_code == 201, first.content
    assert limits.upload_bytes_today(alice) == 600  # UTF-8 bytes, as a file's
    refused = client_for(alice).post(
        url, {"texts": [{"name": "b", "text": "x" * 300}, {"name": "c", "text": "y" * 200}]}, format="json"
    )
    assert refused.status_code == 429, refused.content
    assert refused.json()["code"] == "quota_exceeded"
    assert KnowledgeDocument.objects.filter(knowledge_base=base).count() == 1
    assert limits.upload_bytes_today(alice) == 600
    # A refusal for another reason counts nothing.
    too_many = client_for(alice).post(url, {"name": "d", "text": "\x00"}, format="json")
    assert too_many.status_code == 400 and limits.upload_bytes_today(alice) == 600
    fits = client_for(alice).post(url, {"name": "e", "text": "z" * 400}, format="json")
    assert fits.status_code == 201 and limits.upload_bytes_today(alice) == 1000


def test_a_document_waiting_on_an_upload_deleted_before_it_was_read_ends_failed(channel, alice):
    """Deleting the upload set the document's upload to null and left it ``waiting`` for
    ever: no worker would ever hand it a text. It ends failed, saying why, and the room
    is told."""
    base = kb_services.create_base(user=alice, name="Room files", channel=channel)
    upload = create_upload(user=alice, data_or_file=b"still being read\n", name="later.txt")
    (document,) = kb_services.add_documents(user=alice, base=base, upload_ids=[str(upload.pk)])
    assert document.status == "waiting"
    delete_upload(user=alice, upload=upload)
    document.refresh_from_db()
    assert document.status == "failed", document.status
    assert "deleted" in document.error
    told = [
        e
        for e in channel_events(channel)
        if e["type"] == "knowledge_base_updated" and (e["document"] or {}).get("id") == str(document.pk)
    ]
    assert told[-1]["document"]["status"] == "failed"

"""Indexing through a real Celery worker (tests/processes.py): progress saved and
published as knowledge_base_updated for a channel's base; a base searchable while it
grows; an embedding service failing leaves its document failed with the reason and the
rest of the base searchable; documents waiting on an upload are indexed when it is
read (pages known from the PDF); re-embedding switches generations without mixing
vectors, and a failed one stays on the old; the reembed_knowledge command."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from chat.knowledge import search
from chat.knowledge.embeddings import LOCAL_KEY
from chat.knowledge.indexing import queue_indexing
from chat.models import KnowledgeBase, KnowledgeChunk, KnowledgeDocument
from chat.uploads.services import create_upload
from tests import files
from tests.conftest import add_provider, channel_events, wait_for
from tests.fake_models import FakeModelServer
from tests.knowledge_helpers import add_document, make_base, topic_text

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("_remove_new_upload_files")]


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    # Small batches: a document of a few chunks is written (and searchable) chunk by chunk.
    return {"KB_EMBED_BATCH": "2"}


@pytest.fixture
def embedding_server() -> Any:
    server = FakeModelServer("openai").start()
    yield server
    server.stop()


def queued(document: KnowledgeDocument) -> KnowledgeDocument:
    with transaction.atomic():
        queue_indexing(document)
    return document


def ended(document: KnowledgeDocument, timeout: float = 30) -> KnowledgeDocument:
    def done() -> KnowledgeDocument | None:
        document.refresh_from_db()
        return document if document.status in ("ready", "failed") else None

    return wait_for(done, timeout)


def test_channel_base_indexes_with_progress_events(worker: Any, channel: Any, alice: Any) -> None:
    base = make_base(channel=channel, name="Room notes")
    document = ended(queued(add_document(base, "reference.md", topic_text("try", "class", "for"))))

    assert document.status == "ready", document.error
    chunks = KnowledgeChunk.objects.filter(document=document)
    assert document.chunk_count == chunks.count() > 3 and document.progress == 100
    assert set(chunks.values_list("generation", "dims")) == {(1, 256)}
    assert list(chunks.order_by("ordinal").values_list("ordinal", flat=True)) == list(range(chunks.count()))

    def last_event() -> list[dict[str, Any]] | None:
        events = [e for e in channel_events(channel) if e["type"] == "knowledge_base_updated"]
        return events if events and events[-1]["document"]["status"] == "ready" else None

    events = wait_for(last_event)
    assert events[-1]["knowledge_base"] == str(base.pk)
    assert events[-1]["document"] == {
        "id": str(document.pk),
        "name": "reference.md",
        "status": "ready",
        "progress": 100,
        "error": None,
        "chunks": document.chunk_count,
    }
    assert events[0]["document"]["status"] == "indexing"
    progress = [e["document"]["progress"] for e in events]
    assert progress == sorted(progress)
    assert search.search([base], "catching exceptions", limit=3).hits

    # Indexed again, as a task delivered twice would (acks_late after a worker died): the
    # same chunks, none twice. Its document is indexing then, so ``ended`` waits for this
    # run; a ready one returned at once and the test ended while the worker still wrote
    # (CI: the database's flush deadlocked with it).
    count = document.chunk_count
    KnowledgeDocument.objects.filter(pk=document.pk).update(status=KnowledgeDocument.Status.INDEXING)
    document = ended(queued(document))
    assert document.status == "ready", document.error
    assert KnowledgeChunk.objects.filter(document=document).count() == count == document.chunk_count


def test_a_base_is_searchable_while_it_grows(
    worker: Any, alice: Any, embedding_server: FakeModelServer
) -> None:
    add_provider("emb", embedding_server.base_url)
    base = make_base(owner=alice, embedder="provider:emb:m", dims=64)
    embedding_server.behaviour.delay = 0.3  # each batch of two chunks takes the service 0.3 s
    text = "\n\n".join(
        f"Part {n}. " + f"Ticket XJ-{n:04d} concerns billing export number {n}. " * 30 for n in range(8)
    )
    document = queued(add_document(base, "long.txt", text))

    def found_while_indexing() -> bool:
        hits = search.search([base], "XJ-0000 billing", limit=3).hits
        document.refresh_from_db()
        assert document.status != "failed", document.error
        return bool(hits) and document.status == "indexing" and 0 < document.progress < 100

    wait_for(found_while_indexing, 30)
    assert ended(document).status == "ready"


def test_failing_embedding_service_fails_only_its_document(
    worker: Any, alice: Any, embedding_server: FakeModelServer
) -> None:
    add_provider("emb", embedding_server.base_url)
    base = make_base(owner=alice, embedder="provider:emb:m", dims=64)
    good = ended(queued(add_document(base, "good.txt", "Ticket XJ-4471 concerns the billing export.")))
    assert good.status == "ready", good.error

    embedding_server.behaviour.status = 503
    bad = ended(queued(add_document(base, "bad.txt", topic_text("try"))))
    assert (bad.status, bad.error, bad.chunk_count) == (
        "failed",
        "the embedding provider emb failed: HTTP 503",
        0,
    )
    assert not KnowledgeChunk.objects.filter(document=bad).exists()
    good.refresh_from_db()
    assert good.status == "ready" and good.chunk_count == 1

    result = search.search([base], "XJ-4471", limit=3)
    assert [hit.document_id for hit in result.hits] == [good.pk]
    assert result.failed == {base.pk: "the embedding provider emb failed: HTTP 503"}


def test_documents_waiting_on_an_upload(worker: Any, channel: Any, alice: Any) -> None:
    base = make_base(owner=alice)
    pdf = create_upload(user=alice, data_or_file=files.pdf(3), name="three.pdf", channel=channel)
    waiting = add_document(base, "three.pdf", "", upload=pdf, status="waiting")
    broken = create_upload(user=alice, data_or_file=files.broken_pdf(), name="broken.pdf", channel=channel)
    doomed = add_document(base, "broken.pdf", "", upload=broken, status="waiting")

    document = ended(waiting)
    assert document.status == "ready", document.error
    pdf.refresh_from_db()
    assert document.text == pdf.text and document.meta == {"pages": pdf.meta["page_starts"]}
    assert len(document.meta["pages"]) == 3
    hit = search.search([base], files.page_line(3), limit=1).hits[0]
    assert hit.page == 3 or files.page_line(3) in hit.text
    assert (ended(doomed).status, doomed.error) == ("failed", "broken PDF")


def test_reembed_switches_generation_without_mixing(
    worker: Any, alice: Any, embedding_server: FakeModelServer
) -> None:
    add_provider("emb", embedding_server.base_url)
    base = make_base(owner=alice)
    documents = [ended(queued(add_document(base, f"{n}.md", topic_text(n)))) for n in ("try", "del")]
    before = set(KnowledgeChunk.objects.filter(knowledge_base=base).values_list("generation", "dims"))
    assert before == {(1, 256)}

    call_command("reembed_knowledge", "--base", str(base.pk), "--embedder", "emb:m")

    def switched() -> KnowledgeBase | None:
        base.refresh_from_db()
        return base if base.generation == 2 else None

    wait_for(switched, 30)
    assert (base.embedder, base.dims, base.next_embedder) == ("provider:emb:m", 64, "")
    assert set(KnowledgeChunk.objects.filter(knowledge_base=base).values_list("generation", "dims")) == {
        (2, 64)
    }
    for document in documents:
        document.refresh_from_db()
        assert document.chunk_count == KnowledgeChunk.objects.filter(document=document).count() > 0
    assert search.search([base], "remove a name binding del", limit=3).hits[0].section == "del"

    # A target failing in the worker: the base stays on its generation, the half-made one removed.
    embedding_server.behaviour.status = 500
    other = make_base(owner=alice, name="Other")
    ended(queued(add_document(other, "x.md", topic_text("with"))))
    call_command("reembed_knowledge", "--base", str(other.pk), "--embedder", "provider:emb:m")

    def abandoned() -> KnowledgeBase | None:
        other.refresh_from_db()
        return other if not other.next_embedder else None

    wait_for(abandoned, 30)
    assert (other.embedder, other.generation) == (LOCAL_KEY, 1)
    assert set(KnowledgeChunk.objects.filter(knowledge_base=other).values_list("generation", flat=True)) == {
        1
    }


def test_reembed_command_arguments(worker: Any, alice: Any, embedding_server: FakeModelServer) -> None:
    base = make_base(owner=alice)
    with pytest.raises(CommandError, match="not a knowledge base id"):
        call_command("reembed_knowledge", "--base", "nope")
    with pytest.raises(CommandError, match="no such knowledge base"):
        call_command("reembed_knowledge", "--base", "7f0f4a9e-7d35-4a4c-9c39-2f0f4d6a8a11")
    with pytest.raises(CommandError, match="not configured"):
        call_command("reembed_knowledge", "--all", "--embedder", "nobody:m")
    with pytest.raises(CommandError):
        call_command("reembed_knowledge")  # --base or --all
    # Already on the site's model: left alone.
    call_command("reembed_knowledge", "--all")
    base.refresh_from_db()
    assert (base.generation, base.next_embedder) == (1, "")


def test_a_document_waiting_on_a_deleted_upload_fails(alice: Any, channel: Any) -> None:
    """Its upload will never finish: the document must not wait for ever (by the owner's
    delete, or by a cascade when the channel it was sent to goes)."""
    from chat.services.channels import delete_channel
    from chat.uploads.services import delete_upload

    base = make_base(owner=alice)
    first = create_upload(user=alice, data_or_file=files.pdf(2), name="first.pdf", channel=channel)
    second = create_upload(user=alice, data_or_file=files.pdf(2), name="second.pdf", channel=channel)
    by_owner = add_document(base, "first.pdf", "", upload=first, status="waiting")
    by_cascade = add_document(base, "second.pdf", "", upload=second, status="waiting")

    delete_upload(user=alice, upload=first)
    delete_channel(channel=channel, user=alice)

    for document in (by_owner, by_cascade):
        document.refresh_from_db()
        assert (document.status, document.error) == ("failed", "its file was deleted before it was read")

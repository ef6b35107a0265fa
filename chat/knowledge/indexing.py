"""Indexing documents and re-embedding bases (run by the worker: chat/knowledge/tasks.py).

``index(document_id)``: the document is split (chunking.py), embedded KB_EMBED_BATCH
chunks at a time, and each batch written with its base's ``revision`` bumped in the
same transaction — search sees those chunks at once, so a base is searchable while it
grows. Its progress (0..100) is saved with every batch and published to the base's
channel as ``knowledge_base_updated`` (personal bases have no channel: their page reads
the documents again). It ends ``ready`` with its chunk count, or ``failed`` with the
reason (an embedding service down, a text that cannot be split) and none of its chunks
left; the base's other documents are untouched. Running it again first removes the
document's chunks of the current generation: a run killed half-way and run again
leaves no duplicates.

``reembed(base_id, key)``: every ready document is embedded by the new model into the
next generation while searches go on reading the current one (``next_embedder`` says it
is under way); then one transaction switches the base's ``embedder``, ``dims`` and
``generation`` and deletes the old generation. Vectors of two models are never mixed.
A failure leaves the base on its old generation (the new one's chunks deleted).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from chat.knowledge.chunking import Chunk, split
from chat.knowledge.embeddings import EmbeddingError, embedder_for
from chat.knowledge.schema import ensure_vector_index
from chat.models import KnowledgeBase, KnowledgeChunk, KnowledgeDocument, Upload
from chat.realtime.events import knowledge_base_updated_event, publish_on_commit

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.25  # seconds between progress events, as uploads'
# A re-embedding run hands the rest of its base to a fresh task after this share of
# EXTRACT_TIME_LIMIT, so no run outlives the worker's time limit (or the broker's
# visibility timeout) however large the base.
REEMBED_RUN_SHARE = 0.5


class _StoppedError(Exception):
    """The document (or its base) went away, or the base moved to another generation,
    while it was being indexed: the run ends without a trace."""


def announce(base: KnowledgeBase, document: KnowledgeDocument | None = None) -> None:
    """knowledge_base_updated to the base's channel, after the commit; nothing for a
    personal base."""
    if base.channel_id is None:
        return
    name = getattr(base, "_channel_name", None)
    if name is None:
        name = base.channel.name if base.channel else ""
        base._channel_name = name  # type: ignore[attr-defined]
    publish_on_commit(base.channel_id, name, knowledge_base_updated_event(base, document))


def queue_indexing(document: KnowledgeDocument) -> None:
    """Queue the indexing of ``document`` once the current transaction commits. With the
    broker out of reach it ends failed at once (it may be added again)."""
    document_id = str(document.pk)

    def send() -> None:
        from chat.knowledge.tasks import index_document

        try:
            index_document.delay(document_id)
        except Exception:
            log.exception("could not queue the indexing of document %s", document_id)
            _fail_unqueued(document_id)

    transaction.on_commit(send)


def _fail_unqueued(document_id: str) -> None:
    document = KnowledgeDocument.objects.select_related("knowledge_base").filter(pk=document_id).first()
    if document is None or document.status not in (KnowledgeDocument.Status.INDEXING,):
        return
    document.status, document.error = KnowledgeDocument.Status.FAILED, "could not be queued for indexing"
    document.save(update_fields=["status", "error", "updated_at"])
    announce(document.knowledge_base, document)


# --- indexing one document ----------------------------------------------------------------------------


def index(document_id: str) -> None:
    """Index one document (see the module's doc); never raises for a bad document."""
    try:
        document = KnowledgeDocument.objects.select_related("knowledge_base", "knowledge_base__channel").get(
            pk=document_id
        )
    except (KnowledgeDocument.DoesNotExist, ValidationError, ValueError):  # gone, or not an id of ours
        return
    if document.status == KnowledgeDocument.Status.WAITING:
        return  # its upload is not read yet: upload_finished queues it
    base = document.knowledge_base
    generation = base.generation
    try:
        _start(document, base, generation)
        chunks = split(document.text, document.meta or {})
        written = _write(document, base, generation, chunks)
    except _StoppedError:
        return
    except EmbeddingError as exc:
        _end_failed(document, base, generation, str(exc))
        return
    except SoftTimeLimitExceeded:
        _end_failed(document, base, generation, f"took longer than {settings.EXTRACT_TIME_LIMIT} s")
        return
    except Exception:  # a bug or a library's surprise: the document still ends failed, never stuck
        log.exception("indexing document %s failed", document.pk)
        _end_failed(document, base, generation, "could not index this document")
        return
    with transaction.atomic():
        updated = KnowledgeDocument.objects.filter(pk=document.pk).update(
            status=KnowledgeDocument.Status.READY,
            progress=100,
            error="",
            chunk_count=written,
            updated_at=timezone.now(),
        )
        if updated:
            document.status, document.progress, document.error, document.chunk_count = (
                "ready",
                100,
                "",
                written,
            )
            announce(base, document)


def _start(document: KnowledgeDocument, base: KnowledgeBase, generation: int) -> None:
    """indexing, progress 0; whatever an earlier run of it wrote to this generation removed."""
    with transaction.atomic():
        updated = KnowledgeDocument.objects.filter(pk=document.pk).update(
            status=KnowledgeDocument.Status.INDEXING,
            progress=0,
            error="",
            chunk_count=0,
            updated_at=timezone.now(),
        )
        if not updated:
            raise _StoppedError
        removed, _ = KnowledgeChunk.objects.filter(document_id=document.pk, generation=generation).delete()
        if removed:
            KnowledgeBase.objects.filter(pk=base.pk).update(revision=F("revision") + 1)
        document.status, document.progress, document.error, document.chunk_count = "indexing", 0, "", 0
        announce(base, document)


def _write(document: KnowledgeDocument, base: KnowledgeBase, generation: int, chunks: list[Chunk]) -> int:
    """Embed and write ``chunks`` into ``generation`` batch by batch; returns how many."""
    return _embed_into(
        document, base, generation, chunks, key=base.embedder, dims=base.dims, progress=True, bump=True
    )


def _embed_into(
    document: KnowledgeDocument,
    base: KnowledgeBase,
    generation: int,
    chunks: list[Chunk],
    *,
    key: str,
    dims: int,
    progress: bool,
    bump: bool,
) -> int:
    if not chunks:
        return 0
    embedder = embedder_for(key)
    if embedder.dims != dims:
        raise EmbeddingError(f"the embedding model answers {embedder.dims} dimensions, not {dims}")
    ensure_vector_index(connection, dims)
    batch_size = max(1, int(settings.KB_EMBED_BATCH))
    last_event = 0.0
    written = 0
    for first in range(0, len(chunks), batch_size):
        batch = chunks[first : first + batch_size]
        vectors = embedder.embed([chunk.text for chunk in batch])
        if vectors.shape != (len(batch), dims):
            raise EmbeddingError(
                f"the embedding model answered {vectors.shape[0]} vectors of {vectors.shape[1]}"
            )
        with transaction.atomic():
            # The base's row, updated first, is this batch's lock: a switch of generation
            # (reembed) cannot commit between the check and the insert.
            if bump:
                moved = KnowledgeBase.objects.filter(pk=base.pk, generation=generation).update(
                    revision=F("revision") + 1
                )
            else:
                moved = KnowledgeBase.objects.filter(pk=base.pk).count()
            if not moved:
                raise _StoppedError
            KnowledgeChunk.objects.bulk_create(
                [
                    KnowledgeChunk(
                        knowledge_base_id=base.pk,
                        document_id=document.pk,
                        generation=generation,
                        ordinal=first + offset,
                        text=chunk.text,
                        page=chunk.page,
                        section=chunk.section[:200],
                        start=chunk.start,
                        end=chunk.end,
                        dims=dims,
                        embedding=vector,
                    )
                    for offset, (chunk, vector) in enumerate(zip(batch, vectors, strict=True))
                ]
            )
            written += len(batch)
            if progress:
                percent = min(99, int(written * 100 / len(chunks)))
                still = KnowledgeDocument.objects.filter(pk=document.pk).update(
                    progress=percent, chunk_count=written, updated_at=timezone.now()
                )
                if not still:  # deleted meanwhile: its chunks go with this rollback
                    raise _StoppedError
                document.progress, document.chunk_count = percent, written
                now = time.monotonic()
                if now - last_event >= PROGRESS_INTERVAL:
                    last_event = now
                    announce(base, document)
            elif not KnowledgeDocument.objects.filter(pk=document.pk).exists():
                raise _StoppedError
    return written


def _end_failed(document: KnowledgeDocument, base: KnowledgeBase, generation: int, reason: str) -> None:
    with transaction.atomic():
        removed, _ = KnowledgeChunk.objects.filter(document_id=document.pk, generation=generation).delete()
        if removed:
            KnowledgeBase.objects.filter(pk=base.pk).update(revision=F("revision") + 1)
        updated = KnowledgeDocument.objects.filter(pk=document.pk).update(
            status=KnowledgeDocument.Status.FAILED,
            error=reason[:300],
            chunk_count=0,
            updated_at=timezone.now(),
        )
        if updated:
            document.status, document.error, document.chunk_count = "failed", reason[:300], 0
            announce(base, document)


# --- documents waiting for their upload ------------------------------------------------------------


def document_meta(upload_meta: dict[str, Any]) -> dict[str, Any]:
    """A document's meta from its upload's: where pages or sheets start."""
    meta: dict[str, Any] = {}
    if isinstance(upload_meta.get("page_starts"), list):
        meta["pages"] = [int(offset) for offset in upload_meta["page_starts"]]
    if isinstance(upload_meta.get("sheet_starts"), list):
        meta["sheets"] = [[str(title), int(offset)] for title, offset in upload_meta["sheet_starts"]]
    return meta


def upload_finished(upload: Upload) -> None:
    """Called by the upload worker when ``upload`` ends ready or failed: the documents
    waiting on it take its text (and page or sheet starts) and are indexed, or end failed
    with the upload's reason. Never raises into the upload's run."""
    try:
        _upload_finished(upload)
    except Exception:
        log.exception("could not hand upload %s to its knowledge documents", upload.pk)


def _upload_finished(upload: Upload) -> None:
    waiting = list(
        KnowledgeDocument.objects.filter(
            upload_id=upload.pk, status=KnowledgeDocument.Status.WAITING
        ).select_related("knowledge_base", "knowledge_base__channel")
    )
    for document in waiting:
        with transaction.atomic():
            if upload.status == Upload.Status.READY:
                text = upload.text or ""
                changes: dict[str, Any] = {
                    "status": KnowledgeDocument.Status.INDEXING,
                    "text": text[: settings.KB_MAX_TEXT_CHARS],
                    "meta": document_meta(upload.meta or {}),
                    "progress": 0,
                    "error": "",
                }
            else:
                changes = {
                    "status": KnowledgeDocument.Status.FAILED,
                    "error": (upload.error or "the file could not be read")[:300],
                }
            updated = KnowledgeDocument.objects.filter(
                pk=document.pk, status=KnowledgeDocument.Status.WAITING
            ).update(updated_at=timezone.now(), **changes)
            if not updated:
                continue
            for name, value in changes.items():
                setattr(document, name, value)
            announce(document.knowledge_base, document)
            if document.status == KnowledgeDocument.Status.INDEXING:
                queue_indexing(document)


def upload_deleted(sender: Any, instance: Upload, **kwargs: Any) -> None:
    """Before an upload's row goes (deleted by its owner, or by cascade with its turn,
    session, channel or account): the documents still waiting on it end failed. The
    deletion sets their upload to null, and no worker would ever hand them a text: they
    would wait for ever."""
    waiting = list(
        KnowledgeDocument.objects.filter(
            upload_id=instance.pk, status=KnowledgeDocument.Status.WAITING
        ).select_related("knowledge_base", "knowledge_base__channel")
    )
    reason = "its file was deleted before it was read"
    for document in waiting:
        updated = KnowledgeDocument.objects.filter(
            pk=document.pk, status=KnowledgeDocument.Status.WAITING
        ).update(status=KnowledgeDocument.Status.FAILED, error=reason, updated_at=timezone.now())
        if updated:
            document.status, document.error = KnowledgeDocument.Status.FAILED, reason
            announce(document.knowledge_base, document)


# --- re-embedding a base ------------------------------------------------------------------------------


def queue_reembed(base: KnowledgeBase, key: str) -> None:
    """Mark the base as moving to ``key`` and queue the run (after the commit)."""
    from chat.knowledge.tasks import reembed_base

    KnowledgeBase.objects.filter(pk=base.pk).update(next_embedder=key, updated_at=timezone.now())
    base.next_embedder = key
    base_id = str(base.pk)
    transaction.on_commit(lambda: reembed_base.delay(base_id, key))


def reembed(base_id: str, key: str, after: str = "") -> None:
    """Move the base to ``key`` (see the module's doc). Runs over the ready documents in
    id order from ``after``; past REEMBED_RUN_SHARE of the time limit it queues the rest
    as a new run."""
    base = KnowledgeBase.objects.filter(pk=base_id).select_related("channel").first()
    if base is None:
        return
    if base.next_embedder != key:
        return  # another re-embedding replaced this one, or it was settled already
    target = base.generation + 1
    try:
        embedder = embedder_for(key)
        dims = embedder.dims
        if not after:
            # A run before this one (killed, or failed) may have left some: start clean.
            KnowledgeChunk.objects.filter(knowledge_base_id=base.pk, generation=target).delete()
        deadline = time.monotonic() + settings.EXTRACT_TIME_LIMIT * REEMBED_RUN_SHARE
        documents = KnowledgeDocument.objects.filter(
            knowledge_base_id=base.pk, status=KnowledgeDocument.Status.READY
        ).order_by("pk")
        if after:
            documents = documents.filter(pk__gt=uuid.UUID(after))
        for document in documents.iterator():
            if time.monotonic() > deadline:
                from chat.knowledge.tasks import reembed_base

                reembed_base.delay(str(base.pk), key, str(document.pk))
                return
            KnowledgeChunk.objects.filter(document_id=document.pk, generation=target).delete()
            try:
                _embed_into(
                    document,
                    base,
                    target,
                    split(document.text, document.meta or {}),
                    key=key,
                    dims=dims,
                    progress=False,
                    bump=False,
                )
            except _StoppedError:
                continue  # the document was deleted meanwhile
        _switch(base, key, dims, target)
    except EmbeddingError as exc:
        _abandon(base, key, target, str(exc))
    except SoftTimeLimitExceeded:
        _abandon(base, key, target, "a document took longer than the time limit")
    except Exception:
        log.exception("re-embedding knowledge base %s failed", base.pk)
        _abandon(base, key, target, "an unexpected error")


def _switch(base: KnowledgeBase, key: str, dims: int, target: int) -> None:
    """One transaction: the base reads the new generation from now on; the old one goes.
    Documents that became ready meanwhile (not in the new generation) are indexed again."""
    with transaction.atomic():
        switched = KnowledgeBase.objects.filter(pk=base.pk, generation=target - 1, next_embedder=key).update(
            embedder=key,
            dims=dims,
            generation=target,
            next_embedder="",
            revision=F("revision") + 1,
            updated_at=timezone.now(),
        )
        if not switched:
            KnowledgeChunk.objects.filter(knowledge_base_id=base.pk, generation=target).delete()
            return
        KnowledgeChunk.objects.filter(knowledge_base_id=base.pk, generation__lt=target).delete()
        missing = KnowledgeDocument.objects.filter(
            knowledge_base_id=base.pk,
            status__in=[KnowledgeDocument.Status.READY, KnowledgeDocument.Status.INDEXING],
        ).exclude(chunks__generation=target)
        for document in missing:
            if document.status == KnowledgeDocument.Status.READY and not document.text.strip():
                continue  # nothing to embed: no chunks in any generation
            queue_indexing(document)
        base.refresh_from_db()
        announce(base)
    log.info("knowledge base %s now embedded by %s (generation %d)", base.pk, key, target)


def _abandon(base: KnowledgeBase, key: str, target: int, reason: str) -> None:
    log.warning("re-embedding knowledge base %s with %s failed: %s", base.pk, key, reason)
    with transaction.atomic():
        KnowledgeChunk.objects.filter(knowledge_base_id=base.pk, generation=target).delete()
        KnowledgeBase.objects.filter(pk=base.pk, next_embedder=key).update(
            next_embedder="", updated_at=timezone.now()
        )
        base.next_embedder = ""
        announce(base)

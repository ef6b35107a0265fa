"""Knowledge bases made row by row for the reply's tests: a base, and a document whose
chunks are embedded by the base's real embedder (chat/knowledge/embeddings.py) and
written as indexing writes them (the base's generation, its revision bumped), so search
finds them as it finds indexed ones without a worker in the way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import F

from chat.models import Channel, KnowledgeBase, KnowledgeChunk, KnowledgeDocument

HANDBOOK = [
    (1, "Welcome to Northwind Traders. Our offices open at nine in the morning and close at six."),
    (
        3,
        "Refunds and returns: a purchase may be returned within 45 days of delivery for a full "
        "refund, provided the receipt is kept.",
    ),
    (5, "Parking: staff park in the north lot; visitors use the south lot beside the fountain."),
]


def make_base(
    name: str,
    *,
    owner: Any = None,
    channel: Channel | None = None,
    attach_to: Channel | None = None,
    embedder: str | None = None,
    dims: int | None = None,
) -> KnowledgeBase:
    """A base of ``owner`` or of ``channel`` (attached to it, as create_base does), also
    attached to ``attach_to``. Its embedder is the default one unless named."""
    from chat.knowledge.embeddings import default_embedder_key, embedder_for

    key = embedder or default_embedder_key()
    base = KnowledgeBase.objects.create(
        name=name,
        owner=owner,
        channel=channel,
        created_by=owner,
        embedder=key,
        dims=dims if dims is not None else embedder_for(key).dims,
    )
    if channel is not None:
        channel.knowledge_bases.add(base)
    if attach_to is not None:
        attach_to.knowledge_bases.add(base)
    return base


def add_document(
    base: KnowledgeBase, name: str, pages: Sequence[tuple[int | None, str]], *, vectors: Any = None
) -> KnowledgeDocument:
    """A ready document of ``base``, one chunk a page; embedded by the base's embedder
    unless ``vectors`` are given (a base whose embedding service is down)."""
    from chat.knowledge.embeddings import embedder_for

    texts = [text for _page, text in pages]
    if vectors is None:
        vectors = embedder_for(base.embedder).embed(texts)
    with transaction.atomic():
        document = KnowledgeDocument.objects.create(
            knowledge_base=base,
            name=name,
            text="\n\n".join(texts),
            status=KnowledgeDocument.Status.READY,
            progress=100,
            chunk_count=len(pages),
        )
        offset = 0
        for ordinal, ((page, text), vector) in enumerate(zip(pages, vectors, strict=True)):
            KnowledgeChunk.objects.create(
                knowledge_base=base,
                document=document,
                generation=base.generation,
                ordinal=ordinal,
                text=text,
                page=page,
                start=offset,
                end=offset + len(text),
                dims=base.dims,
                embedding=vector,
            )
            offset += len(text) + 2
        KnowledgeBase.objects.filter(pk=base.pk).update(revision=F("revision") + 1)
    return document

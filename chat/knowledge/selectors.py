"""Reads of knowledge bases, always scoped to who is asking.

Who may read a base: a personal base, its owner alone; a channel's own base, whoever may
view that channel (public, member, moderator: permissions.can_view); a personal base its
owner attached to a channel, likewise whoever may view that channel (its passages go
into every reply there, so the room reads it anyway). Everyone else gets None (a 404),
so a private room's base cannot be told from a missing one. Checked on every request:
a removed member loses the room's bases at once."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Count, Prefetch, Q, QuerySet

from chat import permissions
from chat.models import Channel, KnowledgeBase, KnowledgeChunk, KnowledgeDocument, Membership, iso
from chat.selectors import attached_ids as attached_ids  # the channel object's knowledge_base_ids
from chat.selectors import readable_turn

# A list answers at most this many bases (by name); a person's own and their rooms'
# bases are far fewer.
LIST_LIMIT = 500


def parsed_id(base_id: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(base_id))
    except ValueError:
        return None


def _active(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active)


def viewable_channels(user: Any) -> QuerySet[Channel]:
    """The channels ``user`` may view (permissions.can_view, as one query)."""
    if permissions.is_moderator(user):
        return Channel.objects.all()
    scope = Q(visibility=Channel.Visibility.PUBLIC)
    if _active(user):
        member_of = Membership.objects.filter(user=user).values("channel_id")
        scope |= Q(owner=user) | Q(pk__in=member_of)
    return Channel.objects.filter(scope)


def _attached_to(channels: QuerySet[Channel]) -> QuerySet[Any]:
    """Ids of the bases attached to these channels."""
    through = Channel.knowledge_bases.through
    ids: QuerySet[Any] = through.objects.filter(channel__in=channels.values("pk")).values("knowledgebase_id")
    return ids


def _with_documents(rows: QuerySet[KnowledgeBase]) -> QuerySet[KnowledgeBase]:
    return rows.select_related("owner", "channel").prefetch_related(
        Prefetch("documents", queryset=KnowledgeDocument.objects.defer("text").order_by("created_at", "id"))
    )


def readable_bases(user: Any) -> QuerySet[KnowledgeBase]:
    """Every base the user may read: their own, and those of (or attached to) channels
    they may view."""
    channels = viewable_channels(user)
    scope = Q(channel__in=channels.values("pk")) | Q(pk__in=_attached_to(channels))
    if _active(user):
        scope |= Q(owner=user)
    return KnowledgeBase.objects.filter(scope)


def listed_bases(user: Any, *, channel: Channel | None = None) -> list[KnowledgeBase]:
    """What ``GET knowledge-bases`` lists: without ``channel``, the user's own bases and
    the bases of channels they own or belong to (not every public room's); with it (a
    channel the caller may view), that channel's own and attached bases. By name, at
    most LIST_LIMIT."""
    if channel is not None:
        ids = channel.knowledge_bases.values("pk")
        rows = KnowledgeBase.objects.filter(Q(channel=channel) | Q(pk__in=ids))
    elif _active(user):
        member_of = Membership.objects.filter(user=user).values("channel_id")
        mine = Channel.objects.filter(Q(owner=user) | Q(pk__in=member_of))
        rows = KnowledgeBase.objects.filter(Q(owner=user) | Q(channel__in=mine.values("pk")))
    else:
        return []
    return list(_with_documents(rows).order_by("name", "created_at", "id")[:LIST_LIMIT])


def base_for(user: Any, base_id: Any) -> KnowledgeBase | None:
    """One base the user may read; None (a 404) for anyone else's or a missing one."""
    parsed = parsed_id(base_id)
    if parsed is None:
        return None
    return _with_documents(readable_bases(user).filter(pk=parsed)).first()


def can_manage(user: Any, base: KnowledgeBase) -> bool:
    """May change it, add and delete its documents, delete it: a personal base's owner;
    a channel base's channel owner or a moderator (permissions.can_configure)."""
    if not _active(user):
        return False
    if base.channel_id is not None and base.channel is not None:
        return permissions.can_configure(user, base.channel)
    return bool(base.owner_id == user.pk)


def manageable_base(user: Any, base_id: Any) -> KnowledgeBase | None:
    """A base the user may manage; None otherwise (the API tells apart a base the caller
    may read but not manage, 403, from one they may not read, 404)."""
    base = base_for(user, base_id)
    return base if base is not None and can_manage(user, base) else None


def available_bases(user: Any, channel: Channel) -> list[KnowledgeBase]:
    """What the user may use in ``channel`` (attach it, name it in a message): their own
    bases, the channel's own and the ones attached to it. The caller checked that the
    user may view the channel."""
    attached = channel.knowledge_bases.values("pk")
    scope = Q(channel=channel) | Q(pk__in=attached)
    if _active(user):
        scope |= Q(owner=user)
    return list(_with_documents(KnowledgeBase.objects.filter(scope)).order_by("name", "created_at", "id"))


def document_for(base: KnowledgeBase, document_id: Any) -> KnowledgeDocument | None:
    parsed = parsed_id(document_id)
    if parsed is None:
        return None
    return KnowledgeDocument.objects.defer("text").filter(pk=parsed, knowledge_base=base).first()


def document_count(base: KnowledgeBase) -> int:
    return int(KnowledgeDocument.objects.filter(knowledge_base=base).aggregate(n=Count("id"))["n"])


def _cited(turn: Any, chunk: KnowledgeChunk) -> bool:
    for source in getattr(turn, "sources", None) or []:
        if not isinstance(source, dict) or source.get("chunk") != chunk.pk:
            continue
        document = source.get("document")
        if isinstance(document, dict) and document.get("id") == str(chunk.document_id):
            return True
    return False


def chunk_for(
    user: Any, chunk_id: Any, *, turn_id: int | None = None, key: str | None = None
) -> KnowledgeChunk | None:
    """A passage, for a citation link: to whoever may read its base; or, with
    ``turn_id``, to whoever may read that turn (selectors.readable_turn: its channel's
    watchers, ``key`` being the watch key) when the turn's ``sources`` cite it. None
    otherwise (a 404)."""
    if isinstance(chunk_id, bool) or not isinstance(chunk_id, int) or not 0 < chunk_id < 2**63:
        return None
    chunk = (
        KnowledgeChunk.objects.select_related("document", "knowledge_base")
        .defer("embedding", "document__text")
        .filter(pk=chunk_id)
        .first()
    )
    if chunk is None:
        return None
    if readable_bases(user).filter(pk=chunk.knowledge_base_id).exists():
        return chunk
    if turn_id is not None:
        turn = readable_turn(user, turn_id, key)
        if turn is not None and _cited(turn, chunk):
            return chunk
    return None


# --- the objects the API answers with ----------------------------------------------------


def document_to_dict(document: KnowledgeDocument) -> dict[str, Any]:
    """The protocol's Document object."""
    return {
        **document.to_state(),
        "upload": str(document.upload_id) if document.upload_id else None,
        "created_at": iso(document.created_at),
    }


def base_to_dict(base: KnowledgeBase, user: Any) -> dict[str, Any]:
    """The protocol's KnowledgeBase object, as ``user`` sees it (``can_manage``)."""
    return {
        "id": str(base.pk),
        "name": base.name,
        "description": base.description,
        "owner": base.owner.get_username() if base.owner_id and base.owner else None,
        "channel": base.channel.name if base.channel_id and base.channel else None,
        "embedder": base.embedder,
        "dims": base.dims,
        "documents": [document_to_dict(d) for d in base.documents.all()],
        "can_manage": can_manage(user, base),
        "created_at": iso(base.created_at),
        "updated_at": iso(base.updated_at),
    }


def chunk_to_dict(chunk: KnowledgeChunk) -> dict[str, Any]:
    """A passage as a citation link shows it."""
    return {
        "id": chunk.pk,
        "text": chunk.text,
        "page": chunk.page,
        "section": chunk.section,
        "document": {"id": str(chunk.document_id), "name": chunk.document.name},
        "knowledge_base": {"id": str(chunk.knowledge_base_id), "name": chunk.knowledge_base.name},
    }

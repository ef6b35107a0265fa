"""The one path for knowledge bases: create, change, delete; add and delete documents;
which bases a channel uses (set_channel_bases, through services.update_channel) and
which a message may name (check_message_bases).

Every service checks permission first (chat.knowledge.selectors.can_manage), writes in
one transaction, and publishes after the commit: ``knowledge_base_updated`` to the
channel of a channel base (a personal base has no room to tell), ``channel_updated``
when a channel's attached bases change. A moderator acting on a room's base is audited,
as moderation is."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction

from chat import limits, permissions
from chat.errors import ServiceError
from chat.knowledge.selectors import can_manage
from chat.models import Channel, KnowledgeBase, KnowledgeDocument, Upload
from chat.realtime.events import knowledge_base_updated_event, publish_on_commit
from chat.services import audit
from chat.uploads.selectors import own_upload

log = logging.getLogger(__name__)

NAME_MAX = 100
DESCRIPTION_MAX = 2000
DOCUMENT_NAME_MAX = 255
# How many bases a channel may use at once (its own and attached).
MAX_CHANNEL_BASES = 20
# How many bases one message may name.
MAX_MESSAGE_BASES = 20
# Upload kinds whose text a base can hold (an image has none).
TEXT_KINDS = (Upload.Kind.DOCUMENT, Upload.Kind.AUDIO, Upload.Kind.VIDEO)


def max_documents() -> int:
    # (The "Knowledge" settings block is chatsite/settings.py's; these are its defaults.)
    return int(getattr(settings, "KB_MAX_DOCUMENTS_PER_BASE", 500))


def max_text_chars() -> int:
    return int(getattr(settings, "KB_MAX_TEXT_CHARS", 2_000_000))


def _require_login(user: Any) -> None:
    if not (user and user.is_authenticated):
        raise ServiceError("auth_required", "Log in to use knowledge bases.")
    if not user.is_active:
        raise ServiceError("forbidden", "Your account cannot use knowledge bases.")


def _require_manage(user: Any, base: KnowledgeBase) -> None:
    _require_login(user)
    if not can_manage(user, base):
        who = "its channel's owner or a moderator" if base.channel_id else "its owner"
        raise ServiceError("forbidden", f"Only {who} may change this knowledge base.")


def _invalid(field: str, text: str) -> ServiceError:
    return ServiceError("invalid", text, fields={field: [text]})


def _clean_name(value: Any, *, field: str = "name", limit: int = NAME_MAX) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "Expected a string.")
    name = value.strip()
    if not name:
        raise _invalid(field, "A name is required.")
    if len(name) > limit:
        raise _invalid(field, f"At most {limit} characters.")
    if "\x00" in name:
        raise _invalid(field, "Null characters are not allowed.")
    return name


def _clean_description(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid("description", "Expected a string.")
    if len(value) > DESCRIPTION_MAX:
        raise _invalid("description", f"At most {DESCRIPTION_MAX} characters.")
    if "\x00" in value:
        raise _invalid("description", "Null characters are not allowed.")
    return value.strip()


def _is_moderating(user: Any, base: KnowledgeBase) -> bool:
    """Someone acting on a base that is not theirs (a moderator on a room's base, an
    admin at the desk): audited."""
    if base.channel_id is not None and base.channel is not None:
        return bool(base.channel.owner_id != user.pk)
    return bool(base.owner_id != user.pk)


def _audit(user: Any, action: str, base: KnowledgeBase, **details: Any) -> None:
    if _is_moderating(user, base):
        audit.record(actor=user, action=action, target=base, channel=base.channel, name=base.name, **details)


def announce(base: KnowledgeBase, document: KnowledgeDocument | None = None) -> None:
    """``knowledge_base_updated`` to the base's channel once committed (a personal base:
    none)."""
    if base.channel_id is None or base.channel is None:
        return
    publish_on_commit(base.channel_id, base.channel.name, knowledge_base_updated_event(base, document))


def _announce_channel(channel: Channel) -> None:
    from chat.services.channels import channel_settings_event  # late: channels imports this module

    publish_on_commit(channel.pk, channel.name, channel_settings_event(channel))


def _touch(base: KnowledgeBase) -> None:
    base.save(update_fields=["updated_at"])


# --- bases ---------------------------------------------------------------------------------


def create_base(
    *, user: Any, name: Any, description: Any = "", channel: Channel | None = None
) -> KnowledgeBase:
    """A new base: the user's own, or ``channel``'s (its owner or a moderator; attached
    to the channel at once, so its replies use it). Embedded by the default embedder
    (settings EMBEDDINGS) for good: changing that later re-embeds
    (``manage.py reembed_knowledge``)."""
    _require_login(user)
    if channel is not None:
        if not permissions.can_view(user, channel):
            raise ServiceError("not_found", "No such channel.")
        if not permissions.can_configure(user, channel):
            raise ServiceError(
                "forbidden", "Only the channel's owner or a moderator may give it a knowledge base."
            )
    clean_name = _clean_name(name)
    clean_description = _clean_description(description)
    # late: the embeddings module loads the embedding models' libraries
    from chat.knowledge.embeddings import default_embedder_key, embedder_for

    key = default_embedder_key()
    dims = embedder_for(key).dims
    if channel is not None and channel.knowledge_bases.count() >= MAX_CHANNEL_BASES:
        raise ServiceError(
            "too_large",
            f"A channel uses at most {MAX_CHANNEL_BASES} knowledge bases; detach one first.",
            fields={"channel": [f"At most {MAX_CHANNEL_BASES} bases."]},
        )
    with transaction.atomic():
        base = KnowledgeBase.objects.create(
            name=clean_name,
            description=clean_description,
            owner=None if channel is not None else user,
            channel=channel,
            created_by=user,
            embedder=key,
            dims=dims,
        )
        if channel is not None:
            channel.knowledge_bases.add(base)
            _audit(user, "create_knowledge_base", base)
            announce(base)
            _announce_channel(channel)
    return base


def update_base(*, user: Any, base: KnowledgeBase, changes: dict[str, Any]) -> KnowledgeBase:
    """Rename it or change its description (who may manage it)."""
    _require_manage(user, base)
    unknown = sorted(set(changes) - {"name", "description"})
    if unknown:
        raise ServiceError("invalid", "Unknown fields.", fields={k: ["Unknown field."] for k in unknown})
    if "name" in changes:
        base.name = _clean_name(changes["name"])
    if "description" in changes:
        base.description = _clean_description(changes["description"])
    with transaction.atomic():
        base.save(update_fields=["name", "description", "updated_at"])
        _audit(user, "update_knowledge_base", base, changes=sorted(changes))
        announce(base)
    return base


def delete_base(*, user: Any, base: KnowledgeBase) -> None:
    """Delete a base with its documents and chunks; every channel using it stops (each
    is told by ``channel_updated``). Who may manage it, or an admin."""
    _require_login(user)
    if not (can_manage(user, base) or permissions.is_admin(user)):
        _require_manage(user, base)
    with transaction.atomic():
        locked = KnowledgeBase.objects.select_for_update().filter(pk=base.pk).first()
        if locked is None:
            raise ServiceError("not_found", "No such knowledge base.")
        users = list(Channel.objects.filter(knowledge_bases=base))
        _audit(user, "delete_knowledge_base", base)
        announce(base)
        # Documents and chunks go by cascade (the SQLite full-text index by its triggers);
        # the attachments with the row.
        KnowledgeBase.objects.filter(pk=base.pk).delete()
        for channel in users:
            _announce_channel(channel)


# --- documents -----------------------------------------------------------------------------


def _parsed_upload_ids(upload_ids: Any) -> list[uuid.UUID]:
    if not isinstance(upload_ids, list) or not all(isinstance(i, str) for i in upload_ids):
        raise _invalid("uploads", "Expected a list of upload ids.")
    parsed: list[uuid.UUID] = []
    for raw in upload_ids:
        try:
            parsed.append(uuid.UUID(raw))
        except ValueError:
            raise _upload_invalid(raw[:40], "is not an upload id.") from None
        if parsed.count(parsed[-1]) > 1:
            raise _upload_invalid(raw, "is listed twice.")
    return parsed


def _upload_invalid(upload_id: Any, why: str) -> ServiceError:
    return _invalid("uploads", f"Upload {upload_id} {why}")


def _checked_uploads(user: Any, base: KnowledgeBase, upload_ids: Any) -> list[Upload]:
    """The uploads to add, each the caller's own (the same words for another's and a
    missing one, so ids cannot be probed), with text, not failed, not in the base yet."""
    uploads = []
    for upload_id in _parsed_upload_ids(upload_ids):
        upload = own_upload(user, upload_id)
        if upload is None:
            raise _upload_invalid(upload_id, "does not exist or is not yours.")
        if upload.kind not in TEXT_KINDS:
            text = f"Upload {upload_id} ({upload.name}) is an {upload.kind}: it has no text to search."
            raise ServiceError("unsupported_type", text, fields={"uploads": [text]})
        if upload.status == Upload.Status.FAILED:
            raise _upload_invalid(upload_id, f"failed ({upload.error or 'unknown reason'}): upload it again.")
        if upload.status == Upload.Status.READY and not upload.text.strip():
            raise _upload_invalid(upload_id, f"({upload.name}) holds no text.")
        if KnowledgeDocument.objects.filter(knowledge_base=base, upload=upload).exists():
            raise _upload_invalid(upload_id, "is in this knowledge base already.")
        uploads.append(upload)
    return uploads


def _text_error(index: int, field: str, code: str, text: str) -> ServiceError:
    return ServiceError(code, text, fields={"texts": {str(index): {field: [text]}}})


def _checked_texts(texts: Any) -> list[tuple[str, str]]:
    if not isinstance(texts, list):
        raise _invalid("texts", "Expected a list of {name, text} objects.")
    limit = max_text_chars()
    checked, total = [], 0
    for index, item in enumerate(texts):
        if not isinstance(item, dict):
            raise _text_error(index, "non_field_errors", "invalid", "Expected an object {name, text}.")
        unknown = sorted(set(item) - {"name", "text"})
        if unknown:
            raise ServiceError(
                "invalid",
                "Unknown fields.",
                fields={"texts": {str(index): {k: ["Unknown field."] for k in unknown}}},
            )
        try:
            name = _clean_name(item.get("name"), limit=DOCUMENT_NAME_MAX)
        except ServiceError as exc:
            raise _text_error(index, "name", "invalid", exc.text) from None
        text = item.get("text")
        if not isinstance(text, str):
            raise _text_error(index, "text", "invalid", "Expected a string.")
        if not text.strip():
            raise _text_error(index, "text", "invalid", "The text is blank.")
        if "\x00" in text:
            raise _text_error(index, "text", "invalid", "Null characters are not allowed.")
        total += len(text)
        if total > limit:
            raise _text_error(
                index,
                "text",
                "too_large",
                f"Pasted text may be at most KB_MAX_TEXT_CHARS ({limit} characters) a request; "
                f"this is {total}.",
            )
        checked.append((name, text))
    return checked


def _meta_of(upload: Upload) -> dict[str, Any]:
    """Where the upload's pages or sheets start in its text (chat/uploads/documents.py)."""
    meta: dict[str, Any] = {}
    if isinstance(upload.meta.get("page_starts"), list):
        meta["pages"] = upload.meta["page_starts"]
    if isinstance(upload.meta.get("sheet_starts"), list):
        meta["sheets"] = upload.meta["sheet_starts"]
    return meta


def queue_indexing(document: KnowledgeDocument) -> None:
    """Index a committed document on the task queue. With the broker out of reach it
    ends failed at once (its manager may add it again) instead of waiting for ever."""
    from chat.knowledge.tasks import index_document  # late: the tasks module loads Celery

    try:
        index_document.delay(str(document.pk))
    except Exception:
        log.exception("could not queue document %s", document.pk)
        updated = KnowledgeDocument.objects.filter(
            pk=document.pk, status=KnowledgeDocument.Status.INDEXING
        ).update(status=KnowledgeDocument.Status.FAILED, error="could not be queued for indexing")
        if updated:
            document.refresh_from_db()
            base = KnowledgeBase.objects.select_related("channel").get(pk=document.knowledge_base_id)
            announce(base, document)


def add_documents(
    *, user: Any, base: KnowledgeBase, upload_ids: Any = (), texts: Any = ()
) -> list[KnowledgeDocument]:
    """Add documents (who may manage the base): the caller's own uploads — a ready one
    is indexed now, one still being read waits for it (indexed when it is ready), a
    failed one or an image is refused — and pasted texts ``{"name", "text"}``, indexed
    now. At most KB_MAX_DOCUMENTS_PER_BASE a base; pasted text at most
    KB_MAX_TEXT_CHARS a request. Nothing is added when anything is refused."""
    _require_manage(user, base)
    upload_ids = list(upload_ids) if isinstance(upload_ids, tuple) else upload_ids
    texts = list(texts) if isinstance(texts, tuple) else texts
    if base.next_embedder:
        raise ServiceError(
            "not_ready",
            "This knowledge base is being re-embedded; add documents once that is done.",
        )
    uploads = _checked_uploads(user, base, upload_ids)
    pasted = _checked_texts(texts)
    if not uploads and not pasted:
        raise _invalid("uploads", "Send upload ids or text to add.")
    # Pasted text is stored and indexed as an uploaded file's is: it counts against the
    # same daily limit (DAILY_UPLOAD_BYTES), else it would be a door around it.
    pasted_bytes = sum(len(text.encode("utf-8", "surrogatepass")) for _, text in pasted)
    if pasted_bytes:
        limits.check_and_count_upload(user, pasted_bytes)
    try:
        return _add(user, base, uploads, pasted)
    except BaseException:
        if pasted_bytes:  # nothing was added: nothing counted
            limits.refund_upload(user, pasted_bytes)
        raise


def _add(
    user: Any, base: KnowledgeBase, uploads: list[Upload], pasted: list[tuple[str, str]]
) -> list[KnowledgeDocument]:
    made: list[KnowledgeDocument] = []
    with transaction.atomic():
        # The base's row is the lock: parallel additions cannot pass the limit together.
        KnowledgeBase.objects.select_for_update().filter(pk=base.pk).first()
        limit = max_documents()
        count = KnowledgeDocument.objects.filter(knowledge_base=base).count()
        if count + len(uploads) + len(pasted) > limit:
            field = "uploads" if uploads else "texts"
            text = (
                f"A knowledge base holds at most KB_MAX_DOCUMENTS_PER_BASE ({limit}) documents; "
                f"it has {count}, and {len(uploads) + len(pasted)} were sent."
            )
            raise ServiceError("too_large", text, fields={field: [text]})
        for upload in uploads:
            ready = upload.status == Upload.Status.READY
            made.append(
                KnowledgeDocument.objects.create(
                    knowledge_base=base,
                    upload=upload,
                    name=upload.name,
                    text=upload.text if ready else "",
                    meta=_meta_of(upload) if ready else {},
                    status=KnowledgeDocument.Status.INDEXING if ready else KnowledgeDocument.Status.WAITING,
                    added_by=user,
                )
            )
        for name, text in pasted:
            made.append(
                KnowledgeDocument.objects.create(
                    knowledge_base=base,
                    name=name,
                    text=text,
                    status=KnowledgeDocument.Status.INDEXING,
                    added_by=user,
                )
            )
        _touch(base)
        _audit(user, "add_knowledge_documents", base, documents=[str(d.pk) for d in made])
        for document in made:
            announce(base, document)
            if document.status == KnowledgeDocument.Status.INDEXING:
                transaction.on_commit(lambda d=document: queue_indexing(d), robust=True)  # type: ignore[misc]
    return made


def delete_document(*, user: Any, base: KnowledgeBase, document: KnowledgeDocument) -> None:
    """Delete a document and its chunks (who may manage the base); the base's
    ``revision`` moves in the same transaction, so no cache of its vectors serves the
    chunks after. An admin may delete any (the desk)."""
    _require_login(user)
    if not (can_manage(user, base) or permissions.is_admin(user)):
        _require_manage(user, base)
    with transaction.atomic():
        KnowledgeBase.objects.select_for_update().filter(pk=base.pk).first()
        deleted, _ = KnowledgeDocument.objects.filter(pk=document.pk, knowledge_base=base).delete()
        if not deleted:
            raise ServiceError("not_found", "No such document.")
        base.revision += 1
        KnowledgeBase.objects.filter(pk=base.pk).update(revision=base.revision)
        _touch(base)
        _audit(
            user, "delete_knowledge_document", base, document=str(document.pk), document_name=document.name
        )
        document.status = "deleted"
        announce(base, document)


# --- which bases a channel and a message use -------------------------------------------------


def _parsed_base_ids(ids: Any, field: str, limit: int) -> list[uuid.UUID]:
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _invalid(field, "Expected a list of knowledge base ids.")
    parsed: list[uuid.UUID] = []
    for raw in ids:
        try:
            value = uuid.UUID(raw)
        except ValueError:
            raise _invalid(field, f"Knowledge base {raw[:40]} is not a knowledge base id.") from None
        if value not in parsed:  # duplicates collapse
            parsed.append(value)
    if len(parsed) > limit:
        raise ServiceError(
            "too_large",
            f"At most {limit} knowledge bases; {len(parsed)} were sent.",
            fields={field: [f"At most {limit}."]},
        )
    return parsed


def check_channel_bases(*, user: Any, channel: Channel, ids: Any) -> list[KnowledgeBase]:
    """The bases ``ids`` name for ``channel`` to use, checked (reads only): each the
    channel's own, the acting user's own, or one the channel uses already (kept); any
    other — another person's, another channel's, unknown — is 400 naming the id, in the
    same words, so ids cannot be probed. At most MAX_CHANNEL_BASES."""
    parsed = _parsed_base_ids(ids, "knowledge_base_ids", MAX_CHANNEL_BASES)
    current = set(channel.knowledge_bases.values_list("pk", flat=True))
    found = {b.pk: b for b in KnowledgeBase.objects.filter(pk__in=parsed)}
    bases = []
    for base_id in parsed:
        base = found.get(base_id)
        allowed = base is not None and (
            base.channel_id == channel.pk
            or (base.owner_id is not None and base.owner_id == user.pk)
            or base.pk in current
        )
        if base is None or not allowed:
            raise _invalid(
                "knowledge_base_ids",
                f"Knowledge base {base_id} does not exist or may not be attached here "
                "(attach this channel's own bases or your own).",
            )
        bases.append(base)
    return bases


def set_channel_bases(*, user: Any, channel: Channel, ids: Any) -> Channel:
    """Which bases every reply in ``channel`` searches (owner or moderator), checked by
    check_channel_bases; one ``channel_updated`` tells every screen. The PATCH of a
    channel goes through services.update_channel, which calls the same check."""
    from chat.services.channels import update_channel  # late: channels imports this module

    return update_channel(channel=channel, user=user, changes={"knowledge_base_ids": ids})


def check_message_bases(*, user: Any, channel: Channel, ids: Any) -> list[KnowledgeBase]:
    """The bases a message names (``knowledge_base_ids``), checked: each the sender's own,
    or the channel's own or attached; otherwise 400 naming the id (the same words for
    another's and a missing one). Duplicates collapse; at most MAX_MESSAGE_BASES."""
    parsed = _parsed_base_ids(ids, "knowledge_base_ids", MAX_MESSAGE_BASES)
    attached = set(channel.knowledge_bases.values_list("pk", flat=True))
    found = {b.pk: b for b in KnowledgeBase.objects.filter(pk__in=parsed).select_related("channel")}
    bases = []
    for base_id in parsed:
        base = found.get(base_id)
        allowed = base is not None and (
            (base.owner_id is not None and user.is_authenticated and base.owner_id == user.pk)
            or base.channel_id == channel.pk
            or base.pk in attached
        )
        if base is None or not allowed:
            raise _invalid(
                "knowledge_base_ids",
                f"Knowledge base {base_id} does not exist or is not yours or this channel's.",
            )
        bases.append(base)
    return bases


def bases_of(channel: Channel) -> list[KnowledgeBase]:
    """The bases a channel's replies search."""
    return list(channel.knowledge_bases.select_related("channel").order_by("name", "created_at", "id"))


# (Who reads what: chat.knowledge.selectors; the channel object's ids: selectors.attached_ids.)
__all__ = [
    "add_documents",
    "bases_of",
    "check_channel_bases",
    "check_message_bases",
    "create_base",
    "delete_base",
    "delete_document",
    "queue_indexing",
    "set_channel_bases",
    "update_base",
]

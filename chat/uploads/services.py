"""The one path for uploads: create (checks, limits, storage, queueing), delete, and the
attachment checks a message makes before its turn is saved (chat/services/conversation.py).

Every check that can refuse comes before anything is counted or stored: a refused upload
uses up none of the day's bytes."""

from __future__ import annotations

import base64
import binascii
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.db import transaction
from django.db.models import Q, QuerySet

from chat import limits, permissions
from chat.errors import ServiceError
from chat.models import Channel, Turn, Upload
from chat.realtime.events import attachment_updated_event, publish_on_commit, turn_event
from chat.services import audit, conversation
from chat.uploads.failures import ProcessingError
from chat.uploads.sniff import RASTER, sniff

# How much of a file's start its type is judged on (Office files are told by the zip
# members whose local headers come first; text by a sample of its start).
SNIFF_BYTES = 1024 * 1024


def clean_name(name: Any) -> str:
    """The name a file came with, as shown: no path, no control characters, ≤ 255."""
    text = str(name or "").replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C").strip()
    return text[:255] or "file"


def _require_login(user: Any) -> None:
    if not (user and user.is_authenticated):
        raise ServiceError("auth_required", "Log in to upload files.")
    if not user.is_active:
        raise ServiceError("forbidden", "Your account cannot upload files.")


def _check_channel(user: Any, channel: Channel | None) -> None:
    if channel is None:
        return
    if not permissions.can_view(user, channel):
        raise ServiceError("not_found", "No such channel.")
    conversation.check_can_write(user, channel)


def too_large(size: int | None = None) -> ServiceError:
    limit = settings.MAX_UPLOAD_BYTES
    said = f" ({size} bytes)" if size is not None else ""
    return ServiceError(
        "too_large",
        f"This file{said} is over the limit MAX_UPLOAD_BYTES ({limit} bytes).",
        fields={"file": [f"At most MAX_UPLOAD_BYTES ({limit} bytes)."]},
    )


def _size_and_head(data_or_file: bytes | File[Any]) -> tuple[int, bytes]:
    if isinstance(data_or_file, bytes):
        return len(data_or_file), data_or_file[:SNIFF_BYTES]
    size = int(data_or_file.size or 0)
    data_or_file.seek(0)
    head = data_or_file.read(SNIFF_BYTES)
    data_or_file.seek(0)
    return size, head


def _whole(data_or_file: bytes | File[Any]) -> bytes:
    if isinstance(data_or_file, bytes):
        return data_or_file
    data_or_file.seek(0)
    data = bytes(data_or_file.read())
    data_or_file.seek(0)
    return data


def create_upload(
    *, user: Any, data_or_file: bytes | File[Any], name: str, channel: Channel | None = None
) -> Upload:
    """Store a file the user sent (bytes, or a Django File such as an UploadedFile) and
    queue its processing. Refuses (counting nothing): not logged in; a channel the user
    may not see (not_found) or write in; over MAX_UPLOAD_BYTES (too_large); a type its
    bytes do not allow (unsupported_type); over the day's DAILY_UPLOAD_BYTES."""
    _require_login(user)
    _check_channel(user, channel)
    size, head = _size_and_head(data_or_file)
    if size > settings.MAX_UPLOAD_BYTES:
        raise too_large(size)
    if head.startswith(b"PK\x03\x04") and size > len(head):
        # A zip lists its entries at its end: an Office file whose word/document.xml or
        # xl/workbook.xml comes after a megabyte of pictures is told by the whole file.
        head = _whole(data_or_file)
    if size == 0:
        raise ServiceError("invalid", "The file is empty.", fields={"file": ["The file is empty."]})
    name = clean_name(name)
    mime, kind = sniff(head, name=name, size=size)
    content = ContentFile(data_or_file) if isinstance(data_or_file, bytes) else data_or_file
    upload = _store(user=user, channel=channel, name=name, mime=mime, kind=kind, size=size, content=content)

    def queue() -> None:
        from chat.uploads.tasks import enqueue  # late: the tasks module loads Celery

        enqueue(upload)

    transaction.on_commit(queue, robust=True)
    return upload


def _store(
    *,
    user: Any,
    channel: Channel | None,
    name: str,
    mime: str,
    kind: str,
    size: int,
    content: File[Any],
    counted: int | None = None,
    **ready: Any,
) -> Upload:
    """Count the bytes, save the file through the uploads storage and its row; announce
    it to the channel once committed. ``ready``: fields of an upload processed already."""
    limits.check_and_count_upload(user, size if counted is None else counted)
    upload = Upload(owner=user, channel=channel, name=name, mime=mime, kind=kind, size=size, **ready)
    try:
        upload.file.save(name, content, save=False)
        with transaction.atomic():
            upload.save()
            if channel is not None:
                publish_on_commit(channel.pk, channel.name, attachment_updated_event(upload))
    except BaseException:
        # Nothing was kept: neither the bytes counted nor a file without its row.
        if upload.file.name:
            upload.file.storage.delete(upload.file.name)
        limits.refund_upload(user, size if counted is None else counted)
        raise
    return upload


# --- the seed form: an image sent with a REST message as base64 -----------------------


@dataclass
class SeedImage:
    """A REST message's ``image``, decoded and processed (not yet stored or counted)."""

    data: bytes
    mime: str
    meta: dict[str, Any]
    sent_size: int
    name: str = "image"
    kind: str = field(default=Upload.Kind.IMAGE)

    def as_upload(self, user: Any) -> Upload:
        """An unsaved Upload standing for it where uploads are looked at (vision checks)."""
        return Upload(owner=user, name=self.name, mime=self.mime, size=len(self.data), kind=self.kind)


def _bad_image(reason: str) -> ServiceError:
    return ServiceError("invalid", f"image: {reason}", fields={"image": [reason]})


def prepare_seed_image(image: str, image_mime: str | None) -> SeedImage:
    """Decode and process the seed form's image, storing nothing: bad base64 or a broken
    image is a 400 naming ``image``; over MAX_UPLOAD_BYTES a 413; not a raster image a
    415. The real type is read from the bytes (``image_mime`` is only what the client
    believes)."""
    if len(image) > (settings.MAX_UPLOAD_BYTES + 2) // 3 * 4 + 4:
        raise too_large()
    if image.startswith("data:") and ";base64," in image[:200]:
        image = image.split(";base64,", 1)[1]  # a data: URL, as a browser makes one
    try:
        data = base64.b64decode(image.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _bad_image("Expected the image's bytes in base64.") from None
    if not data:
        raise _bad_image("The image is empty.")
    if len(data) > settings.MAX_UPLOAD_BYTES:
        raise too_large(len(data))
    mime, _kind = sniff(data[:SNIFF_BYTES], name="image", size=len(data))
    if mime not in RASTER:
        raise ServiceError(
            "unsupported_type",
            f"image must be a PNG, JPEG, GIF or WebP image (its bytes are {mime}).",
            fields={"image": [f"Not a raster image ({mime})."]},
        )
    from chat.uploads.images import process_image  # late: Pillow is loaded where images are

    try:
        encoded, encoded_mime, meta = process_image(data)
    except ProcessingError as failure:
        raise _bad_image(failure.reason) from None
    extension = encoded_mime.rsplit("/", 1)[-1].replace("jpeg", "jpg")
    return SeedImage(
        data=encoded, mime=encoded_mime, meta=meta, sent_size=len(data), name=f"image.{extension}"
    )


def store_seed_image(*, user: Any, channel: Channel, seed: SeedImage) -> Upload:
    """The seed image as the user's upload, ready (processed already); counts the bytes
    that were sent."""
    return _store(
        user=user,
        channel=channel,
        name=seed.name,
        mime=seed.mime,
        kind=seed.kind,
        size=len(seed.data),
        content=ContentFile(seed.data),
        counted=seed.sent_size,
        status=Upload.Status.READY,
        progress=100,
        meta=seed.meta,
    )


def discard_seed_upload(upload: Upload, *, counted: int) -> None:
    """Take back a seed image stored for a message that was then refused: its row, its
    file and its bytes."""
    Upload.objects.filter(pk=upload.pk).delete()  # its file with it (chat/uploads/stored_files.py)
    limits.refund_upload(upload.owner, counted)


# --- attachments ------------------------------------------------------------------------


def _invalid(upload_id: Any, why: str) -> ServiceError:
    text = f"Upload {upload_id} {why}"
    return ServiceError("invalid", text, fields={"attachments": [text]})


def check_attachment_count(ids: Any) -> None:
    """At most MAX_ATTACHMENTS_PER_MESSAGE files a message (its seed image among them)."""
    limit = settings.MAX_ATTACHMENTS_PER_MESSAGE
    if isinstance(ids, list) and len(ids) > limit:
        raise ServiceError(
            "too_large",
            f"At most MAX_ATTACHMENTS_PER_MESSAGE ({limit}) attachments a message; {len(ids)} were sent.",
            fields={"attachments": [f"At most {limit}."]},
        )


def uploads_for_message(*, user: Any, channel: Channel, ids: Any) -> list[Upload]:
    """The uploads a message names in ``attachments``, in its order, each checked: the
    caller's own, not sent already, of no other channel, ready. Reads only."""
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ServiceError(
            "invalid",
            "attachments must be a list of upload ids.",
            fields={"attachments": ["Expected a list of strings."]},
        )
    check_attachment_count(ids)
    parsed: list[uuid.UUID] = []
    for raw in ids:
        try:
            parsed.append(uuid.UUID(raw))
        except ValueError:
            raise _invalid(raw[:40], "is not an upload id.") from None
        if parsed.count(parsed[-1]) > 1:
            raise _invalid(raw, "is listed twice.")
    found = {u.pk: u for u in Upload.objects.filter(pk__in=parsed, owner=user).select_related("channel")}
    uploads = []
    for upload_id in parsed:
        upload = found.get(upload_id)
        if upload is None:
            raise _invalid(upload_id, "does not exist or is not yours.")
        if upload.turn_id is not None:
            raise _invalid(upload_id, "was sent with another message already.")
        if upload.channel_id is not None and upload.channel_id != channel.pk:
            raise _invalid(upload_id, "was uploaded to another channel.")
        uploads.append(upload)
    for upload in uploads:
        if upload.status != Upload.Status.READY:
            why = f": {upload.error}" if upload.error else ""
            text = f"Upload {upload.pk} is not ready ({upload.status}{why})."
            raise ServiceError("not_ready", text, fields={"attachments": [text]})
    return uploads


def attach(turn: Turn, uploads: list[Upload]) -> None:
    """Mark the uploads as sent with ``turn`` and list them on it. Call inside the turn's
    transaction: a message that lost one of its uploads meanwhile (sent with another
    message, deleted) is refused whole."""
    if not uploads:
        return
    channel_id = turn.session.channel_id
    with transaction.atomic():
        claimed = (
            Upload.objects.filter(
                pk__in=[u.pk for u in uploads], turn__isnull=True, status=Upload.Status.READY
            )
            .filter(Q(channel__isnull=True) | Q(channel_id=channel_id))
            .update(turn=turn, channel_id=channel_id)
        )
        if claimed != len(uploads):
            raise ServiceError(
                "invalid",
                "An attachment was sent with another message or deleted meanwhile; nothing was sent.",
                fields={"attachments": ["Changed meanwhile."]},
            )
        for upload in uploads:
            upload.turn, upload.channel_id = turn, channel_id
        turn.attachments = [u.to_attachment() for u in uploads]
        turn.save(update_fields=["attachments"])


def delete_upload(*, user: Any, upload: Upload) -> None:
    """Delete an upload and its file: its owner, or an admin (audited). One sent with a
    message stays listed on its turn as ``deleted`` (no url), and the room is told."""
    _require_login(user)
    is_owner = upload.owner_id == user.pk
    if not (is_owner or permissions.is_admin(user)):
        raise ServiceError("forbidden", "Only its owner or an admin may delete an upload.")
    with transaction.atomic():
        locked = Upload.objects.select_for_update().filter(pk=upload.pk).first()
        if locked is None:
            raise ServiceError("not_found", "No such upload.")
        if locked.turn_id is not None:
            _mark_deleted_on_turn(locked)
        if not is_owner:
            audit.record(
                actor=user,
                action="delete_upload",
                target=locked,
                channel=locked.channel,
                name=locked.name,
                owner=locked.owner_id,
            )
        locked.delete()  # its file goes once this is committed (chat/uploads/stored_files.py)


def delete_uploads(uploads: QuerySet[Upload]) -> int:
    """Delete these uploads, in the caller's transaction: the one way uploads go, whether
    their owner deletes one or the turn, session or channel they belong to goes
    (chat/services/sessions.py, moderation.py, channels.py), so a file never outlives what
    it was sent with, nor can it be sent again. Each row's file goes once the deletion
    commits (chat/uploads/stored_files.py, which also covers rows that go by cascade).
    Returns how many rows went."""
    count, _ = uploads.delete()
    return count


def uploads_of_turns(turns: QuerySet[Turn]) -> QuerySet[Upload]:
    """The uploads sent with these turns."""
    return Upload.objects.filter(turn__in=turns)


def _mark_deleted_on_turn(upload: Upload) -> None:
    turn = (
        # (Only the turn's row: PostgreSQL locks no nullable side of an outer join, the
        # author.)
        Turn.objects.select_for_update(of=("self",))
        .select_related("session__channel", "author")
        .get(pk=upload.turn_id or 0)
    )
    turn.attachments = [
        {**entry, "status": "deleted", "url": None} if entry.get("id") == str(upload.pk) else entry
        for entry in turn.attachments
    ]
    turn.save(update_fields=["attachments"])
    channel = turn.session.channel
    if not turn.hidden:  # a hidden turn is not shown to the room, so nothing to update
        publish_on_commit(channel.pk, channel.name, turn_event(turn.to_dict()))

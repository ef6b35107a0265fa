"""Reads of uploads, always scoped to who is asking."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from chat import permissions
from chat.models import Upload
from chat.selectors import readable_turn

# A list answers the newest this many (a person's uploads; older ones by id).
LIST_LIMIT = 500


def _parsed(upload_id: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(upload_id))
    except ValueError:
        return None


def uploads_of(user: Any, *, channel_name: str | None = None) -> QuerySet[Upload]:
    """The user's own uploads (of one channel, by name, if given), newest first."""
    rows = Upload.objects.filter(owner=user).select_related("channel")
    if channel_name is not None:
        rows = rows.filter(channel__name=channel_name)
    return rows.order_by("-created_at", "-id")[:LIST_LIMIT]


def own_upload(user: Any, upload_id: Any) -> Upload | None:
    """One of the user's uploads; None (a 404) for anyone else's or a missing one."""
    parsed = _parsed(upload_id)
    if parsed is None or not (user and user.is_authenticated):
        return None
    return Upload.objects.select_related("channel").filter(pk=parsed, owner=user).first()


def deletable_upload(user: Any, upload_id: Any) -> Upload | None:
    """The user's own upload, or any for an admin."""
    parsed = _parsed(upload_id)
    if parsed is None or not (user and user.is_authenticated and user.is_active):
        return None
    rows = Upload.objects.select_related("channel").filter(pk=parsed)
    if not permissions.is_admin(user):
        rows = rows.filter(owner=user)
    return rows.first()


def servable_upload(user: Any, upload_id: Any, key: str | None) -> Upload | None:
    """An upload whose bytes the user may read, checked on every request: the owner's;
    or, once sent with a message, anyone's who may watch that message's channel (public,
    member, moderator, or the current watch key), the turn being visible to them (hidden
    turns: moderators; a deleted session: those who may manage it). None otherwise."""
    parsed = _parsed(upload_id)
    if parsed is None:
        return None
    upload = Upload.objects.filter(pk=parsed).first()
    if upload is None:
        return None
    if user and user.is_authenticated and user.is_active and upload.owner_id == user.pk:
        return upload
    # Sent with a message: the message's own read rule decides.
    if upload.turn_id is None or readable_turn(user, upload.turn_id, key) is None:
        return None
    return upload

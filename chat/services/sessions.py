"""Deleting and truncating sessions."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from chat import permissions
from chat.errors import ServiceError
from chat.events import publish_on_commit
from chat.generation import engine
from chat.models import Session, Turn


def can_manage_session(user: Any, session: Session) -> bool:
    """The channel's owner, a moderator, or who started the session."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return permissions.can_configure(user, session.channel) or session.started_by_id == user.pk


def delete_session(*, session: Session, user: Any) -> None:
    """Delete a session and its turns. An active session is replaced by a fresh one."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not delete this session.")
    channel = session.channel
    was_active = session.status == Session.Status.ACTIVE
    if was_active:
        engine.interrupt(channel.pk, wait=5.0)
    with transaction.atomic():
        session.delete()
        if was_active:
            fresh = Session.objects.create(channel=channel, started_by=user)
            publish_on_commit(channel.pk, channel.name, {"type": "reset", "session": str(fresh.pk)})


def bulk_delete_sessions(*, ids: list[Any], user: Any) -> int:
    """Delete the listed sessions the user may manage; returns how many went."""
    deleted = 0
    for session in Session.objects.select_related("channel").filter(pk__in=ids):
        if can_manage_session(user, session):
            delete_session(session=session, user=user)
            deleted += 1
    return deleted


def truncate_session(*, session: Session, user: Any, keep: Any) -> dict[str, Any]:
    """Keep the first ``keep`` turns of a session and delete the rest."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not truncate this session.")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise ServiceError("invalid", "keep must be a whole number ≥ 0.", fields={"keep": ["Invalid."]})
    channel = session.channel
    if session.status == Session.Status.ACTIVE:
        engine.interrupt(channel.pk, wait=5.0)
    with transaction.atomic():
        ids = list(Turn.objects.filter(session=session).order_by("id").values_list("id", "hidden"))
        doomed = ids[keep:]
        Turn.objects.filter(pk__in=[turn_id for turn_id, _ in doomed]).delete()
        if session.status == Session.Status.ACTIVE:
            for turn_id, hidden in doomed:
                if not hidden:
                    publish_on_commit(channel.pk, channel.name, {"type": "turn_removed", "id": turn_id})
    return {"session": str(session.pk), "kept": len(ids) - len(doomed), "deleted": len(doomed)}

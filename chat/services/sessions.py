"""Deleting and truncating sessions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from chat import permissions
from chat.errors import ServiceError
from chat.generation import engine
from chat.models import Session, Turn
from chat.realtime.events import publish_on_commit, redact_on_commit, reset_event, turn_removed_event
from chat.services.audit import record


def can_manage_session(user: Any, session: Session) -> bool:
    """Deleting or truncating a session takes turns away from everyone who shares the
    channel: only its owner, moderators and admins may. Having started the session (a
    reset makes anyone its starter) gives no such right."""
    return permissions.can_configure(user, session.channel)


def delete_session(*, session: Session, user: User) -> None:
    """Delete a session and its turns. An active session is replaced by a fresh one."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not delete this session.")
    channel = session.channel
    was_active = session.status == Session.Status.ACTIVE
    if was_active:
        engine.interrupt(channel.pk, wait=5.0)
    with transaction.atomic():
        record(actor=user, action="delete_session", target=session, channel=channel)
        session.delete()
        if was_active:
            fresh = Session.objects.create(channel=channel, started_by=user)
            publish_on_commit(channel.pk, channel.name, reset_event(fresh.pk), redact=True)
        else:
            redact_on_commit(channel.pk)


def bulk_delete_sessions(*, ids: list[Any], user: User) -> int:
    """Delete the listed sessions the user may manage; returns how many went."""
    deleted = 0
    for session in Session.objects.select_related("channel").filter(pk__in=ids):
        if can_manage_session(user, session):
            delete_session(session=session, user=user)
            deleted += 1
    return deleted


def truncate_session(*, session: Session, user: User, keep: int) -> dict[str, Any]:
    """Keep the first ``keep`` visible turns of a session and delete every turn after
    them (hidden ones included; hidden turns before the cut stay, for audit)."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not truncate this session.")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise ServiceError("invalid", "keep must be a whole number ≥ 0.", fields={"keep": ["Invalid."]})
    channel = session.channel
    live = session.status == Session.Status.ACTIVE
    if live:
        engine.interrupt(channel.pk, wait=5.0)
    with transaction.atomic():
        rows = list(Turn.objects.filter(session=session).order_by("id").values_list("id", "hidden"))
        visible = [turn_id for turn_id, hidden in rows if not hidden]
        # Nothing to cut when every visible turn is kept; else cut after the last kept one.
        cut_after = None if keep >= len(visible) else (visible[keep - 1] if keep else 0)
        doomed = [] if cut_after is None else [(t, h) for t, h in rows if t > cut_after]
        Turn.objects.filter(pk__in=[turn_id for turn_id, _ in doomed]).delete()
        for turn_id, hidden in doomed:
            if live and not hidden:
                publish_on_commit(channel.pk, channel.name, turn_removed_event(turn_id), redact=True)
        if doomed and (not live or any(hidden for _, hidden in doomed)):
            redact_on_commit(channel.pk)
        if doomed:
            record(
                actor=user, action="truncate_session", target=session, channel=channel, deleted=len(doomed)
            )
    return {"session": str(session.pk), "kept": min(keep, len(visible)), "deleted": len(doomed)}

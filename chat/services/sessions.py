"""Renaming, archiving, reopening, deleting and truncating sessions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat import permissions
from chat.agents import memory_extraction
from chat.agents.checkpoints import drop_covering
from chat.errors import ServiceError
from chat.generation import engine
from chat.models import Channel, Session, Turn
from chat.realtime.events import (
    publish_on_commit,
    redact_on_commit,
    reset_event,
    resync_on_commit,
    session_updated_event,
    turn_removed_event,
)
from chat.services.audit import record
from chat.uploads.services import delete_uploads, uploads_of_turns

# How long a status change waits for a running reply to stop before going on.
INTERRUPT_WAIT_S = 5.0


def can_manage_session(user: Any, session: Session) -> bool:
    """Deleting or truncating a session takes turns away from everyone who shares the
    channel: only its owner, moderators and admins may. Having started the session (a
    reset makes anyone its starter) gives no such right."""
    return permissions.can_configure(user, session.channel)


def update_session(
    *, session: Session, user: User, title: str | None = None, status: str | None = None
) -> Session:
    """Rename a session (``""`` clears the title and lets a generated one come again)
    and/or change its status. Archiving or deleting the active session opens a fresh
    one (``reset``); making an archived or deleted session active archives the active
    one and reopens it (``reset`` naming it, and every screen gets a fresh ``history``).
    Every change is broadcast as ``session_updated``. Returns the session as saved."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not change this session.")
    if status is not None and status not in Session.Status.values:
        raise ServiceError("invalid", "Unknown status.", fields={"status": ["Invalid choice."]})
    channel = session.channel
    if status is not None and status != session.status and Session.Status.ACTIVE in (status, session.status):
        # The reply being written belongs to the active session: it stops before that
        # session leaves or another takes its place.
        engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    with transaction.atomic():
        Channel.objects.select_for_update().filter(pk=channel.pk).first()  # orders it with new turns
        session = Session.objects.select_related("channel", "started_by").get(pk=session.pk)
        changes: dict[str, Any] = {}
        if title is not None:
            session.title, session.title_by_person = title, bool(title)
            changes["title"] = title
        if status is not None and status != session.status:
            changes["status"] = [session.status, status]
            _move(session, status, user)
        elif changes:
            session.save()
            _announce(session)
        if changes:
            record(actor=user, action="update_session", target=session, channel=channel, **changes)
    return session


def save_generated_title(*, session_id: Any, title: str) -> bool:
    """Save a title the task model wrote (chat/generation/titles.py), unless a person
    set one, another appeared or the session was deleted meanwhile; broadcast it. Not
    activity: updated_at stays. Returns whether it was saved."""
    with transaction.atomic():
        # A session deleted meanwhile gets none: its turns are for its managers alone,
        # and session_updated goes to every watcher of the channel.
        saved = (
            Session.objects.filter(pk=session_id, title="", title_by_person=False)
            .exclude(status=Session.Status.DELETED)
            .update(title=title[:200])
        )
        if saved:
            _announce(Session.objects.select_related("channel").get(pk=session_id))
    return bool(saved)


def _announce(session: Session) -> None:
    channel = session.channel
    event = session_updated_event(session.pk, title=session.title, status=session.status)
    publish_on_commit(channel.pk, channel.name, event)


def _move(session: Session, status: str, user: User) -> None:
    """Save ``session`` with its new status, announce it, and do what that means for
    the channel."""
    channel = session.channel
    now = timezone.now()
    was_active = session.status == Session.Status.ACTIVE
    if status == Session.Status.ACTIVE:
        for current in Session.objects.select_related("channel").filter(
            channel=channel, status=Session.Status.ACTIVE
        ):
            current.status, current.archived_at = Session.Status.ARCHIVED, now
            current.save()  # before the reopened one: one active session per channel
            _announce(current)
            memory_extraction.sessions_ended(channel, [current.pk])
        session.archived_at = session.deleted_at = None
    elif status == Session.Status.ARCHIVED:
        session.archived_at = session.archived_at if session.status == Session.Status.DELETED else now
        session.deleted_at = None
    else:
        session.deleted_at = now
    session.status = status
    session.save()
    _announce(session)
    if status == Session.Status.ACTIVE:
        publish_on_commit(channel.pk, channel.name, reset_event(session.pk))
        resync_on_commit(channel.pk)
    elif was_active:
        if status == Session.Status.ARCHIVED:  # a deleted one is not read
            memory_extraction.sessions_ended(channel, [session.pk])
        fresh = Session.objects.create(channel=channel, started_by=user)
        # A deleted session's turns leave the transcript: no replay may serve them.
        publish_on_commit(
            channel.pk, channel.name, reset_event(fresh.pk), redact=status == Session.Status.DELETED
        )
    elif status == Session.Status.DELETED:
        redact_on_commit(channel.pk)


def delete_session(*, session: Session, user: User) -> None:
    """Delete a session and its turns. An active session is replaced by a fresh one."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not delete this session.")
    _remove(session, actor=user, action="delete_session")


def purge_expired_sessions(*, days: int, now: datetime | None = None) -> int:
    """Delete the sessions kept longer than ``days`` (RETENTION_DAYS; 0 keeps them for
    ever): those whose last activity is older, and deleted ones ``days`` after their
    deletion. An active one is replaced by a fresh session. Returns how many went."""
    if days <= 0:
        return 0
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = Q(status=Session.Status.DELETED)
    expired = Session.objects.select_related("channel").filter(
        (deleted & Q(deleted_at__lt=cutoff)) | (~deleted & Q(updated_at__lt=cutoff))
    )
    count = 0
    for session in expired:
        _remove(session, actor=None, action="expire_session")
        count += 1
    return count


def _remove(session: Session, *, actor: User | None, action: str) -> None:
    """Delete the session and its turns (and the files sent with them), audited; drop
    the replay log that may hold them; an active session is replaced by a fresh one (``reset``)."""
    channel = session.channel
    was_active = session.status == Session.Status.ACTIVE
    if was_active:
        engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    with transaction.atomic():
        record(actor=actor, action=action, target=session, channel=channel)
        delete_uploads(uploads_of_turns(Turn.objects.filter(session=session)))
        session.delete()
        if was_active:
            fresh = Session.objects.create(channel=channel, started_by=actor)
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


def truncate_session(*, session: Session, user: User, keep: int, keep_from: str = "end") -> dict[str, Any]:
    """Keep ``keep`` visible turns of a session and delete the others, hidden ones
    included, on the side that goes: ``keep_from="end"`` keeps the most recent ones and
    deletes every turn before them; ``"start"`` keeps the first ones and deletes every
    turn after them. Hidden turns among the kept ones stay, for audit."""
    if not can_manage_session(user, session):
        raise ServiceError("forbidden", "You may not truncate this session.")
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 0:
        raise ServiceError("invalid", "keep must be a whole number ≥ 0.", fields={"keep": ["Invalid."]})
    if keep_from not in ("end", "start"):
        raise ServiceError("invalid", "from must be end or start.", fields={"from": ["Invalid choice."]})
    channel = session.channel
    live = session.status == Session.Status.ACTIVE
    if live:
        engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    with transaction.atomic():
        rows = list(Turn.objects.filter(session=session).order_by("id").values_list("id", "hidden"))
        visible = [turn_id for turn_id, hidden in rows if not hidden]
        if keep >= len(visible):  # every visible turn is kept: nothing to cut
            doomed = []
        elif keep_from == "start":
            cut_after = visible[keep - 1] if keep else 0
            doomed = [(t, h) for t, h in rows if t > cut_after]
        else:
            first_kept = visible[len(visible) - keep] if keep else None
            doomed = [(t, h) for t, h in rows if first_kept is None or t < first_kept]
        dropped = Turn.objects.filter(pk__in=[turn_id for turn_id, _ in doomed])
        delete_uploads(uploads_of_turns(dropped))
        dropped.delete()
        if doomed:  # no summary may keep their text
            drop_covering(session.pk, min(turn_id for turn_id, _ in doomed))
        for turn_id, hidden in doomed:
            if live and not hidden:
                publish_on_commit(channel.pk, channel.name, turn_removed_event(turn_id), redact=True)
        if doomed and (not live or any(hidden for _, hidden in doomed)):
            redact_on_commit(channel.pk)
        if doomed:
            record(
                actor=user,
                action="truncate_session",
                target=session,
                channel=channel,
                deleted=len(doomed),
                kept_from=keep_from,
            )
    return {"session": str(session.pk), "kept": min(keep, len(visible)), "deleted": len(doomed)}

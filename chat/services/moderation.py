"""Moderation verbs and channel membership. Each moderation verb checks that the actor
may moderate, writes an audit record (ModerationAction) in the same transaction as its
change, and has its live effect on every open connection of every process once that
transaction commits."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session as LoginSession
from django.db import transaction

from chat import permissions
from chat.agents.checkpoints import drop_covering
from chat.errors import ServiceError
from chat.generation import engine
from chat.models import ApiToken, Channel, Membership, Session, Turn
from chat.realtime import background, events, store
from chat.realtime.events import publish_on_commit
from chat.services.audit import record
from chat.services.channels import change_lock
from chat.uploads.services import delete_uploads, uploads_of_turns

# How long a purge waits for a running reply to stop before deleting its turns.
INTERRUPT_WAIT_S = 5.0


def check_can_moderate(actor: Any) -> None:
    if not permissions.is_moderator(actor):
        raise ServiceError("forbidden", "Only moderators and admins can do this.")


def check_can_act_on(actor: Any, user: Any) -> None:
    """Moderators act on ordinary users only: staff answer to staff, superusers to
    superusers."""
    if user.is_superuser and not actor.is_superuser:
        raise ServiceError("forbidden", "Only a superuser can act on a superuser.")
    if user.is_staff and not (actor.is_staff or actor.is_superuser):
        raise ServiceError("forbidden", "Only staff can act on staff.")


def _is_live(turn: Turn) -> bool:
    """Open screens show only the active session's turns."""
    return turn.session.status == Session.Status.ACTIVE


# --- turns -------------------------------------------------------------------------------


def hide_turn(*, actor: User, turn: Turn, reason: str = "") -> None:
    """Take a turn out of every transcript (and every future prompt); kept for audit."""
    check_can_moderate(actor)
    if turn.role == Turn.Role.BOT and turn.finish_reason is None:
        # Still being written: stopped first, or its tokens would follow the removal.
        engine.interrupt(turn.session.channel_id, wait=INTERRUPT_WAIT_S)
    channel = turn.session.channel
    with transaction.atomic():
        Turn.objects.filter(pk=turn.pk).update(hidden=True)
        turn.hidden = True
        drop_covering(turn.session_id, turn.pk)  # no summary may keep its text
        record(actor=actor, action="hide_turn", target=turn, channel=channel, reason=reason)
        _removed_on_commit(channel, turn.pk, live=_is_live(turn))


def unhide_turn(*, actor: User, turn: Turn, reason: str = "") -> None:
    """Bring a hidden turn back; open screens get it again as a ``turn`` event."""
    check_can_moderate(actor)
    channel = turn.session.channel
    with transaction.atomic():
        Turn.objects.filter(pk=turn.pk).update(hidden=False)
        turn.hidden = False
        record(actor=actor, action="unhide_turn", target=turn, channel=channel, reason=reason)
        if _is_live(turn) and not (turn.role == Turn.Role.BOT and turn.finish_reason is None):
            publish_on_commit(channel.pk, channel.name, events.turn_event(turn.to_dict()))


def delete_turn(*, actor: User, turn: Turn, reason: str = "") -> None:
    """Delete a turn for good (the audit record keeps who, when and why)."""
    check_can_moderate(actor)
    if turn.role == Turn.Role.BOT and turn.finish_reason is None:
        # Still being written: stopped first, or its tokens would follow the removal.
        engine.interrupt(turn.session.channel_id, wait=INTERRUPT_WAIT_S)
    channel = turn.session.channel
    live = _is_live(turn)
    with transaction.atomic():
        record(actor=actor, action="delete_turn", target=turn, channel=channel, reason=reason, role=turn.role)
        turn_id = turn.pk
        delete_uploads(uploads_of_turns(Turn.objects.filter(pk=turn_id)))
        drop_covering(turn.session_id, turn_id)  # no summary may keep its text
        turn.delete()
        _removed_on_commit(channel, turn_id, live=live)


def _removed_on_commit(channel: Channel, turn_id: int, *, live: bool) -> None:
    """Tell open screens a turn left the transcript (when it was on them), and make sure
    no replay serves it any more."""
    if live:
        publish_on_commit(channel.pk, channel.name, events.turn_removed_event(turn_id), redact=True)
    else:
        events.redact_on_commit(channel.pk)


# --- channels ----------------------------------------------------------------------------


def set_locked(*, actor: User, channel: Channel, locked: bool, reason: str = "") -> None:
    """Lock (writes refused with ``locked``) or unlock a channel."""
    check_can_moderate(actor)
    change_lock(actor=actor, channel=channel, locked=locked, reason=reason)


def interrupt_generation(*, actor: User, channel: Channel, reason: str = "") -> bool:
    """Stop the reply being written in a channel; False when none was running."""
    check_can_moderate(actor)
    stopped = engine.interrupt(channel.pk)
    record(
        actor=actor,
        action="interrupt_generation",
        target=channel,
        channel=channel,
        reason=reason,
        stopped=stopped,
    )
    return stopped


def purge_session(*, actor: User, session: Session, reason: str = "") -> int:
    """Delete every turn of a session. Open screens of its channel get a fresh
    ``history``; the replay log is dropped so no reconnecting client replays the
    purged turns. Returns how many turns went."""
    check_can_moderate(actor)
    channel = session.channel
    live = session.status == Session.Status.ACTIVE
    if live:
        engine.interrupt(channel.pk, wait=INTERRUPT_WAIT_S)
    with transaction.atomic():
        turns = Turn.objects.filter(session=session)
        delete_uploads(uploads_of_turns(turns))
        deleted, _ = turns.delete()
        drop_covering(session.pk, 0)
        record(
            actor=actor, action="purge_session", target=session, channel=channel, reason=reason, turns=deleted
        )
        if live:
            # robust: the purge is committed; with Redis down, screens resync on reconnect.
            transaction.on_commit(lambda: background.run(_resync_everyone(channel.pk)), robust=True)
        else:
            events.redact_on_commit(channel.pk)
    return deleted


async def _resync_everyone(channel_id: int) -> None:
    await store.forget_log(channel_id)
    await events.aresync_channel(channel_id)


# --- users -------------------------------------------------------------------------------


def set_muted(*, actor: User, channel: Channel, user: User, muted: bool, reason: str = "") -> None:
    """Mute (writes refused with ``muted``) or unmute a user in one channel. In a public
    channel a muted non-member gets a membership row that carries the mute."""
    check_can_moderate(actor)
    check_can_act_on(actor, user)
    with transaction.atomic():
        membership = Membership.objects.filter(user=user, channel=channel).first()
        if membership is None:
            if not channel.is_public:
                raise ServiceError("invalid", f"{user.get_username()} is not a member of this channel.")
            membership = Membership(user=user, channel=channel)
        membership.muted = muted
        membership.save()
        record(
            actor=actor,
            action="mute_user" if muted else "unmute_user",
            target=user,
            channel=channel,
            reason=reason,
        )


def ban_user(*, actor: User, user: User, reason: str = "") -> None:
    """Deactivate a user: their API token and logins stop working at once and every
    socket they have open, in every process, closes with 4003."""
    check_can_moderate(actor)
    check_can_act_on(actor, user)
    with transaction.atomic():
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
        ApiToken.objects.filter(user=user).delete()
        _end_logins(user.pk)
        record(actor=actor, action="ban_user", target=user, channel=None, reason=reason)
        # robust: the ban is committed; sockets also close at their next login check.
        transaction.on_commit(lambda: background.run(events.aclose_user_sockets(user.pk, 4003)), robust=True)
        events.access_changed_on_commit(None)


def unban_user(*, actor: User, user: User, reason: str = "") -> None:
    """Reactivate a user. Their old logins and token stay ended: they log in again."""
    check_can_moderate(actor)
    check_can_act_on(actor, user)
    with transaction.atomic():
        get_user_model().objects.filter(pk=user.pk).update(is_active=True)
        record(actor=actor, action="unban_user", target=user, channel=None, reason=reason)


def _end_logins(user_id: int) -> None:
    # Sessions store the user id in their encoded data; there is no index to query by.
    for login in LoginSession.objects.all().iterator():
        if str(login.get_decoded().get("_auth_user_id")) == str(user_id):
            login.delete()


# --- membership ----------------------------------------------------------------------------


def add_member(*, actor: User, channel: Channel, user: User) -> Membership:
    """Invite a user into a channel (owner or moderator)."""
    if not permissions.can_configure(actor, channel):
        raise ServiceError("forbidden", "Only the channel owner or a moderator can invite members.")
    if not user.is_active:
        raise ServiceError("invalid", f"{user.get_username()} is not an active user.")
    membership, _ = Membership.objects.get_or_create(user=user, channel=channel)
    return membership


def remove_member(*, actor: User, channel: Channel, user: User) -> None:
    """Remove a member (owner or moderator; members may leave). In a private channel
    their open sockets there close with 4003 at once."""
    if not (permissions.can_configure(actor, channel) or (actor.is_authenticated and actor.pk == user.pk)):
        raise ServiceError("forbidden", "Only the channel owner or a moderator can remove members.")
    if channel.owner_id == user.pk:
        raise ServiceError("invalid", "The owner cannot be removed from their channel.")
    with transaction.atomic():
        membership = Membership.objects.select_for_update().filter(user=user, channel=channel).first()
        if membership is not None and membership.muted:
            # The row carries a moderator's mute: removing it lifts the mute.
            if not permissions.is_moderator(actor):
                raise ServiceError("forbidden", "A muted member can be removed only by a moderator.")
            check_can_act_on(actor, user)
        if membership is not None:
            record(actor=actor, action="remove_member", target=user, channel=channel)
        deleted, _ = Membership.objects.filter(user=user, channel=channel).delete()
        if deleted:  # in a private channel their connections there close (4003)
            events.access_changed_on_commit(channel.pk)

"""Reads, always scoped to who is asking."""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from chat import limits, permissions
from chat.agents import checkpoints
from chat.agents.steps import public_steps
from chat.framing import effective_framing, effective_params
from chat.models import (
    Channel,
    Instruction,
    Membership,
    Provider,
    Session,
    Turn,
    UserPreference,
    iso,
)
from chat.realtime import store

log = logging.getLogger(__name__)

HISTORY_TURNS = 50


def channel_by_name(name: str) -> Channel | None:
    return Channel.objects.select_related("owner").filter(name=name).first()


def channel_by_id(channel_id: int) -> Channel | None:
    return Channel.objects.select_related("owner").filter(pk=channel_id).first()


def user_by_id(user_id: int | None) -> Any | None:
    """The user, read afresh (a socket keeps only the id: bans and role changes count)."""
    if user_id is None:
        return None
    return get_user_model().objects.filter(pk=user_id).first()


def current_seq(channel: Channel) -> int:
    """The seq of the channel's last broadcast event."""
    return int(store.sync_redis().get(store.key(channel.pk, "seq")) or 0)


def finished_turn(turn_id: int) -> Turn | None:
    return Turn.objects.select_related("author").filter(pk=turn_id, finish_reason__isnull=False).first()


def is_reply_being_written(turn_id: int) -> bool:
    return Turn.objects.filter(
        pk=turn_id, role=Turn.Role.BOT, finish_reason__isnull=True, hidden=False
    ).exists()


def reply_being_written(turn_id: int) -> dict[str, Any] | None:
    """The sources and (public) tool steps of a reply still being written (visible);
    None when it is not."""
    row = (
        Turn.objects.filter(pk=turn_id, role=Turn.Role.BOT, finish_reason__isnull=True, hidden=False)
        .values_list("sources", "steps")
        .first()
    )
    if row is None:
        return None
    return {"sources": list(row[0] or []), "steps": public_steps(row[1])}


def reply_to(turn: Turn) -> Turn | None:
    """The finished, visible bot turn that answers ``turn``, if there is one yet."""
    return (
        Turn.objects.select_related("author")
        .filter(
            session_id=turn.session_id,
            role=Turn.Role.BOT,
            id__gt=turn.pk,
            finish_reason__isnull=False,
            hidden=False,
        )
        .order_by("id")
        .first()
    )


def visible_turn_count(session: Session | None) -> int:
    """As kept beside the session (read with it), not counted."""
    return session.visible_turns if session else 0


def members(channel: Channel) -> list[Membership]:
    return list(Membership.objects.filter(channel=channel).select_related("user").order_by("created_at"))


def user_by_name(username: str) -> Any | None:
    return get_user_model().objects.filter(username=username).first()


def channel_sessions(channel: Channel) -> QuerySet[Session]:
    """The channel's sessions, newest first (whoever may see the channel may see them;
    deleted ones are filtered by :func:`session_page`)."""
    return channel.sessions.select_related("channel", "started_by").order_by("-created_at")


def _manageable(user: Any) -> Q:
    """Sessions of channels the user may manage (permissions.can_configure): the owner's,
    every channel's for moderators."""
    if permissions.is_moderator(user):
        return Q()
    if user and user.is_authenticated and user.is_active:
        return Q(channel__owner=user)
    return Q(pk__in=[])


def encode_session_cursor(session: Session) -> str:
    """Where a page of sessions ended, opaque to clients: the last one's place in the
    order (updated_at, id), so a session that moves meanwhile repeats or skips nothing
    else."""
    raw = f"{session.updated_at.isoformat()}|{session.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_session_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The place a cursor names; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, session_id = raw.split("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError("no time zone")
        # In UTC now: a forged moment near year 1 or 9999 may not fit in UTC, and the
        # database would say so with an OverflowError (a 500) as the query ran.
        parsed = parsed.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise ValueError("not a cursor") from exc
    return parsed, uuid.UUID(session_id)


def session_page(
    user: Any,
    sessions: QuerySet[Session],
    *,
    statuses: list[str],
    query: str = "",
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int,
) -> list[Session]:
    """Up to ``limit`` + 1 of ``sessions`` (already scoped to what the user may see),
    most recent activity first. Deleted ones only where the user may manage the
    channel; ``query`` matches the title or any visible turn's text."""
    wanted = Q(status__in=[s for s in statuses if s != Session.Status.DELETED])
    if Session.Status.DELETED in statuses:
        wanted |= Q(status=Session.Status.DELETED) & _manageable(user)
    rows = sessions.filter(wanted)
    if query:
        said = Turn.objects.filter(session=OuterRef("pk"), hidden=False, text__icontains=query)
        rows = rows.filter(Q(title__icontains=query) | Exists(said))
    if after is not None:
        moment, session_id = after
        rows = rows.filter(Q(updated_at__lt=moment) | Q(updated_at=moment, id__lt=session_id))
    return list(rows.order_by("-updated_at", "-id")[: limit + 1])


def enabled_providers() -> QuerySet[Provider]:
    return Provider.objects.filter(enabled=True).order_by("priority", "name")


def visible_channels(user: Any) -> QuerySet[Channel]:
    """Public channels, the ones the user belongs to; all of them for moderators. Each
    with ``turn_count``: the visible turns of its active session, as kept beside the
    session (Session.visible_turns), so that a list reads no turn, however long the
    history."""
    channels = Channel.objects.all()
    if not permissions.is_moderator(user):
        scope = Q(visibility=Channel.Visibility.PUBLIC)
        if user and user.is_authenticated:
            # A subquery, not a join: a join would repeat each channel once per member.
            member_of = Membership.objects.filter(user=user).values("channel_id")
            scope |= Q(owner=user) | Q(pk__in=member_of)
        channels = channels.filter(scope)
    active = Session.objects.filter(channel=OuterRef("pk"), status=Session.Status.ACTIVE)
    turn_count = Coalesce(Subquery(active.values("visible_turns")[:1]), 0)
    return channels.annotate(turn_count=turn_count).order_by("name")


# What a channel list shows of each channel (ChannelsView, channel_summary): not the
# framing and params, whose preamble alone may be 20,000 characters a channel.
LISTED_FIELDS = ("name", "title", "owner_id", "visibility", "locked", "watch_key")


def listed_channels(user: Any, *, offset: int, limit: int) -> list[Channel]:
    """A page of :func:`visible_channels` with only the fields a list shows, in one query."""
    return list(visible_channels(user).only(*LISTED_FIELDS)[offset : offset + limit])


def history_state(channel: Channel, *, limit: int = HISTORY_TURNS) -> dict[str, Any]:
    """The database half of a ``history`` event: the active session's last turns."""
    # Read afresh: a connection's channel object is as old as the connection, and a
    # history may be all that tells a client of settings changed since (their event is
    # lost when Redis was out of reach as they were saved).
    channel = Channel.objects.filter(pk=channel.pk).first() or channel
    session = channel.active_session
    turns: list[Turn] = []
    has_more = False
    folded: list[dict[str, Any]] = []  # the session's checkpoints among those turns
    if session is not None:
        rows = list(
            # A reply being written is sent as ``generating``, from Redis, not as a turn.
            Turn.objects.filter(session=session, hidden=False)
            .exclude(role=Turn.Role.BOT, finish_reason__isnull=True)
            .select_related("author")
            .order_by("-id")[: limit + 1]
        )
        has_more = len(rows) > limit
        turns = list(reversed(rows[:limit]))
        # Those placed among the turns sent; older ones come with older pages (TurnsView).
        folded = checkpoints.for_transcript(session.pk, from_turn_id=turns[0].pk if has_more else None)
    return {
        "session": str(session.pk) if session else None,
        "framing": effective_framing(channel.framing),
        "params": effective_params(channel.params),
        "member_params": channel.member_params or {},
        "instruction": channel.instruction_id,
        "knowledge_base_ids": attached_ids(channel),
        **agent_settings(channel),
        "turns": [t.to_dict() for t in turns],
        "has_more": has_more,
        "checkpoints": folded,
    }


def agent_settings(channel: Channel) -> dict[str, Any]:
    """The channel object's tool and agent fields (issue 17), as the API, ``history`` and
    ``channel_updated`` show them. ``tools_apply`` is false in completion mode: the tools
    stay configured but are not offered to the model."""
    agent = channel.agent if channel.agent_id else None
    return {
        "tools": list(channel.tools or []),
        "tools_requiring_approval": list(channel.tools_requiring_approval or []),
        "tools_apply": channel.mode == Channel.Mode.CHAT,
        "agent": agent.name if agent is not None else None,
        "agent_choice": channel.agent_choice,
        "memory": channel.memory,
    }


def attached_ids(channel: Channel) -> list[str]:
    """The ids of the knowledge bases attached to a channel (the channel object's
    ``knowledge_base_ids``), in a stable order."""
    ids = channel.knowledge_bases.order_by("name", "created_at", "id").values_list("pk", flat=True)
    return [str(pk) for pk in ids]


def channel_turn(user: Any, channel_id: int, turn_id: int) -> Turn | None:
    """A turn of any session of the channel, for someone already let in to watch it
    (a socket); hidden turns for moderators only."""
    turn = (
        Turn.objects.select_related("author", "session__channel")
        .filter(pk=turn_id, session__channel_id=channel_id)
        .first()
    )
    if turn is None or (turn.hidden and not permissions.is_moderator(user)):
        return None
    if not may_read_session(user, turn.session):
        return None
    return turn


def readable_turn(user: Any, turn_id: int, key: str | None) -> Turn | None:
    """A turn for whoever may watch its channel (public, member, moderator, or with the
    watch key), whichever session it belongs to; hidden turns for moderators only.
    None (a 404) otherwise, so outsiders cannot tell a private turn from a missing one."""
    turn = Turn.objects.select_related("author", "session__channel").filter(pk=turn_id).first()
    if turn is None or not permissions.can_watch(user, turn.session.channel, key):
        return None
    if turn.hidden and not permissions.is_moderator(user):
        return None
    if not may_read_session(user, turn.session):
        return None
    return turn


def may_read_session(user: Any, session: Session) -> bool:
    """A deleted session (soft, until it is purged) is for those who may manage it
    alone; any other for whoever got this far (its channel's read rules)."""
    return session.status != Session.Status.DELETED or permissions.can_configure(user, session.channel)


def channel_for(user: Any, name: str) -> Channel | None:
    """The channel if the user may see it; None (a 404) otherwise, so outsiders cannot
    tell a private channel from a missing one."""
    channel = channel_by_name(name)
    if channel is None or not permissions.can_view(user, channel):
        return None
    return channel


def sessions_for(user: Any) -> QuerySet[Session]:
    """The caller's sessions: those of channels they own or belong to, and those they
    started in channels they may still see; every session for moderators."""
    sessions = Session.objects.select_related("channel", "started_by")
    if permissions.is_moderator(user):
        return sessions.order_by("-created_at")
    if not (user and user.is_authenticated and user.is_active):
        return sessions.none()
    mine = Q(channel__owner=user) | Q(channel__memberships__user=user)
    started_where_visible = Q(started_by=user, channel__visibility=Channel.Visibility.PUBLIC)
    return sessions.filter(mine | started_where_visible).distinct().order_by("-created_at")


def session_for(user: Any, session_id: Any) -> Session | None:
    """A session, if the user may see its channel: access to a session is access to
    its channel, whoever started it."""
    try:
        session = Session.objects.select_related("channel", "started_by").get(pk=session_id)
    except (Session.DoesNotExist, ValueError, TypeError, ValidationError):
        return None
    if not permissions.can_view(user, session.channel) or not may_read_session(user, session):
        return None
    return session


def turns_page(session: Session, *, limit: int, before: int | None, include_hidden: bool) -> list[Turn]:
    """Up to ``limit`` turns before the turn ``before``, oldest first."""
    rows = Turn.objects.filter(session=session).select_related("author").order_by("-id")
    if not include_hidden:
        rows = rows.filter(hidden=False)
    if before is not None:
        rows = rows.filter(id__lt=before)
    return list(reversed(rows[:limit]))


def checkpoints_of_page(
    session: Session, turns: list[Turn], *, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """The session's checkpoints placed among a page of ``turns_page``: a full page may
    have older turns (and their checkpoints) before it, a short one is the first."""
    first = turns[0].pk if turns and len(turns) >= limit else None
    return checkpoints.for_transcript(session.pk, from_turn_id=first, before_turn_id=before)


def session_to_dict(session: Session) -> dict[str, Any]:
    """The protocol's Session object. Reads no row beyond the session (with its channel
    and starter selected): the turn count is kept beside it (Session.visible_turns)."""
    return {
        "id": str(session.pk),
        "channel": session.channel.name,
        "title": session.title,
        "status": session.status,
        "title_by_person": session.title_by_person,
        "started_by": session.started_by.get_username() if session.started_by else None,
        "created_at": iso(session.created_at),
        "updated_at": iso(session.updated_at),
        "archived_at": iso(session.archived_at),
        "deleted_at": iso(session.deleted_at),
        "turns": session.visible_turns,
        "usage": {"prompt_tokens": session.prompt_tokens, "completion_tokens": session.completion_tokens},
    }


def watch_path(user: Any, channel: Channel, *, visible: bool = False) -> str:
    """The channel's watch link. A private channel's carries the key, shown only to
    those who may see the channel anyway (and so may share it). ``visible``: the user is
    known to see it (a row of :func:`visible_channels`), no need to ask again."""
    path = f"/watch/{channel.name}"
    if not channel.is_public and (visible or permissions.can_view(user, channel)):
        path += f"?key={channel.watch_key}"
    return path


def generating_flags(channels: list[Channel]) -> list[bool]:
    """Whether the bot is writing in each channel: its generation lock is held. With
    Redis unreachable, false: an extra of a listing or of an answer to a change already
    committed, which must not turn that answer into a failure."""
    if not channels:
        return []
    # One round trip, and no MULTI: nothing here needs to be atomic.
    pipe = store.sync_redis().pipeline(transaction=False)
    for channel in channels:
        pipe.exists(store.key(channel.pk, "lock"))
    try:
        return [bool(found) for found in pipe.execute()]
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        log.warning("generating flags unknown, shown as false: %s", exc)
        return [False] * len(channels)


def instructions_for(user: Any) -> QuerySet[Instruction]:
    """The instructions the user may see and apply: the shared ones and their own."""
    scope = Q(owner__isnull=True)
    if user and user.is_authenticated:
        scope |= Q(owner=user)
    return Instruction.objects.filter(scope).order_by("name", "id")


def instruction_for(user: Any, instruction_id: Any) -> Instruction | None:
    """One of :func:`instructions_for`; None (a 404) for anyone else's."""
    if not isinstance(instruction_id, int):
        return None
    return instructions_for(user).filter(pk=instruction_id).first()


def instruction_to_dict(instruction: Instruction, user: Any) -> dict[str, Any]:
    return {
        "id": instruction.pk,
        "name": instruction.name,
        "text": instruction.text,
        "shared": instruction.owner_id is None,
        "mine": instruction.owner_id is not None and instruction.owner_id == user.pk,
    }


def preferences(user: Any) -> dict[str, Any]:
    """The user's defaults (empty ones when they set none)."""
    found = UserPreference.objects.filter(user=user).first()
    if found is None:
        return {
            "provider": "",
            "model": "",
            "instruction": None,
            "memory_enabled": True,
            "memory_in_shared_rooms": False,
        }
    return {
        "provider": found.provider,
        "model": found.model,
        "instruction": found.instruction_id,
        "memory_enabled": found.memory_enabled,
        "memory_in_shared_rooms": found.memory_in_shared_rooms,
    }


def account_state(user: Any) -> dict[str, Any]:
    """Who the user is, what they used today, the limits that apply, their defaults."""
    return {
        "username": user.get_username(),
        "is_staff": user.is_staff,
        "is_moderator": permissions.is_moderator(user),
        "usage": limits.usage_today(user),
        "limits": {
            "max_message_chars": settings.MAX_MESSAGE_CHARS,
            "messages_per_minute": settings.MESSAGES_PER_MINUTE,
            "daily_messages": settings.DAILY_MESSAGES,
            "daily_tokens": settings.DAILY_TOKENS,
        },
        "preferences": preferences(user),
    }

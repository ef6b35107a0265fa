"""Memory (issue 17): facts about a user that their replies remember, written by the
user (account page, API), by the ``memory`` tool (chat/agents/memory_tool.py) or
extracted after a session (chat/agents/memory_extraction.py).

Who may see them: only their user. A reply uses them (``memory_scope``) when the
user has memory on (UserPreference.memory_enabled, default on) and the reply is read
by that user alone (a personal room: private, theirs, no other member), or the room's
owner turned memory on (Channel.memory) and the user consented to memory in shared
rooms (UserPreference.memory_in_shared_rooms, default off). An expired memory
(``expires_at`` passed) is gone everywhere: lists, prompts, the tool, the cap.

Memories belong to no room: their changes publish no event, and a user's own changes
are not moderation (no audit record; an admin's deletion at the desk is audited)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from chat.errors import ServiceError
from chat.models import Channel, Membership, Memory, Turn, UserPreference, iso

TEXT_MAX = 1000  # Memory.text's column


def max_per_user() -> int:
    return int(settings.MEMORY_MAX_PER_USER)


def block_chars() -> int:
    """What the system prompt holds of a user's memories, at most (the newest are kept)."""
    return int(settings.MEMORY_PROMPT_CHARS)


# --- selectors ------------------------------------------------------------------------------


def active(now: datetime | None = None) -> QuerySet[Memory]:
    """Every memory not expired."""
    moment = now or timezone.now()
    return Memory.objects.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=moment))


def memories_of(user_id: int) -> QuerySet[Memory]:
    """The user's memories, oldest first."""
    return active().filter(user_id=user_id).order_by("created_at", "id")


def memory_for(user: Any, memory_id: Any) -> Memory | None:
    """One of the user's own memories; None (a 404) for anyone else's, an expired or a
    missing one, or an id that is no UUID."""
    try:
        parsed = uuid.UUID(str(memory_id))
    except ValueError:
        return None
    if not (user and user.is_authenticated):
        return None
    return memories_of(user.pk).filter(pk=parsed).first()


def memory_to_dict(memory: Memory) -> dict[str, Any]:
    return {
        "id": str(memory.pk),
        "text": memory.text,
        "origin": memory.origin,
        "source_turn": memory.source_turn_id,
        "created_at": iso(memory.created_at),
        "updated_at": iso(memory.updated_at),
        "expires_at": iso(memory.expires_at),
    }


def memory_settings(user_id: int) -> tuple[bool, bool]:
    """(memory_enabled, memory_in_shared_rooms) of the user: (True, False) when they
    never saved a preference."""
    found = (
        UserPreference.objects.filter(user_id=user_id)
        .values_list("memory_enabled", "memory_in_shared_rooms")
        .first()
    )
    return (bool(found[0]), bool(found[1])) if found else (True, False)


def is_personal(channel: Channel, user_id: int) -> bool:
    """A room only ``user_id`` reads: private, theirs, with no other member. (Admins
    and moderators may open any room; they are not its readers.)"""
    if channel.visibility != Channel.Visibility.PRIVATE or channel.owner_id != user_id:
        return False
    return not Membership.objects.filter(channel=channel).exclude(user_id=user_id).exists()


def memory_scope(channel: Channel, author_id: int | None) -> tuple[int, ...]:
    """Whose memories a reply to ``author_id``'s message may read and write: the
    author's alone, when memory is on for them and either the room is personal, or
    the owner turned memory on and the author consented to it in shared rooms. Never
    anyone else's: one person's memories do not reach a reply others read without
    that person's consent."""
    if author_id is None:
        return ()
    enabled, in_shared_rooms = memory_settings(author_id)
    if not enabled:
        return ()
    if is_personal(channel, author_id) or (channel.memory and in_shared_rooms):
        return (author_id,)
    return ()


def memory_block(user_ids: Iterable[int]) -> str:
    """The memories for the system prompt: for each user, "What you remember about
    <username>:" and a line per fact, oldest first; at most ``block_chars()`` in all,
    the newest facts kept when they do not all fit. "" when there are none."""
    budget = block_chars()
    wanted = list(user_ids)
    usernames = dict(get_user_model().objects.filter(pk__in=wanted).values_list("pk", "username"))
    parts: list[str] = []
    for user_id in wanted:
        if user_id not in usernames:
            continue
        header = f"What you remember about {usernames[user_id]}:"
        budget -= len(header) + (2 if parts else 0)
        kept: list[str] = []
        for text in memories_of(user_id).order_by("-created_at", "-id").values_list("text", flat=True):
            line = f"- {text}"
            if len(line) + 1 > budget:
                break
            kept.append(line)
            budget -= len(line) + 1
        if not kept:
            budget += len(header) + (2 if parts else 0)
            continue
        parts.append("\n".join([header, *reversed(kept)]))
    return "\n\n".join(parts)


# --- services -------------------------------------------------------------------------------


def _require_user(user: Any) -> None:
    if not (user and user.is_authenticated):
        raise ServiceError("auth_required", "Log in to keep memories.")
    if not user.is_active:
        raise ServiceError("forbidden", "Your account cannot keep memories.")


def check_text(text: Any) -> str:
    """The text as kept: trimmed, 1 to TEXT_MAX characters."""
    if not isinstance(text, str):
        raise ServiceError("invalid", "text must be a string.", fields={"text": ["Expected a string."]})
    trimmed = text.strip()
    if not trimmed:
        raise ServiceError(
            "invalid", "text must not be blank.", fields={"text": ["This field may not be blank."]}
        )
    if len(trimmed) > TEXT_MAX:
        raise ServiceError(
            "invalid",
            f"A memory holds at most {TEXT_MAX} characters.",
            fields={"text": [f"At most {TEXT_MAX} characters."]},
        )
    return trimmed


def check_expiry(expires_at: datetime | None) -> datetime | None:
    """A moment in the future, or None (never expires)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ServiceError(
            "invalid", "expires_at must be in the future.", fields={"expires_at": ["Must be in the future."]}
        )
    return expires_at


def _make_room(user: Any) -> None:
    """Inside the transaction that adds one: lock the user's row (two adds at once
    cannot both pass the cap), drop their expired memories, refuse past the cap."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    Memory.objects.filter(user=user, expires_at__lte=timezone.now()).delete()
    limit = max_per_user()
    if Memory.objects.filter(user=user).count() >= limit:
        raise ServiceError(
            "invalid",
            f"You may keep at most {limit} memories; delete some first.",
            fields={"text": ["Too many memories."]},
        )


def _turn_or_none(turn_id: int | None) -> int | None:
    # The turn may have been deleted while its reply ran: the memory stays, unlinked.
    if turn_id is None or not Turn.objects.filter(pk=turn_id).exists():
        return None
    return turn_id


def create_memory(
    *,
    user: Any,
    text: Any,
    expires_at: datetime | None = None,
    origin: str = "user",
    source_turn_id: int | None = None,
) -> Memory:
    """A new memory of the user's own."""
    _require_user(user)
    kept = check_text(text)
    check_expiry(expires_at)
    with transaction.atomic():
        _make_room(user)
        return Memory.objects.create(
            user=user,
            text=kept,
            expires_at=expires_at,
            origin=origin,
            source_turn_id=_turn_or_none(source_turn_id),
        )


def remember(*, user: Any, text: Any, origin: str, source_turn_id: int | None = None) -> tuple[Memory, bool]:
    """Keep a fact unless the user has it already (the same text, any case): the tool
    and extraction use this. Returns (the memory, whether it is new)."""
    _require_user(user)
    kept = check_text(text)
    with transaction.atomic():
        _make_room(user)
        same = memories_of(user.pk).filter(text__iexact=kept).first()
        if same is not None:
            return same, False
        created = Memory.objects.create(
            user=user, text=kept, origin=origin, source_turn_id=_turn_or_none(source_turn_id)
        )
        return created, True


def _check_own(user: Any, memory: Memory) -> None:
    _require_user(user)
    if memory.user_id != user.pk:
        raise ServiceError("not_found", "No such memory.")


def update_memory(*, user: Any, memory: Memory, changes: dict[str, Any]) -> Memory:
    """Rewrite one of the user's memories: ``text``, ``expires_at`` (null: never)."""
    _check_own(user, memory)
    fields = ["updated_at"]
    if "text" in changes:
        memory.text = check_text(changes["text"])
        fields.append("text")
    if "expires_at" in changes:
        memory.expires_at = check_expiry(changes["expires_at"])
        fields.append("expires_at")
    memory.save(update_fields=fields)
    return memory


def delete_memory(*, user: Any, memory: Memory) -> None:
    """Forget one of the user's memories."""
    _check_own(user, memory)
    memory.delete()

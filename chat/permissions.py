"""Who may see, watch, write in and moderate a channel. Used by every transport."""

from __future__ import annotations

import hmac
from typing import Any

from chat.models import Channel, Membership

MODERATORS_GROUP = "moderators"
# What the moderation desk needs: to see channels, sessions, turns, memberships, users
# and the audit log; to hide, delete and purge turns; to lock channels, mute and ban; to
# see knowledge bases and delete rooms' bases and documents. Not to delete channels, nor
# to change users. (Migrations 0004 and 0011 grant the same.)
MODERATOR_PERMISSIONS = [
    ("chat", "view_channel"),
    ("chat", "moderate_channel"),
    ("chat", "view_session"),
    ("chat", "view_turn"),
    ("chat", "change_turn"),
    ("chat", "delete_turn"),
    ("chat", "view_membership"),
    ("chat", "add_membership"),
    ("chat", "change_membership"),
    ("chat", "delete_membership"),
    ("chat", "view_moderationaction"),
    ("chat", "ban_user"),
    ("auth", "view_user"),
    # Knowledge bases: read at the desk; deleted through the services (which allow a
    # moderator a room's base, and only admins a person's).
    ("chat", "view_knowledgebase"),
    ("chat", "delete_knowledgebase"),
    ("chat", "view_knowledgedocument"),
    ("chat", "delete_knowledgedocument"),
    ("chat", "view_knowledgechunk"),
]


def ensure_moderators_group() -> None:
    """The moderators group with its permissions (again, if someone changed it)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name=MODERATORS_GROUP)
    for app_label, codename in MODERATOR_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def is_admin(user: Any) -> bool:
    """Staff acting with their admin powers: not through an API token without
    admin:moderate (chat/scopes.py), which acts as the plain user."""
    return bool(
        user
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and not getattr(user, "_colloquy_without_moderation", False)
    )


def is_moderator(user: Any) -> bool:
    """Staff, or a member of the moderators group."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    if getattr(user, "_colloquy_without_moderation", False):
        # Acting through an API token without admin:moderate (chat/scopes.py).
        return False
    if user.is_staff:
        return True
    cached = getattr(user, "_colloquy_is_moderator", None)
    if cached is None:
        cached = user.groups.filter(name=MODERATORS_GROUP).exists()
        user._colloquy_is_moderator = cached
    return bool(cached)


def membership(user: Any, channel: Channel) -> Membership | None:
    if not (user and user.is_authenticated):
        return None
    return Membership.objects.filter(user=user, channel=channel).first()


def is_member(user: Any, channel: Channel) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    return channel.owner_id == user.pk or membership(user, channel) is not None


def watch_key_matches(channel: Channel, key: str | None) -> bool:
    return bool(key) and hmac.compare_digest(channel.watch_key.encode(), str(key).encode())


def can_view(user: Any, channel: Channel) -> bool:
    """May see the channel in lists and read its transcript (without a watch key)."""
    return channel.is_public or is_member(user, channel) or is_moderator(user)


def can_watch(user: Any, channel: Channel, key: str | None = None) -> bool:
    return can_view(user, channel) or watch_key_matches(channel, key)


def can_post(user: Any, channel: Channel) -> bool:
    """May write in the channel at all (locks and mutes are checked by the services)."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return can_view(user, channel)


def can_configure(user: Any, channel: Channel) -> bool:
    """May change framing, params and settings: the owner or a moderator."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    return channel.owner_id == user.pk or is_moderator(user)


def is_muted(user: Any, channel: Channel) -> bool:
    found = membership(user, channel)
    return bool(found and found.muted)


def still_allowed(channel_id: int, connections: list[tuple[int | None, str | None, bool]]) -> list[bool]:
    """For open connections of a channel, given as (user id, watch key, is watcher):
    whether each may still be open. Watchers need to see the channel (or the current
    key); chat connections need to be allowed to write in it."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import AnonymousUser

    channel = Channel.objects.filter(pk=channel_id).first()
    if channel is None:
        return [False] * len(connections)
    ids = {user_id for user_id, _, _ in connections if user_id is not None}
    users = {user.pk: user for user in get_user_model().objects.filter(pk__in=ids)}
    answers = []
    for user_id, key, is_watcher in connections:
        user = users.get(user_id) if user_id is not None else AnonymousUser()
        if user is None:  # deleted
            answers.append(False)
        elif is_watcher:
            answers.append(can_watch(user, channel, key) and (user_id is None or user.is_active))
        else:
            answers.append(can_post(user, channel))
    return answers

"""Moderation verbs. Each writes an audit record and has its live effect everywhere."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session as LoginSession
from django.db import transaction

from chat import background, events
from chat.models import ApiToken, ModerationAction


def ban_user(*, actor: Any, user: Any, reason: str = "") -> None:
    """Deactivate a user: their API token and logins stop working at once and every
    socket they have open, in every process, closes with 4003."""
    with transaction.atomic():
        get_user_model().objects.filter(pk=user.pk).update(is_active=False)
        ApiToken.objects.filter(user=user).delete()
        _end_logins(user.pk)
        ModerationAction.objects.create(
            actor=actor, action="ban_user", target_type="user", target_id=str(user.pk), reason=reason
        )
        transaction.on_commit(lambda: background.run(events.aclose_user_sockets(user.pk, 4003)))


def _end_logins(user_id: int) -> None:
    # Sessions store the user id in their encoded data; there is no index to query by.
    for login in LoginSession.objects.all().iterator():
        if str(login.get_decoded().get("_auth_user_id")) == str(user_id):
            login.delete()

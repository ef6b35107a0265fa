"""Logins that every transport shares: the API token of `Authorization: Bearer` (REST
and the WebSocket handshake), and whether the login a live connection (WebSocket or SSE
stream) was opened with still holds; both ask every LOGIN_RECHECK_SECONDS and end the
connection when not."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from chat.models import ApiToken, hash_token


def login_still_valid(user_id: int, *, token_hash: str | None, session_key: str | None) -> bool:
    """False after logout, session expiry, a password change, a rotated, revoked or
    expired API token, or deactivation."""
    if token_hash:
        return (
            ApiToken.objects.filter(user_id=user_id, user__is_active=True, key_hash=token_hash)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
            .exists()
        )
    if not session_key:
        return False
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    data = engine.SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id):
        return False
    return constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


# How often a token's last use is written down. Writing it on every request made each
# read a write transaction (on SQLite, a turn at the database's one write lock); the
# admin shows it to the minute.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_for(raw: str) -> ApiToken | None:
    """The API token, with its active user, or None when unknown, revoked, expired or
    its user deactivated (all the same 401): one query, and a write at most once a
    LAST_USED_RESOLUTION."""
    try:
        token = ApiToken.objects.select_related("user").get(key_hash=hash_token(raw))
    except ApiToken.DoesNotExist:
        return None
    now = timezone.now()
    if not token.user.is_active or token.expired(now):
        return None
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def user_for_token(raw: str) -> Any | None:
    """The active user holding this (unexpired) API token, or None."""
    token = token_for(raw)
    return token.user if token is not None else None


def bearer_from_header(value: str) -> str | None:
    scheme, _, raw = value.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    return raw.strip()

"""Logins that every transport shares: the API token of `Authorization: Bearer` (REST
and the WebSocket handshake), and whether the login a live connection (WebSocket or SSE
stream) was opened with still holds; both ask every LOGIN_RECHECK_SECONDS and end the
connection when not."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from chat.models import ApiToken, hash_token


def login_still_valid(user_id: int, *, token_hash: str | None, session_key: str | None) -> bool:
    """False after logout, session expiry, a password change, a rotated or deleted API
    token, or deactivation."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    if token_hash:
        return ApiToken.objects.filter(user=user, key_hash=token_hash).exists()
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    data = engine.SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id):
        return False
    return constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


def user_for_token(raw: str) -> Any | None:
    """The active user holding this API token, or None."""
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def bearer_from_header(value: str) -> str | None:
    scheme, _, raw = value.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        return None
    return raw.strip()

"""Handshake authentication: the session cookie (browsers) or `Authorization: Bearer`
(programs), and the checks that end a socket when its login ends."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils.crypto import constant_time_compare

from chat.api.authentication import bearer_from_header, user_for_token
from chat.models import ApiToken, hash_token
from chat.threads import db_call


class BearerTokenMiddleware(BaseMiddleware):
    """Replaces the cookie user with the token's user when the handshake carries one."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        if header:
            raw = bearer_from_header(header)
            user = await db_call(user_for_token)(raw) if raw else None
            scope = {
                **scope,
                "user": user or AnonymousUser(),
                "auth_token_hash": hash_token(raw) if raw else None,
            }
        return await super().__call__(scope, receive, send)


def SessionOrTokenAuthMiddleware(inner: Any) -> Any:  # noqa: N802 (a middleware factory)
    return AuthMiddlewareStack(BearerTokenMiddleware(inner))


def login_still_valid(scope: dict[str, Any], user_id: int) -> bool:
    """Is the login this socket was opened with still good? False after logout, session
    expiry, a password change, a revoked token, or deactivation."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return False
    token_hash = scope.get("auth_token_hash")
    if token_hash:
        return ApiToken.objects.filter(user=user, key_hash=token_hash).exists()
    session = scope.get("session")
    session_key = getattr(session, "session_key", None)
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    data = engine.SessionStore(session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id):
        return False
    return constant_time_compare(data.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())


class RawSendMiddleware:
    """Keeps the server's own ``send`` in the scope. The session and cookie middlewares
    wrap ``send`` to set cookies on HTTP responses, which a WebSocket frame never needs;
    the hot path (one frame per event per watcher) skips those wrappers."""

    def __init__(self, inner: Any):
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await self.inner({**scope, "raw_send": send}, receive, send)

"""Handshake authentication: the session cookie (browsers) or `Authorization: Bearer`
(programs), and the checks that end a socket when its login ends."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from chat import logins
from chat.logins import bearer_from_header, user_for_token
from chat.models import hash_token
from chat.realtime.async_db import db_call


class BearerTokenMiddleware(BaseMiddleware):  # type: ignore[misc]  # an untyped base class (no stubs)
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
    """Is the login this socket was opened with still good? (chat.logins decides.)"""
    session = scope.get("session")
    return logins.login_still_valid(
        user_id,
        token_hash=scope.get("auth_token_hash"),
        session_key=getattr(session, "session_key", None),
    )


class RawSendMiddleware:
    """Keeps the server's own ``send`` in the scope. The session and cookie middlewares
    wrap ``send`` to set cookies on HTTP responses, which a WebSocket frame never needs;
    the hot path (one frame per event per watcher) skips those wrappers."""

    def __init__(self, inner: Any):
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await self.inner({**scope, "raw_send": send}, receive, send)

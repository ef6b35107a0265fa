"""Handshake authentication: the session cookie (browsers) or `Authorization: Bearer`
(programs), and the checks that end a socket when its login ends."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddlewareStack
from channels.middleware import BaseMiddleware
from django.contrib.auth.models import AnonymousUser

from chat import logins
from chat.logins import bearer_from_header, token_for
from chat.models import hash_token
from chat.realtime.async_db import db_call
from chat.scopes import ALL_SCOPES, without_moderation


class BearerTokenMiddleware(BaseMiddleware):  # type: ignore[misc]  # an untyped base class (no stubs)
    """Replaces the cookie user with the token's user when the handshake carries one."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization", b"").decode("latin-1")
        if header:
            raw = bearer_from_header(header)
            token = await db_call(token_for)(raw) if raw else None
            scope = {
                **scope,
                "user": without_moderation(token.user, token.scopes) if token else AnonymousUser(),
                "auth_token_hash": hash_token(raw) if raw else None,
                # What the socket may do (chat/scopes.py); a refused token holds nothing
                # and the consumer closes with 4001, as REST answers 401.
                "auth_scopes": tuple(token.scopes) if token else (),
                "auth_failed": token is None,
            }
        return await super().__call__(scope, receive, send)


def held_scopes(scope: dict[str, Any]) -> frozenset[str]:
    """The socket's scopes: its token's, or every one for a session or no login."""
    held = scope.get("auth_scopes")
    return ALL_SCOPES if held is None else frozenset(held)


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

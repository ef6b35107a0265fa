"""The WebSocket handshake's Origin check, the same as REST's CSRF origin check.

Channels' AllowedHostsOriginValidator compares only the Origin's host name with
ALLOWED_HOSTS, so a page on another port or scheme of an allowed host could open sockets
that its POSTs could not make. Here the handshake is judged by Django's own CSRF origin
rule for a request to the Host it was made to: the Origin must be that scheme, host and
port (https behind a TLS proxy that says so in SECURE_PROXY_SSL_HEADER) or one of
CSRF_TRUSTED_ORIGINS. A handshake without an Origin is refused, as before.
"""

from __future__ import annotations

import io
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.middleware.csrf import CsrfViewMiddleware

# The page that opens a socket has an http(s) origin; ws(s) is only the socket's scheme.
HTTP_SCHEME = {"ws": "http", "wss": "https"}


def origin_allowed(scope: dict[str, Any]) -> bool:
    request = ASGIRequest(
        {**scope, "method": "GET", "scheme": HTTP_SCHEME.get(scope.get("scheme", "ws"), "http")},
        io.BytesIO(),
    )
    if "HTTP_ORIGIN" not in request.META:
        return False
    # Django's own rule rather than a copy of it, so the two cannot drift apart
    # (tests/test_ws_origin.py compares them). A fresh middleware per handshake reads
    # CSRF_TRUSTED_ORIGINS as it is now.
    csrf = CsrfViewMiddleware(lambda request: HttpResponse())
    return bool(csrf._origin_verified(request))  # type: ignore[attr-defined]


class CsrfOriginValidator:
    """ASGI middleware for the websocket protocol: refuses the handshake (HTTP 403) when
    the Origin would fail Django's CSRF check."""

    def __init__(self, application: Any):
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if origin_allowed(scope):
            return await self.application(scope, receive, send)
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})  # a close before accept is a 403

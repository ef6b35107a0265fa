"""`Authorization: Bearer {token}` for the REST API."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from chat.logins import bearer_from_header, token_for
from chat.models import ApiToken
from chat.scopes import without_moderation


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """(user, token): ``request.auth`` is the ApiToken, whose scopes chat/api/scopes.py
    checks."""

    def authenticate(self, request: Any) -> tuple[Any, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        raw = bearer_from_header(header)
        if raw is None:
            return None
        token = token_for(raw)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API token.")
        return without_moderation(token.user, token.scopes), token

    def authenticate_header(self, request: Any) -> str:
        return "Bearer"


class BearerTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """Tells the OpenAPI document how API tokens are sent."""

    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}

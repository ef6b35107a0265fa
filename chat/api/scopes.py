"""Scopes on REST (issue 18): every view names the scope each method it serves needs, in
``required_scopes`` ({"GET": "chats:read", "POST": "chats:write"}; a tuple for several;
None where no scope is needed and the view's own checks decide). TokenScopes refuses a
token that lacks it with 403 `forbidden` naming the scope. A view, or a method, that
declares nothing is refused to everyone: a new endpoint cannot leak through a scoped
token for want of a declaration (tests/test_scopes_matrix.py walks the urlconf)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from chat import scopes
from chat.errors import ServiceError
from chat.models import ApiToken

Needed = str | tuple[str, ...] | None
# Methods DRF answers by itself: HEAD as GET; OPTIONS describes the view, reads nothing.
AS_METHOD = {"HEAD": "GET"}
UNSCOPED_METHODS = frozenset({"OPTIONS"})


class UndeclaredScopeError(Exception):
    """The view names no scope for the method."""


def held_scopes(request: Request) -> frozenset[str]:
    """What the caller may do: its token's scopes, or all of them for a browser session,
    HTTP basic and anonymous callers (who are held to the views' own checks)."""
    token = request.auth
    if isinstance(token, ApiToken):
        return frozenset(token.scopes)
    return scopes.ALL_SCOPES


def held_until(request: Request) -> datetime | None:
    """When the caller's login ends: its token's expiry; None for a token that never
    expires, a browser session, HTTP basic and anonymous callers."""
    token = request.auth
    return token.expires_at if isinstance(token, ApiToken) else None


def required(view: Any, method: str) -> Needed:
    """The scope(s) ``view`` declares for ``method``; UndeclaredScopeError when it declares none."""
    declared = getattr(view, "required_scopes", None)
    method = AS_METHOD.get(method.upper(), method.upper())
    if not isinstance(declared, dict) or method not in declared:
        raise UndeclaredScopeError(f"{type(view).__name__} declares no scope for {method}.")
    needed: Needed = declared[method]
    return needed


def require(request: Request, needed: Needed) -> None:
    """For a view whose answer depends on more than its method (a PATCH that deletes)."""
    scopes.check(held_scopes(request), needed)


class TokenScopes(BasePermission):
    """In DEFAULT_PERMISSION_CLASSES, and beside every view's own permission_classes."""

    def has_permission(self, request: Request, view: Any) -> bool:
        method = request.method.upper() if request.method else ""
        if method in UNSCOPED_METHODS or not hasattr(view, AS_METHOD.get(method, method).lower()):
            return True  # DRF answers OPTIONS, and 405 for a method the view lacks
        try:
            needed = required(view, method)
        except UndeclaredScopeError:
            raise ServiceError(
                "forbidden", f"{method} {request.path} names no scope, so it is closed to everyone."
            ) from None
        scopes.check(held_scopes(request), needed)
        return True

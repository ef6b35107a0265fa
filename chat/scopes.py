"""What a login may do (issue 18): the scopes it holds, and the refusal of one it lacks.
Shared by REST (chat/api/scopes.py) and the WebSocket (channels_app/consumers.py).

A scope only narrows: it never grants what the user may not do anyway. A browser session,
and a password exchanged for a token (HTTP basic on /api/me/token), hold every scope.
``admin:moderate`` is the moderator's own powers: a moderator's token without it acts as
the plain member (or owner) that person also is (see ``without_moderation``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from chat.errors import ServiceError
from chat.models import SCOPES

ALL_SCOPES = frozenset(SCOPES)
MODERATE = "admin:moderate"
# What each allows, in words (the account page's checkboxes; docs/protocol.md, "Scopes").
SCOPE_LABELS = {
    "chats:read": "read and watch: channels, sessions, turns, uploads, knowledge",
    "chats:write": "write: messages, regenerate, inject, reset, interrupt, channels, settings",
    "chats:delete": "delete: sessions, channels, truncating",
    "files:write": "files: upload, transcribe, knowledge bases and documents",
    "admin:moderate": "moderate: a moderator's own powers",
}


def missing(held: Iterable[str], needed: str | tuple[str, ...] | None) -> list[str]:
    """The scopes of ``needed`` that ``held`` lacks, in SCOPES order (None: none needed)."""
    if needed is None:
        return []
    wanted = {needed} if isinstance(needed, str) else set(needed)
    have = set(held)
    return [scope for scope in SCOPES if scope in wanted and scope not in have]


def scope_error(lacking: list[str]) -> ServiceError:
    """The 403 (REST) or WS `error` code `forbidden` that names what the token lacks."""
    if len(lacking) == 1:
        return ServiceError("forbidden", f"This token lacks the scope {lacking[0]}.")
    return ServiceError("forbidden", f"This token lacks the scopes {', '.join(lacking)}.")


def check(held: Iterable[str], needed: str | tuple[str, ...] | None) -> None:
    lacking = missing(held, needed)
    if lacking:
        raise scope_error(lacking)


def without_moderation(user: Any, held: Iterable[str]) -> Any:
    """``user``, marked to be no moderator while it acts through a login without
    admin:moderate (chat.permissions.is_moderator reads the mark); returned for chaining."""
    if user is not None and getattr(user, "is_authenticated", False) and MODERATE not in set(held):
        user._colloquy_without_moderation = True
    return user

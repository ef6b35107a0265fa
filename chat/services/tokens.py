"""API tokens (issue 18): making, revoking and rotating them — the one place that
checks the rules, for the API (chat/api/tokens.py) and the account page alike.

- A name of 1 to 100 characters, unique among the user's tokens (400 naming `name`).
- Scopes: a non-empty list of SCOPES without repeats; `admin:moderate` only for those who
  may moderate (staff, the moderators group).
- A caller that is itself a token may make only tokens whose scopes are among its own,
  and revoke only those (or itself): a leaked narrow token can neither mint nor take
  away a stronger one. Sessions and passwords hold every scope.
- An expiry, when given, in the future. None: the token lasts until revoked. A token
  asking that expires itself may make only tokens that expire no later (and not the
  never-expiring full-scope one): a short-lived token cannot outlive itself through
  the tokens it makes.
- A token made by a token is revoked with it (ApiToken.made_by), all the way down.
A revoked or expired token is refused at once on REST (401) and ends its open sockets
and streams within LOGIN_RECHECK_SECONDS (chat.logins.login_still_valid)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from chat import permissions
from chat.errors import ServiceError
from chat.models import SCOPES, ApiToken, hash_token
from chat.scopes import ALL_SCOPES, MODERATE, scope_error

log = logging.getLogger(__name__)

MAX_NAME = 100


def invalid(field: str, text: str) -> ServiceError:
    return ServiceError("invalid", text, fields={field: [text]})


def check_scopes(user: Any, scopes: Any, held: Iterable[str]) -> list[str]:
    """The requested scopes, in SCOPES order, or a 400 naming `scopes`."""
    if not isinstance(scopes, list) or not scopes:
        raise invalid("scopes", "Give a non-empty list of scopes.")
    if not all(isinstance(s, str) for s in scopes):
        raise invalid("scopes", "Each scope is a string.")
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise invalid("scopes", f"Unknown scope {unknown[0][:40]!r}; known: {', '.join(SCOPES)}.")
    if len(set(scopes)) != len(scopes):
        raise invalid("scopes", "A scope is listed twice.")
    if MODERATE in scopes and not permissions.is_moderator(user):
        raise invalid("scopes", f"Only moderators may hold {MODERATE}.")
    stronger = [s for s in SCOPES if s in scopes and s not in set(held)]
    if stronger:
        raise ServiceError(
            "forbidden",
            f"This token lacks the scope{'s' if len(stronger) > 1 else ''} {', '.join(stronger)}: "
            "a token may only make tokens with scopes it has.",
        )
    return [s for s in SCOPES if s in scopes]


def check_name(user: Any, name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise invalid("name", "Give the token a name.")
    trimmed = str(name).strip()
    if len(trimmed) > MAX_NAME:
        raise invalid("name", f"At most {MAX_NAME} characters.")
    if "\x00" in trimmed:
        raise invalid("name", "No NUL characters.")
    if ApiToken.objects.filter(user=user, name=trimmed).exists():
        raise invalid("name", "You already have a token of that name.")
    return trimmed


def check_expiry(expires_at: datetime | None, until: datetime | None = None) -> datetime | None:
    """``until``: the expiry of the token asking, which the new one may not outlive."""
    if expires_at is not None and timezone.is_naive(expires_at):
        expires_at = timezone.make_aware(expires_at, timezone.get_current_timezone())
    if until is not None and (expires_at is None or expires_at > until):
        raise invalid("expires_at", f"This token expires at {until.isoformat()}: give a time no later.")
    if expires_at is not None and expires_at <= timezone.now():
        raise invalid("expires_at", "Expected a time in the future.")
    return expires_at


def create_token(
    *,
    user: Any,
    name: Any,
    scopes: Any,
    expires_at: datetime | None = None,
    held: Iterable[str] = ALL_SCOPES,
    until: datetime | None = None,
    made_by: ApiToken | None = None,
) -> tuple[ApiToken, str]:
    """A new named token for ``user`` and its secret, shown once. ``held``: the scopes of
    the login asking (a token's own, or all); ``until``: its expiry (None: a session, a
    password, or a token that never expires); ``made_by``: the token asking, if one is."""
    if not (user and user.is_authenticated and user.is_active):
        raise ServiceError("auth_required", "Log in to make a token.")
    checked_scopes = check_scopes(user, scopes, held)
    checked_name = check_name(user, name)
    expiry = check_expiry(expires_at, until)
    raw = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            token = ApiToken.objects.create(
                user=user,
                name=checked_name,
                scopes=checked_scopes,
                key_hash=hash_token(raw),
                expires_at=expiry,
                made_by=made_by,
            )
    except IntegrityError:  # the same name, made at the same moment
        raise invalid("name", "You already have a token of that name.") from None
    log.info("user %s made the API token %r with %s", user.pk, checked_name, checked_scopes)
    return token, raw


def revoke_token(
    *, user: Any, token_id: Any, held: Iterable[str] = ALL_SCOPES, own: int | None = None
) -> None:
    """Delete one of ``user``'s tokens (404 for any other id). ``own``: the id of the
    token asking, which may always revoke itself."""
    digits = str(token_id) if isinstance(token_id, (int, str)) else ""
    token = None
    if digits.isascii() and digits.isdigit() and int(digits) < 2**63:
        token = ApiToken.objects.filter(user=user, pk=int(digits)).first()
    if token is None:
        raise ServiceError("not_found", "No such token.")
    stronger = [s for s in SCOPES if s in token.scopes and s not in set(held)]
    if stronger and token.pk != own:
        raise ServiceError(
            "forbidden",
            f"This token lacks the scope{'s' if len(stronger) > 1 else ''} {', '.join(stronger)}: "
            "a token may only revoke tokens with scopes it has.",
        )
    token.delete()  # and, by cascade, the tokens it made
    log.info("user %s revoked the API token %r", user.pk, token.name)


def rotate_full_token(
    *,
    user: Any,
    held: Iterable[str] = ALL_SCOPES,
    until: datetime | None = None,
    made_by: ApiToken | None = None,
) -> str:
    """Make or rotate the full-scope token of ``POST /api/me/token`` (ApiToken.LEGACY_NAME)
    and return it, once; the old one stops at once. ``held`` and ``until``: the scopes
    and expiry of the login asking; that token never expires, so an expiring one may not."""
    lacking = [s for s in SCOPES if s not in set(held)]
    if lacking:
        raise scope_error(lacking)
    if until is not None:
        raise ServiceError(
            "forbidden", "This token expires: it may not make the full-scope token, which never does."
        )
    with transaction.atomic():
        if made_by is None:
            # From a browser session or with the password (the usual answer to a leak):
            # the old secret is taken for lost, and what it made goes with it. Not when a
            # token rotates it: that token may be one of them.
            ApiToken.objects.filter(user=user, made_by__name=ApiToken.LEGACY_NAME).delete()
        return ApiToken.issue(user, made_by=made_by)

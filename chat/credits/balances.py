"""Balances and grants. Every change of a balance is a conditional UPDATE (never a
read-modify-write) plus the ledger row that explains it, in one transaction: parallel
requests cannot both spend the same credits, and the ledger always adds up
(sum(grant) - sum(debit) + sum(refund) == available + held)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F

from chat.credits.prices import credits_setting, to_units
from chat.errors import ServiceError
from chat.models import Balance, LedgerEntry
from chat.services import audit

INITIAL_NOTE = "initial credits (CREDITS_INITIAL)"
# Who may grant and revoke credits: superusers, and whoever holds the permission to add
# ledger entries (the desk adds none by hand: it is the right to move credits), so no
# permission of our own is needed. Moderators may not.
GRANT_PERMISSION = "chat.add_ledgerentry"


def can_grant(user: Any) -> bool:
    return bool(user.is_active and user.has_perm(GRANT_PERMISSION))


def ensure_balance(user: Any) -> Balance:
    """The user's balance, made with CREDITS_INITIAL credits (and its ``grant`` entry) if
    the user has none yet: new users get it when they are created (chat.credits.signals),
    users older than the feature on first use."""
    balance = Balance.objects.filter(user_id=user.pk).first()
    if balance is not None:
        return balance
    initial = to_units(credits_setting("CREDITS_INITIAL"))
    try:
        with transaction.atomic():
            balance = Balance.objects.create(user_id=user.pk, available=initial)
            LedgerEntry.objects.create(
                user_id=user.pk, kind=LedgerEntry.Kind.GRANT, amount=initial, note=INITIAL_NOTE
            )
    except IntegrityError:  # made meanwhile by a parallel request
        balance = Balance.objects.get(user_id=user.pk)
    return balance


def grant(*, user: Any, credits: Decimal, actor: Any, reason: str = "") -> LedgerEntry:
    """Add credits to the user's balance (a negative amount revokes them, never below
    zero available), audited as a moderation action. ``actor`` None is the system itself
    (a script, the shell); a person must be allowed to (can_grant)."""
    if actor is not None and not can_grant(actor):
        raise ServiceError("forbidden", "You may not grant or revoke credits.")
    units = to_units(credits)
    if units == 0:
        raise ServiceError("invalid", "credits must not be zero.", fields={"credits": ["Must not be zero."]})
    ensure_balance(user)
    with transaction.atomic():
        changed = Balance.objects.filter(user_id=user.pk, available__gte=max(-units, 0)).update(
            available=F("available") + units
        )
        if not changed:
            raise ServiceError(
                "invalid",
                "Cannot revoke more credits than are available.",
                fields={"credits": ["More than the user's available credits."]},
            )
        entry = LedgerEntry.objects.create(
            user_id=user.pk,
            kind=LedgerEntry.Kind.GRANT,
            amount=units,
            actor=actor if actor is not None and actor.is_authenticated else None,
            note=(reason or ("revoke" if units < 0 else "grant"))[:200],
        )
        audit.record(
            actor=actor,
            action="grant_credits" if units > 0 else "revoke_credits",
            target=user,
            channel=None,
            reason=reason,
            credits=str(credits),
        )
    return entry


def user_created(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """post_save of the user model: a new user's balance, when credits are on."""
    if created and not raw and settings.CREDITS_ENABLED:
        ensure_balance(instance)

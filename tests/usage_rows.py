"""Ledger rows for the usage tests. Debits and refunds belong to the holds service; these
tests make them as that service leaves them (the row, and the balance moved by as much in
the same transaction), so the ledger still adds up: sum(grant) - sum(debit) + sum(refund)
== available + held."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F, Sum

from chat.credits.prices import to_units
from chat.models import Balance, LedgerEntry


def spend(
    user: Any,
    credits: str,
    when: datetime.datetime,
    *,
    provider: str = "openai",
    model: str = "gpt-test",
    input_tokens: int = 0,
    output_tokens: int = 0,
    kind: str = LedgerEntry.Kind.DEBIT,
) -> LedgerEntry:
    """A debit (or a refund) of ``credits`` made at ``when``."""
    units = to_units(Decimal(credits))
    sign = -1 if kind == LedgerEntry.Kind.DEBIT else 1
    with transaction.atomic():
        entry = LedgerEntry.objects.create(
            user=user,
            kind=kind,
            amount=units,
            provider=provider,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        LedgerEntry.objects.filter(pk=entry.pk).update(created_at=when)  # auto_now_add
        assert Balance.objects.filter(user_id=user.pk).update(available=F("available") + sign * units) == 1
    return entry


def ledger_adds_up(user: Any) -> bool:
    def total(kind: str) -> int:
        return int(LedgerEntry.objects.filter(user=user, kind=kind).aggregate(s=Sum("amount"))["s"] or 0)

    balance = Balance.objects.get(user_id=user.pk)
    kinds = LedgerEntry.Kind
    return total(kinds.GRANT) - total(kinds.DEBIT) + total(kinds.REFUND) == balance.available + balance.held


def utc(day: datetime.date, hour: int = 12, minute: int = 0, second: int = 0) -> datetime.datetime:
    return datetime.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=datetime.UTC)

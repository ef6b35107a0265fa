"""What a user's credits look like from outside: the balance and the usage per day and
model (GET /api/me/usage, the account page, docs/credits.md "Usage")."""

from __future__ import annotations

import datetime
from typing import Any, TypedDict

from django.conf import settings
from django.db.models import BigIntegerField, Case, F, Q, Sum, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from chat.credits.balances import ensure_balance
from chat.credits.prices import to_credits
from chat.models import Balance, LedgerEntry

USAGE_DAYS_DEFAULT, USAGE_DAYS_MAX = 30, 366


class UsageDay(TypedDict):
    date: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    credits: str


def credits_text(units: int) -> str:
    """Micro-credits as the API writes credits: a decimal string with six decimals."""
    return format(to_credits(units), "f")


def balance_of(user: Any) -> dict[str, str] | None:
    """{"available", "held"} in credits. With credits on, a user without a balance yet is
    given theirs now (CREDITS_INITIAL, as on their first message: the page shows what they
    will have); with credits off, None unless they had one from before."""
    if settings.CREDITS_ENABLED:
        balance: Balance | None = ensure_balance(user)
    else:
        balance = Balance.objects.filter(user_id=user.pk).first()
    if balance is None:
        return None
    return {"available": credits_text(balance.available), "held": credits_text(balance.held)}


def usage_start(days: int, now: datetime.datetime | None = None) -> datetime.datetime:
    """The first moment counted: midnight UTC ``days - 1`` days before today (UTC), so
    ``days`` calendar days including today."""
    today = (now or timezone.now()).astimezone(datetime.UTC).date()
    first = today - datetime.timedelta(days=days - 1)
    return datetime.datetime.combine(first, datetime.time.min, tzinfo=datetime.UTC)


def usage_by_day(user: Any, days: int) -> list[UsageDay]:
    """The user's tokens and credits per UTC day and model over the last ``days`` days:
    debits minus refunds (a refund takes back what its debit counted), oldest day first.
    One query, grouped in the database (TruncDate in UTC, the same on SQLite and
    PostgreSQL whatever the connection's time zone)."""
    spent = Q(kind=LedgerEntry.Kind.DEBIT)
    sign = Case(When(spent, then=Value(1)), default=Value(-1), output_field=BigIntegerField())
    rows = (
        LedgerEntry.objects.filter(
            user_id=user.pk,
            kind__in=[LedgerEntry.Kind.DEBIT, LedgerEntry.Kind.REFUND],
            created_at__gte=usage_start(days),
        )
        .annotate(day=TruncDate("created_at", tzinfo=datetime.UTC))
        .values("day", "provider", "model")
        .annotate(
            units=Sum(F("amount") * sign, output_field=BigIntegerField()),
            input=Sum(F("input_tokens") * sign, output_field=BigIntegerField()),
            output=Sum(F("output_tokens") * sign, output_field=BigIntegerField()),
        )
        .order_by("day", "provider", "model")
    )
    return [
        UsageDay(
            date=row["day"].isoformat(),
            provider=row["provider"],
            model=row["model"],
            input_tokens=int(row["input"] or 0),
            output_tokens=int(row["output"] or 0),
            credits=credits_text(int(row["units"] or 0)),
        )
        for row in rows
    ]


def usage_state(user: Any, days: int) -> dict[str, Any]:
    """The answer of GET /api/me/usage."""
    return {
        "enabled": bool(settings.CREDITS_ENABLED),
        "balance": balance_of(user),
        "days": usage_by_day(user, days),
    }

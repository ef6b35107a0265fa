"""What a model's tokens cost: its price in the admin, else CREDITS_DEFAULT_PRICE; and the
one rounding rule (micro-credits, rounded up) every hold and debit uses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from chat.models import CREDIT_UNITS, ModelPrice


@dataclass(frozen=True)
class Price:
    """Credits per 1,000 tokens."""

    input_per_1k: Decimal
    output_per_1k: Decimal


# A setting's largest value: what a grant may be (15 digits, 6 of them decimals), so that
# an amount made from it ("1e30" is a finite Decimal) still fits the BigInteger columns.
SETTING_MAX = Decimal("999999999.999999")


def credits_setting(name: str) -> Decimal:
    """A credits amount from the settings, checked: a number from 0 to SETTING_MAX with at
    most six decimals (a micro-credit), else ImproperlyConfigured naming the setting."""
    raw = getattr(settings, name)
    try:
        value = Decimal(str(raw))
    except InvalidOperation as exc:
        raise ImproperlyConfigured(f"{name} must be a number of credits, not {raw!r}") from exc
    if not value.is_finite() or value < 0:
        raise ImproperlyConfigured(f"{name} must be 0 or more, not {raw!r}")
    if value > SETTING_MAX or value != value.quantize(Decimal("0.000001"), rounding=ROUND_DOWN):
        raise ImproperlyConfigured(f"{name} must be at most {SETTING_MAX} with 6 decimals, not {raw!r}")
    return value


def default_price() -> Price:
    value = credits_setting("CREDITS_DEFAULT_PRICE")
    return Price(value, value)


def price_for(provider: str, model: str) -> Price:
    """The price of ``model`` at the provider named ``provider``: its own row, else the
    provider's row for every model (``model`` empty), else the default."""
    rows = {
        row.model: row
        for row in ModelPrice.objects.filter(provider__name=provider, model__in=[model, ""]).only(
            "model", "input_per_1k", "output_per_1k"
        )
    }
    row = rows.get(model) or rows.get("")
    if row is None:
        return default_price()
    return Price(row.input_per_1k, row.output_per_1k)


def cost(price: Price, input_tokens: int, output_tokens: int) -> int:
    """Micro-credits for these tokens at this price, rounded up."""
    exact = (price.input_per_1k * max(input_tokens, 0) + price.output_per_1k * max(output_tokens, 0)) * (
        Decimal(CREDIT_UNITS) / 1000
    )
    return math.ceil(exact)


def to_units(credits: Decimal) -> int:
    """Credits (a decimal) as micro-credits, rounded towards zero."""
    return int(credits * CREDIT_UNITS)


def to_credits(units: int) -> Decimal:
    """Micro-credits as credits, exactly (six decimals)."""
    return (Decimal(units) / CREDIT_UNITS).quantize(Decimal("0.000001"))

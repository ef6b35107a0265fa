"""Shared by the credits tests: the ledger's sums, checked against the balance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Sum

from chat.models import Balance, CreditHold, LedgerEntry, ModelPrice, Provider


def total(user: Any, kind: str) -> int:
    return int(LedgerEntry.objects.filter(user=user, kind=kind).aggregate(s=Sum("amount"))["s"] or 0)


def assert_ledger_balances(user: Any, *, settled: bool = True) -> Balance:
    """sum(grant) - sum(debit) + sum(refund) == available + held, to the micro-credit;
    with everything settled, nothing is held and no hold is open."""
    balance = Balance.objects.get(user=user)
    grants, debits, refunds = total(user, "grant"), total(user, "debit"), total(user, "refund")
    assert grants - debits + refunds == balance.available + balance.held, (
        grants,
        debits,
        refunds,
        balance.available,
        balance.held,
    )
    # Every hold's amount is either still held or was settled: its entries add up.
    holds_taken = total(user, "hold")
    assert holds_taken == total(user, "release") + debits_of_holds(user) + balance.held
    if settled:
        assert balance.held == 0
        assert not CreditHold.objects.filter(user=user, status="open").exists()
    return balance


def debits_of_holds(user: Any) -> int:
    """The part of the debits that came out of holds (a debit above its hold's amount
    came out of available credits)."""
    covered = 0
    for hold in CreditHold.objects.filter(user=user, status="settled"):
        debit = sum(e.amount for e in hold.entries.all() if e.kind == "debit")
        covered += min(debit, hold.amount)
    return covered


def set_price(provider: str, *, input_per_1k: str, output_per_1k: str, model: str = "") -> None:
    ModelPrice.objects.update_or_create(
        provider=Provider.objects.get(name=provider),
        model=model,
        defaults={"input_per_1k": Decimal(input_per_1k), "output_per_1k": Decimal(output_per_1k)},
    )


def set_available(user: Any, units: int) -> None:
    """The user's balance as a grant would leave it: ``units`` available, nothing held."""
    from chat.credits.balances import ensure_balance

    balance = ensure_balance(user)
    change = units - balance.available
    if change:
        Balance.objects.filter(user=user).update(available=units)
        LedgerEntry.objects.create(user=user, kind="grant", amount=change, note="test")

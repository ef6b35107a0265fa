"""GET /api/me/usage (issue 18): the caller's balance and their credits and tokens per UTC
day and model, from the ledger (debits minus refunds); only one's own; `days` checked."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from chat.credits import balances
from chat.models import Balance, LedgerEntry
from tests.conftest import client_for
from tests.usage_rows import ledger_adds_up, spend, utc

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def credits_on(settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "100"
    return settings


def usage(user, query: str = "") -> dict:
    response = client_for(user).get(f"/api/me/usage{query}")
    assert response.status_code == 200, response.content
    return response.json()


def test_anonymous_callers_are_refused(credits_on):
    for client in (APIClient(), APIClient(HTTP_AUTHORIZATION="Bearer not-a-token")):
        response = client.get("/api/me/usage")
        assert response.status_code == 401, response.content


@pytest.mark.parametrize("days", ["0", "367", "-1", "1.5", "abc", "", " 30", "30x", "１０"])
def test_days_out_of_range_or_not_a_whole_number_is_a_400_naming_it(credits_on, bob, days):
    response = client_for(bob).get("/api/me/usage", {"days": days})
    assert response.status_code == 400, (days, response.content)
    assert "days" in response.json()["fields"]


def test_an_unknown_parameter_is_a_400_naming_it(credits_on, bob):
    response = client_for(bob).get("/api/me/usage?day=3")
    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["day"]


def test_days_bounds_and_default(credits_on, bob):
    today = timezone.now().astimezone(datetime.UTC).date()
    balances.ensure_balance(bob)
    spend(bob, "1", utc(today - datetime.timedelta(days=29), 0, 0, 0))  # the 30th day back, its first second
    spend(bob, "2", utc(today - datetime.timedelta(days=30), 23, 59, 59))  # the 31st: out
    spend(bob, "4", utc(today - datetime.timedelta(days=365)))
    assert [d["credits"] for d in usage(bob)["days"]] == ["1.000000"]
    assert [d["credits"] for d in usage(bob, "?days=30")["days"]] == ["1.000000"]
    assert [d["credits"] for d in usage(bob, "?days=31")["days"]] == ["2.000000", "1.000000"]
    assert [d["credits"] for d in usage(bob, "?days=366")["days"]] == ["4.000000", "2.000000", "1.000000"]
    assert usage(bob, "?days=1")["days"] == []
    assert ledger_adds_up(bob)


def test_usage_is_summed_per_utc_day_and_model_debits_minus_refunds(credits_on, bob):
    today = timezone.now().astimezone(datetime.UTC).date()
    yesterday = today - datetime.timedelta(days=1)
    balances.grant(user=bob, credits=Decimal("12.5"), actor=None, reason="welcome")
    # Yesterday's last second and today's first are different days, in UTC.
    spend(bob, "0.5", utc(yesterday, 23, 59, 59), model="big", input_tokens=100, output_tokens=10)
    spend(bob, "0.25", utc(today, 0, 0, 0), model="big", input_tokens=50, output_tokens=5)
    spend(bob, "0.125", utc(today, 0, 30), model="big", input_tokens=20, output_tokens=2)
    spend(bob, "1", utc(today, 0, 40), model="big", input_tokens=7, output_tokens=1, kind="refund")
    spend(bob, "0.000001", utc(today, 0, 45), provider="anthropic", model="small", output_tokens=1)
    spend(bob, "3", utc(today, 0, 50), provider="openai", model="", input_tokens=1000)

    answer = usage(bob)
    assert answer["enabled"] is True
    assert answer["balance"] == {"available": "109.624999", "held": "0.000000"}
    assert answer["days"] == [
        {
            "date": yesterday.isoformat(),
            "provider": "openai",
            "model": "big",
            "input_tokens": 100,
            "output_tokens": 10,
            "credits": "0.500000",
        },
        {
            "date": today.isoformat(),
            "provider": "anthropic",
            "model": "small",
            "input_tokens": 0,
            "output_tokens": 1,
            "credits": "0.000001",
        },
        {
            "date": today.isoformat(),
            "provider": "openai",
            "model": "",
            "input_tokens": 1000,
            "output_tokens": 0,
            "credits": "3.000000",
        },
        {
            "date": today.isoformat(),
            "provider": "openai",
            "model": "big",
            "input_tokens": 63,
            "output_tokens": 6,
            "credits": "-0.625000",
        },
    ]
    assert ledger_adds_up(bob)


def test_grants_holds_and_releases_are_not_usage(credits_on, bob):
    balances.grant(user=bob, credits=Decimal("5"), actor=None, reason="")
    now = timezone.now()
    for kind in (LedgerEntry.Kind.HOLD, LedgerEntry.Kind.RELEASE):
        LedgerEntry.objects.create(user=bob, kind=kind, amount=1_000_000, model="big", created_at=now)
    assert usage(bob)["days"] == []


def test_only_the_callers_own_usage_and_balance(credits_on, alice, bob):
    today = timezone.now().astimezone(datetime.UTC).date()
    balances.grant(user=alice, credits=Decimal("50"), actor=None, reason="")
    spend(alice, "7", utc(today), model="secret-model")
    answer = usage(bob)
    assert answer["days"] == []
    assert answer["balance"] == {"available": "100.000000", "held": "0.000000"}
    assert [d["model"] for d in usage(alice)["days"]] == ["secret-model"]


def test_with_credits_off_the_balance_is_null_unless_the_user_had_one(settings, bob, carol):
    settings.CREDITS_ENABLED = False
    assert usage(carol) == {"enabled": False, "balance": None, "days": []}
    assert not Balance.objects.filter(user=carol).exists()  # reading makes none
    balances.grant(user=bob, credits=Decimal("2"), actor=None, reason="")  # from when credits were on
    answer = usage(bob)
    assert answer["enabled"] is False
    assert answer["balance"] == {"available": "102.000000", "held": "0.000000"}


def test_with_credits_on_a_user_older_than_the_feature_is_given_their_initial_credits(settings, bob):
    settings.CREDITS_ENABLED, settings.CREDITS_INITIAL = False, "100"
    assert not Balance.objects.filter(user=bob).exists()
    settings.CREDITS_ENABLED, settings.CREDITS_INITIAL = True, "7.25"
    assert usage(bob)["balance"] == {"available": "7.250000", "held": "0.000000"}
    assert ledger_adds_up(bob)


def test_a_few_queries_however_many_rows(credits_on, bob):
    today = timezone.now().astimezone(datetime.UTC).date()
    client = client_for(bob)
    client.get("/api/me/usage")
    counts = []
    for rows in (1, 40):
        for i in range(rows):
            spend(bob, "0.01", utc(today - datetime.timedelta(days=i % 30)), model=f"m{i % 5}")
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/me/usage").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1] <= 6, counts

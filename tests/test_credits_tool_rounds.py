"""Credits and the tool loop (issue 18 with issue 17): a reply that calls tools sends the
model one request per round, each repeating the prompt and the rounds so far. The hold
is kept covering what the rounds have cost plus the next request (topped up before each
round, or the reply ends with insufficient_credits), and a reply whose provider reports
no counts is charged an estimate of every request, not of the first only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chat import services
from chat.credits import holds
from chat.generation.prompt import estimate_tokens
from chat.models import CreditHold, LedgerEntry, Turn
from tests.conftest import add_provider, channel_events, use_provider, wait_until_no_generation
from tests.credits_helpers import assert_ledger_balances, set_available, set_price, total

pytestmark = pytest.mark.django_db(transaction=True)

MAX_TOKENS = 100


def calls(rounds: int) -> list[list[dict[str, Any]]]:
    return [
        [{"id": f"c{n}", "name": "calculator", "arguments": json.dumps({"expression": f"{n}*7"})}]
        for n in range(rounds)
    ]


@pytest.fixture
def tooled(settings, channel, openai_server):
    """The lobby answered by a fake model with the calculator on, every token at 1 credit
    per 1,000, and no counts reported (so what is charged is our estimate)."""
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    settings.MAX_TOOL_ROUNDS = 12
    add_provider("fake", openai_server.base_url)
    use_provider(channel, "fake", max_tokens=MAX_TOKENS)
    set_price("fake", input_per_1k="1", output_per_1k="1")
    channel.tools = ["calculator"]
    channel.save(update_fields=["tools"])
    openai_server.behaviour.usage = False
    openai_server.behaviour.tokens = ["Done."]
    return openai_server


def test_an_estimated_charge_counts_the_prompt_of_every_round(channel, alice, tooled):
    tooled.behaviour.tool_calls = calls(3)
    services.post_message(channel=channel, user=alice, text="Multiply, three times")
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "stop" and len(tooled.requests) == 4
    assert bot.usage["estimated"] is True
    # Four requests, each at least the first one's prompt (the rounds only add to it).
    assert bot.usage["prompt_tokens"] >= 4 * estimate_tokens(bot.prompt)
    debit = LedgerEntry.objects.get(kind="debit")
    assert debit.input_tokens == bot.usage["prompt_tokens"] and debit.estimated
    assert_ledger_balances(alice)


def test_rounds_the_hold_cannot_cover_end_the_reply_with_insufficient_credits(channel, alice, tooled):
    tooled.behaviour.tool_calls = calls(10)
    text = "Multiply, ten times"
    # Exactly the hold: nothing is left beside it, so a round beyond what it covers
    # cannot be topped up.
    set_available(alice, holds.estimate(channel, {}, text).amount)
    services.post_message(channel=channel, user=alice, text=text)
    wait_until_no_generation()
    hold = CreditHold.objects.get()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "error"
    assert 1 <= len(tooled.requests) < 11  # stopped before the script ran out
    errors = [e for e in channel_events(channel) if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["insufficient_credits"]
    hold.refresh_from_db()
    assert hold.status == "settled"
    # Never more than the hold: the balance does not go below zero.
    assert total(alice, "debit") <= hold.amount
    balance = assert_ledger_balances(alice)
    assert balance.available >= 0 and balance.held == 0


def test_rounds_are_topped_up_from_the_balance_when_there_is_credit(channel, alice, tooled):
    tooled.behaviour.tool_calls = calls(6)
    services.post_message(channel=channel, user=alice, text="Multiply, six times")
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "stop" and len(tooled.requests) == 7
    hold = CreditHold.objects.get()
    assert LedgerEntry.objects.filter(kind="hold", hold=hold).count() > 1  # topped up
    debit = LedgerEntry.objects.get(kind="debit")
    assert debit.amount <= hold.amount  # the hold covered every round
    assert_ledger_balances(alice)

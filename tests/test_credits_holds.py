"""Credit holds and debits (issue 18): a hold at request time in one conditional update
(402 insufficient_credits when it cannot be taken, nothing saved or counted), claimed by
the reply, topped up for a larger prompt, settled exactly once with the real usage; the
ledger adds up after every way a reply can end. Server processes: test_credits_parallel.py."""

from __future__ import annotations

import pytest

from chat import limits, services
from chat.credits import holds
from chat.errors import ServiceError
from chat.generation import driver
from chat.models import Balance, CreditHold, LedgerEntry, Turn
from chat.realtime import background
from tests.conftest import (
    add_provider,
    channel_events,
    client_for,
    use_provider,
    use_slow_model,
    wait_for,
    wait_until_no_generation,
)
from tests.credits_helpers import assert_ledger_balances, set_available, set_price, total

pytestmark = pytest.mark.django_db(transaction=True)

# With no input price, a hold is max_tokens at the output price: exact, whatever the prompt.
MAX_TOKENS = 100
HOLD = 100_000  # 100 tokens at 1 credit per 1,000, in micro-credits


@pytest.fixture
def credits_on(settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    return settings


@pytest.fixture
def priced(credits_on, channel, openai_server):
    """The lobby answered by a fake model whose output costs 1 credit per 1,000 tokens and
    whose input is free."""
    add_provider("fake", openai_server.base_url)
    use_provider(channel, "fake", max_tokens=MAX_TOKENS)
    set_price("fake", input_per_1k="0", output_per_1k="1")
    return openai_server


def refused(call) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call()
    return caught.value


def test_a_fresh_install_with_no_initial_credits_refuses_the_first_message_with_402(channel, alice, settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "0"
    response = client_for(alice).post("/api/channels/lobby/messages", {"text": "hello"}, format="json")
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_credits"
    assert "Insufficient credits to use this model." in response.json()["detail"]
    # Nothing saved, nothing counted, nothing held.
    assert not Turn.objects.exists()
    assert limits.usage_today(alice)["messages"] == 0
    assert not CreditHold.objects.exists()
    assert not Balance.objects.filter(user=alice, held__gt=0).exists()


def test_the_demo_is_priced_by_the_default_price(channel, alice, settings):
    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "10"
    settings.CREDITS_DEFAULT_PRICE = "2"
    services.post_message(channel=channel, user=alice, text="hello there")
    wait_until_no_generation()
    debit = LedgerEntry.objects.get(user=alice, kind="debit")
    assert debit.provider == "demo" and debit.model == "demo"
    assert debit.amount == (debit.input_tokens + debit.output_tokens) * 2 * 1000
    assert debit.turn == Turn.objects.get(role="bot")
    assert_ledger_balances(alice)


@pytest.mark.asyncio
async def test_the_socket_answers_insufficient_credits(channel, alice, settings):
    from chat.realtime.async_db import db_call
    from tests.ws_helpers import open_socket, receive, token_for

    settings.CREDITS_ENABLED = True
    settings.CREDITS_INITIAL = "0"
    communicator, connected, _ = await open_socket("/ws/lobby", token=await token_for(alice))
    assert connected
    await receive(communicator)  # history
    await communicator.send_json_to({"type": "message", "text": "hello"})
    frame = await receive(communicator)
    assert frame["type"] == "error" and frame["code"] == "insufficient_credits"
    assert frame["text"] == "Insufficient credits to use this model."
    await communicator.disconnect()
    assert not await db_call(Turn.objects.exists)()


def test_a_reply_debits_the_providers_counts_and_releases_the_rest(channel, alice, priced):
    services.post_message(channel=channel, user=alice, text="hello")
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    hold = CreditHold.objects.get()
    assert (hold.status, hold.reply, hold.amount, hold.provider) == ("settled", bot, HOLD, "fake")
    debit = LedgerEntry.objects.get(kind="debit")
    assert debit.turn == bot and debit.hold == hold and not debit.estimated
    assert (debit.input_tokens, debit.output_tokens) == (
        bot.usage["prompt_tokens"],
        bot.usage["completion_tokens"],
    )
    assert debit.amount == bot.usage["completion_tokens"] * 1000  # 1 credit per 1,000 tokens
    assert LedgerEntry.objects.get(kind="release").amount == HOLD - debit.amount
    hold_entry = LedgerEntry.objects.get(kind="hold")
    assert hold_entry.amount == HOLD and hold_entry.turn == Turn.objects.get(role="user")
    assert_ledger_balances(alice)


def test_the_hold_is_taken_before_limits_are_counted_and_a_refused_limit_keeps_no_hold(
    channel, alice, priced, settings
):
    set_available(alice, HOLD - 1)
    assert refused(lambda: services.post_message(channel=channel, user=alice, text="x")).code == (
        "insufficient_credits"
    )
    assert limits.usage_today(alice)["messages"] == 0
    set_available(alice, 10 * HOLD)
    settings.DAILY_MESSAGES = 1
    services.post_message(channel=channel, user=alice, text="one")
    wait_until_no_generation()
    assert refused(lambda: services.post_message(channel=channel, user=alice, text="two")).code == (
        "quota_exceeded"
    )
    assert CreditHold.objects.count() == 1  # the refused message's hold was rolled back
    assert_ledger_balances(alice)


def test_settling_twice_debits_once(channel, alice, credits_on):
    set_available(alice, 10 * HOLD)
    basis = holds.Basis("demo", "demo", HOLD)
    holds.reserve(alice, basis.amount)
    hold = CreditHold.objects.get(pk=holds.record_hold(user=alice, channel=channel, basis=basis, turn=None))
    usage = holds.Usage("demo", "demo", 10, 20, estimated=False)
    assert holds.settle(hold.pk, usage, turn_id=None) is True
    assert holds.settle(hold.pk, usage, turn_id=None) is False
    assert LedgerEntry.objects.filter(kind="debit").count() == 1
    assert LedgerEntry.objects.filter(kind="release").count() == 1
    assert_ledger_balances(alice)


def test_an_interrupted_reply_pays_for_what_was_streamed(channel, alice, priced):
    use_slow_model(channel, priced, delay=0.05, tokens=[" word"] * 400, max_tokens=MAX_TOKENS)
    set_price("slow", input_per_1k="0", output_per_1k="1")
    services.post_message(channel=channel, user=alice, text="talk")
    wait_for(lambda: any(e["type"] == "token" for e in channel_events(channel)))
    services.interrupt(channel=channel, user=alice)
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "interrupted" and bot.text
    debit = LedgerEntry.objects.get(kind="debit")
    assert debit.estimated and debit.output_tokens == bot.usage["completion_tokens"] > 0
    assert debit.turn == bot
    assert_ledger_balances(alice)


def test_a_provider_error_before_any_token_is_free_and_releases_the_hold(channel, alice, priced):
    priced.behaviour.status = 500
    services.post_message(channel=channel, user=alice, text="hello")
    wait_until_no_generation()
    assert Turn.objects.get(role="bot").finish_reason == "error"
    assert not LedgerEntry.objects.filter(kind="debit").exists()
    assert total(alice, "release") == HOLD
    assert_ledger_balances(alice)


def test_a_debit_above_the_hold_takes_available_below_zero_and_the_next_hold_is_refused(
    channel, alice, priced
):
    set_available(alice, HOLD)
    basis = holds.Basis("fake", "test-model", HOLD)
    holds.reserve(alice, HOLD)
    hold = CreditHold.objects.get(pk=holds.record_hold(user=alice, channel=channel, basis=basis, turn=None))
    # The provider counted more than the estimate allowed for: what it counted is paid.
    holds.settle(hold.pk, holds.Usage("fake", "test-model", 0, 150, estimated=False), turn_id=None)
    assert LedgerEntry.objects.get(kind="debit").amount == 150_000
    assert not LedgerEntry.objects.filter(kind="release").exists()
    balance = assert_ledger_balances(alice)
    assert balance.available == -50_000
    error = refused(lambda: services.post_message(channel=channel, user=alice, text="again"))
    assert error.code == "insufficient_credits" and error.http_status == 402


def test_a_prompt_larger_than_estimated_is_topped_up(channel, alice, bob, priced):
    set_price("fake", input_per_1k="1", output_per_1k="1")
    set_available(alice, 100 * HOLD)
    # An injected turn makes no reply: the estimate (last reply + new text) misses it.
    services.inject(channel=channel, user=bob, role="user", text="long " * 1500)
    services.post_message(channel=channel, user=alice, text="short")
    wait_until_no_generation()
    assert Turn.objects.get(role="bot").finish_reason == "stop"
    hold = CreditHold.objects.get()
    assert LedgerEntry.objects.filter(kind="hold", hold=hold).count() == 2
    assert hold.amount > total(alice, "hold") - hold.amount
    assert_ledger_balances(alice)


def test_a_top_up_that_cannot_be_taken_ends_the_reply_before_the_model(channel, alice, bob, priced):
    set_price("fake", input_per_1k="1", output_per_1k="1")
    services.inject(channel=channel, user=bob, role="user", text="long " * 1500)
    set_available(alice, 200_000)  # the estimate fits; the real prompt (~2,500 tokens) does not
    services.post_message(channel=channel, user=alice, text="short")
    wait_until_no_generation()
    bot = Turn.objects.get(role="bot")
    assert bot.finish_reason == "error"
    assert priced.requests == []  # nothing reached the model
    errors = [e for e in channel_events(channel) if e["type"] == "error"]
    assert [(e["code"], e["text"]) for e in errors] == [
        ("insufficient_credits", "Insufficient credits to use this model.")
    ]
    assert not LedgerEntry.objects.filter(kind="debit").exists()
    assert_ledger_balances(alice)


def test_requests_answered_together_charge_the_last_to_ask(channel, alice, bob, priced):
    use_slow_model(channel, priced, delay=0.02, tokens=[" w"] * 30, max_tokens=MAX_TOKENS)
    set_price("slow", input_per_1k="0", output_per_1k="1")
    services.post_message(channel=channel, user=alice, text="first")
    wait_for(lambda: Turn.objects.filter(role="bot").exists())
    services.post_message(channel=channel, user=alice, text="second")
    services.post_message(channel=channel, user=bob, text="third")
    wait_until_no_generation()
    bots = list(Turn.objects.filter(role="bot").order_by("id"))
    assert len(bots) == 2
    assert LedgerEntry.objects.get(kind="debit", turn=bots[1]).user == bob
    second = CreditHold.objects.get(user=alice, reply=bots[1])
    assert second.status == "settled"
    assert [e.kind for e in second.entries.order_by("id")] == ["hold", "release"]
    assert_ledger_balances(alice)
    assert_ledger_balances(bob)


def test_a_regenerate_takes_its_own_hold_after_the_interrupt(channel, alice, bob, priced):
    services.post_message(channel=channel, user=alice, text="hello")
    wait_until_no_generation()
    services.regenerate(channel=channel, user=bob)
    wait_until_no_generation()
    regenerated = Turn.objects.get(role="bot", hidden=False)
    assert LedgerEntry.objects.get(kind="debit", turn=regenerated).user == bob
    assert_ledger_balances(alice)
    assert_ledger_balances(bob)
    set_available(bob, 0)
    assert refused(lambda: services.regenerate(channel=channel, user=bob)).code == "insufficient_credits"
    assert limits.usage_today(bob)["messages"] == 1  # the refused one was not counted
    assert Turn.objects.get(role="bot", hidden=False) == regenerated


def test_holds_nobody_claims_are_released_by_the_sweep(channel, alice, priced):
    from datetime import timedelta

    from django.utils import timezone

    set_available(alice, 10 * HOLD)
    basis = holds.Basis("fake", "test-model", HOLD)
    holds.reserve(alice, HOLD)
    holds.record_hold(user=alice, channel=channel, basis=basis, turn=None)
    assert background.run(driver.release_abandoned_holds(), timeout=10) == 0  # not a minute old yet
    later = timezone.now() + timedelta(minutes=2)
    assert holds.release_abandoned(channel.pk, now=later) == 1
    assert total(alice, "release") == HOLD
    assert_ledger_balances(alice)


def test_a_dead_replys_hold_is_settled_by_recovery_with_an_estimate(channel, alice, priced):
    set_available(alice, 10 * HOLD)
    session = services.post_message(channel=channel, user=alice, text="hi").session
    wait_until_no_generation()
    # A reply left unfinished by a dead process: its turn open, its hold claimed.
    dead = Turn.objects.create(session=session, role="bot", text="half an answer", params={"max_tokens": 100})
    basis = holds.Basis("fake", "test-model", HOLD)
    holds.reserve(alice, HOLD)
    hold = CreditHold.objects.get(pk=holds.record_hold(user=alice, channel=channel, basis=basis, turn=None))
    CreditHold.objects.filter(pk=hold.pk).update(reply=dead)
    assert driver.recover_unfinished() == 1
    debit = LedgerEntry.objects.get(kind="debit", hold=hold)
    assert debit.estimated and debit.turn == dead and debit.output_tokens > 0
    assert_ledger_balances(alice)


def test_titles_and_compaction_are_exempt(channel, alice, priced, second_openai_server):
    from chat.agents import compaction
    from chat.generation import titles
    from chat.models import Checkpoint, Session
    from chat.realtime import background
    from tests.test_compaction import seed, small_model, task_model

    small_model(channel, priced)
    task_model(second_openai_server, ["A", " title"])
    seed(channel, alice, 10)
    set_available(alice, 10 * HOLD)
    session = channel.active_session
    before = list(LedgerEntry.objects.values_list("pk", flat=True))
    balance = Balance.objects.get(user=alice)
    background.run(titles.write_title(session.pk), timeout=10)
    assert Session.objects.get(pk=session.pk).title == "A title"
    newest = Turn.objects.filter(session=session).latest("id")
    second_openai_server.behaviour.tokens = ["a summary"]
    assert background.run(compaction.compact(session.pk, channel.pk, channel.name, newest.pk), timeout=10)
    assert Checkpoint.objects.exists() and len(second_openai_server.requests) == 2
    assert list(LedgerEntry.objects.values_list("pk", flat=True)) == before
    after = Balance.objects.get(user=alice)
    assert (after.available, after.held) == (balance.available, balance.held)


def test_with_credits_off_nothing_is_held(channel, alice):
    services.post_message(channel=channel, user=alice, text="hello")
    wait_until_no_generation()
    assert not CreditHold.objects.exists() and not LedgerEntry.objects.exists()

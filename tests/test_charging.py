"""Who pays for what (issue 11, item 9): inject and regenerate count like messages, a
reply's tokens are charged to whoever asked for it, refused requests use up nothing,
and a reply that never reached a model is free."""

from __future__ import annotations

import pytest

from chat import limits, services
from chat.errors import ServiceError
from chat.models import Turn
from tests.conftest import add_provider, use_provider, wait_until_no_generation

pytestmark = pytest.mark.django_db(transaction=True)


def refused_with(code: str, call) -> None:
    with pytest.raises(ServiceError) as caught:
        call()
    assert caught.value.code == code


def test_inject_and_regenerate_count_toward_the_rate_limit(channel, bob, settings):
    settings.MESSAGES_PER_MINUTE = 2
    services.inject(channel=channel, user=bob, role="user", text="one")
    services.regenerate(channel=channel, user=bob)
    wait_until_no_generation()
    refused_with("rate_limited", lambda: services.inject(channel=channel, user=bob, role="agent", text="x"))
    refused_with("rate_limited", lambda: services.regenerate(channel=channel, user=bob))
    refused_with("rate_limited", lambda: services.post_message(channel=channel, user=bob, text="x"))


def test_inject_counts_toward_the_daily_messages(channel, bob, settings):
    settings.DAILY_MESSAGES = 1
    services.inject(channel=channel, user=bob, role="user", text="one")
    refused_with("quota_exceeded", lambda: services.inject(channel=channel, user=bob, role="user", text="2"))
    assert limits.usage_today(bob)["messages"] == 1


def test_refused_requests_use_up_neither_the_minute_nor_the_day(channel, alice, bob, admin_user, settings):
    settings.MESSAGES_PER_MINUTE = 2
    settings.DAILY_MESSAGES = 2
    services.set_locked(actor=admin_user, channel=channel, locked=True)
    for _ in range(5):
        refused_with("locked", lambda: services.post_message(channel=channel, user=bob, text="x"))
    services.set_locked(actor=admin_user, channel=channel, locked=False)
    for _ in range(3):  # bob may not change settings: forbidden, before anything is counted
        refused_with(
            "forbidden",
            lambda: services.post_message(channel=channel, user=bob, text="x", params={"max_tokens": 5}),
        )
    assert limits.usage_today(bob)["messages"] == 0
    services.post_message(channel=channel, user=bob, text="one")
    services.post_message(channel=channel, user=bob, text="two")
    wait_until_no_generation()
    for _ in range(3):
        refused_with("rate_limited", lambda: services.post_message(channel=channel, user=bob, text="x"))
    assert limits.usage_today(bob)["messages"] == 2  # the refusals were not counted


def test_a_regenerated_reply_is_charged_to_who_regenerated_it(channel, alice, bob):
    services.post_message(channel=channel, user=alice, text="tell me something")
    wait_until_no_generation()
    alice_tokens = limits.usage_today(alice)["tokens"]
    assert alice_tokens > 0
    services.regenerate(channel=channel, user=bob)
    wait_until_no_generation()
    assert limits.usage_today(alice)["tokens"] == alice_tokens
    regenerated = Turn.objects.filter(role="bot", hidden=False).get()
    usage = regenerated.usage
    assert limits.usage_today(bob)["tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_a_reply_that_never_reached_a_model_charges_nothing(channel, alice):
    from tests.processes import free_port

    add_provider("nowhere", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    use_provider(channel, "nowhere")
    services.post_message(channel=channel, user=alice, text="anyone?")
    wait_until_no_generation()
    assert Turn.objects.get(role="bot").finish_reason == "error"
    assert limits.usage_today(alice)["tokens"] == 0

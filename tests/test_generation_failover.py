"""Failover: retried once, then the next provider, only before the first token."""

import pytest

from chat.models import Turn
from chat.services import post_message
from tests.conftest import add_provider, use_provider, wait_for_done
from tests.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def last_bot(channel):
    return Turn.objects.filter(session__channel=channel, role="bot").order_by("-id").first()


def test_a_500_is_retried_once_then_the_next_provider_answers(
    channel, alice, openai_server, second_openai_server
):
    openai_server.behaviour.status = 500
    second_openai_server.behaviour.tokens = ["Backup", " here"]
    add_provider("primary", openai_server.base_url, priority=1)
    add_provider("backup", second_openai_server.base_url, priority=2)
    use_provider(channel, "primary")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    turn = last_bot(channel)
    assert len(openai_server.requests) == 2  # the first try and one retry
    assert len(second_openai_server.requests) == 1
    assert turn.text == "Backup here" and turn.finish_reason == "stop"
    assert turn.provider == "backup"


def test_a_refused_connection_fails_over(channel, alice, openai_server):
    add_provider("gone", f"http://127.0.0.1:{free_port()}/v1", priority=1)
    add_provider("alive", openai_server.base_url, priority=2)
    use_provider(channel, "gone")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    assert last_bot(channel).provider == "alive"
    assert last_bot(channel).text == "Hello, world."


def test_a_429_is_retried_and_a_400_is_not(channel, alice, openai_server, second_openai_server):
    openai_server.behaviour.status = 400
    add_provider("strict", openai_server.base_url, priority=1)
    add_provider("backup", second_openai_server.base_url, priority=2)
    use_provider(channel, "strict")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    assert len(openai_server.requests) == 1
    assert last_bot(channel).provider == "backup"

    openai_server.behaviour.status = 429
    openai_server.requests.clear()
    post_message(channel=channel, user=alice, text="Again")
    wait_for_done(channel, count=2)
    assert len(openai_server.requests) == 2


def test_disabled_providers_and_the_demo_are_not_failover_targets(
    channel, alice, openai_server, second_openai_server
):
    openai_server.behaviour.status = 503
    add_provider("primary", openai_server.base_url, priority=1)
    add_provider("off", second_openai_server.base_url, priority=2, enabled=False)
    use_provider(channel, "primary")
    post_message(channel=channel, user=alice, text="Hi")
    events = wait_for_done(channel)
    turn = last_bot(channel)
    assert turn.finish_reason == "error" and turn.text == ""
    assert second_openai_server.requests == []
    assert any(e["type"] == "error" and e["code"] == "provider_error" for e in events)


def test_no_failover_after_the_first_token(channel, alice, openai_server, second_openai_server):
    openai_server.behaviour.drop_after = 1
    add_provider("primary", openai_server.base_url, priority=1)
    add_provider("backup", second_openai_server.base_url, priority=2)
    use_provider(channel, "primary")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for_done(channel)
    assert second_openai_server.requests == []
    assert last_bot(channel).finish_reason == "error"
    assert last_bot(channel).text == "Hello"

"""Thinking (issue 14): the channel's `params.thinking` and a message's `thinking`, mapped
to each provider's real switch, checked in the request body a real HTTP server speaking
that wire format received; reasoning streams apart as before."""

from __future__ import annotations

import pytest

from chat.models import Channel, Turn
from chat.services import post_message
from tests.conftest import add_provider, client_for, use_provider, wait_for_done

pytestmark = pytest.mark.django_db(transaction=True)


def claude(channel: Channel, server, **params) -> None:
    add_provider("claude", server.base_url.removesuffix("/v1"), kind="anthropic")
    use_provider(channel, "claude", **params)


def test_anthropic_thinks_with_a_budget_when_the_channel_asks(channel, alice, anthropic_server):
    anthropic_server.behaviour.reasoning = ["Let me see", "…"]
    claude(channel, anthropic_server, thinking="high", max_tokens=300)
    post_message(channel=channel, user=alice, text="Why?")
    events = wait_for_done(channel)
    request = anthropic_server.requests[0]
    assert request["thinking"] == {"type": "enabled", "budget_tokens": 16384}
    assert request["max_tokens"] == 300 + 16384  # must exceed the budget; the answer keeps 300
    assert "temperature" not in request and "top_k" not in request and "top_p" not in request
    turn = Turn.objects.get(role="bot")
    assert turn.reasoning == "Let me see…" and turn.text == "Hello, world."
    assert turn.params["thinking"] == "high"
    assert "".join(e["data"] for e in events if e["type"] == "reasoning") == "Let me see…"


@pytest.mark.parametrize(("thinking", "budget"), [(True, 4096), ("low", 1024), ("medium", 4096)])
def test_a_message_turns_anthropic_thinking_on_for_its_reply(
    channel, alice, anthropic_server, thinking, budget
):
    claude(channel, anthropic_server)
    post_message(channel=channel, user=alice, text="Hm", thinking=thinking)
    wait_for_done(channel)
    assert anthropic_server.requests[0]["thinking"]["budget_tokens"] == budget
    assert Channel.objects.get(pk=channel.pk).params["thinking"] is False  # not saved


def test_a_message_turns_the_channels_thinking_off(channel, alice, anthropic_server):
    claude(channel, anthropic_server, thinking=True)
    post_message(channel=channel, user=alice, text="Quick", thinking=False)
    wait_for_done(channel)
    request = anthropic_server.requests[0]
    assert "thinking" not in request and request["max_tokens"] == 256
    assert Turn.objects.get(role="bot").params["thinking"] is False


def test_openai_compatible_reasoning_models_get_reasoning_effort(channel, alice, openai_server):
    openai_server.behaviour.reasoning = ["Step 1. ", "Step 2."]
    add_provider("reasoner", openai_server.base_url, reasoning_effort=True)
    use_provider(channel, "reasoner")
    response = client_for(alice).post(
        "/api/channels/lobby/messages", {"text": "Solve it", "thinking": "low"}, format="json"
    )
    assert response.status_code == 200
    body = openai_server.requests[0]
    assert body["reasoning_effort"] == "low"
    assert response.json()["bot_turn"]["reasoning"] == "Step 1. Step 2."
    assert response.json()["bot_turn"]["params"]["thinking"] == "low"
    assert response.json()["user_turn"]["request"] == {"thinking": "low"}


def test_true_is_medium_effort_and_false_sends_nothing(channel, alice, openai_server):
    add_provider("reasoner", openai_server.base_url, reasoning_effort=True)
    use_provider(channel, "reasoner")
    post_message(channel=channel, user=alice, text="a", thinking=True)
    wait_for_done(channel)
    post_message(channel=channel, user=alice, text="b", thinking=False)
    wait_for_done(channel, count=2)
    assert openai_server.requests[0]["reasoning_effort"] == "medium"
    assert "reasoning_effort" not in openai_server.requests[1]


def test_a_server_without_reasoning_effort_is_not_sent_it(channel, alice, openai_server):
    add_provider("plain", openai_server.base_url)  # reasoning_effort off: it would refuse it
    use_provider(channel, "plain", thinking="high")
    post_message(channel=channel, user=alice, text="a")
    wait_for_done(channel)
    assert "reasoning_effort" not in openai_server.requests[0]


def test_the_demo_shows_thinking_without_a_model(channel, alice):
    response = client_for(alice).post(
        "/api/channels/lobby/messages", {"text": "hi", "thinking": True}, format="json"
    )
    assert response.json()["bot_turn"]["reasoning"].startswith("(medium effort)")


@pytest.mark.parametrize("value", ["extreme", 1, 0, None, "", "HIGH", ["low"], {"level": "low"}])
def test_a_bad_thinking_value_is_a_400_naming_it(channel, alice, value):
    for path, payload in (
        ("messages", {"text": "hi", "thinking": value}),
        ("regenerate", {"thinking": value}),
        ("messages", {"text": "hi", "params": {"thinking": value}}),
    ):
        response = client_for(alice).post(f"/api/channels/lobby/{path}", payload, format="json")
        assert response.status_code == 400, (path, payload)
        fields = response.json()["fields"]
        assert "thinking" in fields or "thinking" in fields.get("params", {})
    assert Turn.objects.count() == 0


def test_members_think_only_where_the_policy_offers_it(channel, alice, bob):
    send = lambda: client_for(bob).post(  # noqa: E731
        "/api/channels/lobby/messages", {"text": "hi", "thinking": "high"}, format="json"
    )
    assert send().status_code == 403
    client_for(alice).patch("/api/channels/lobby", {"member_params": {"thinking": False}}, format="json")
    assert send().status_code == 403
    client_for(alice).patch("/api/channels/lobby", {"member_params": {"thinking": True}}, format="json")
    response = send()
    assert response.status_code == 200 and response.json()["bot_turn"]["params"]["thinking"] == "high"


def test_the_channels_thinking_is_set_like_its_other_params(channel, alice, bob):
    response = client_for(alice).patch(
        "/api/channels/lobby", {"params": {"thinking": "medium"}}, format="json"
    )
    assert response.status_code == 200 and response.json()["params"]["thinking"] == "medium"
    bad = client_for(alice).patch("/api/channels/lobby", {"params": {"thinking": "max"}}, format="json")
    assert bad.status_code == 400 and "thinking" in bad.json()["fields"]["params"]
    assert (
        client_for(bob)
        .patch("/api/channels/lobby", {"params": {"thinking": True}}, format="json")
        .status_code
        == 403
    )

"""Anthropic's Messages API, against a real HTTP server speaking its stream format."""

import pytest

from chat.models import Turn
from chat.services import post_message
from tests.conftest import add_provider, use_provider, wait_for_done

pytestmark = pytest.mark.django_db(transaction=True)


def test_anthropic_streams_text_and_keeps_thinking_apart(channel, alice, anthropic_server, monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-test-123")
    anthropic_server.behaviour.reasoning = ["Pondering", "…"]
    add_provider(
        "claude",
        anthropic_server.base_url.removesuffix("/v1"),
        kind="anthropic",
        api_key_env="TEST_ANTHROPIC_KEY",
    )
    use_provider(channel, "claude", temperature=1.5, top_k=5)
    post_message(channel=channel, user=alice, text="Hello", framing={"preamble": "You are terse."})
    events = wait_for_done(channel)
    turn = Turn.objects.get(session__channel=channel, role="bot")
    request = anthropic_server.requests[0]
    assert anthropic_server.paths == ["/v1/messages"]
    assert anthropic_server.headers[0]["authorization"] == "Bearer sk-test-123"
    assert request["system"] == "You are terse."
    assert request["messages"] == [{"role": "user", "content": "Hello"}]
    assert request["max_tokens"] == 256
    assert "temperature" not in request and "top_k" not in request  # the API no longer takes them
    assert turn.text == "Hello, world." and turn.reasoning == "Pondering…"
    assert turn.usage == {"prompt_tokens": 13, "completion_tokens": 4, "estimated": False}
    assert "".join(e["data"] for e in events if e["type"] == "token") == turn.text


def test_anthropic_max_tokens_is_length(channel, alice, anthropic_server):
    anthropic_server.behaviour.tokens = ["a"] * 10
    add_provider("claude", anthropic_server.base_url.removesuffix("/v1"), kind="anthropic")
    use_provider(channel, "claude", max_tokens=3)
    post_message(channel=channel, user=alice, text="Go")
    wait_for_done(channel)
    turn = Turn.objects.get(session__channel=channel, role="bot")
    assert turn.finish_reason == "length" and turn.text == "aaa"


def test_anthropic_is_not_offered_for_completion_channels(channel, alice, anthropic_server):
    from chat.generation.records import provider_chain

    add_provider("claude", anthropic_server.base_url, kind="anthropic")
    channel.mode = "completion"
    channel.save()
    chain = provider_chain(channel, {"provider": "claude"})
    assert [c.name for c in chain] == ["demo"]

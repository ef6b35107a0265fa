"""Issue 17 (agents: the tool loop) attacked from outside: a model that asks for
thousands of calls in one round, a person's private arguments shown when a call is
refused, and one person reading another's personal passages back. Each test here failed
on the code it guards."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from django.test import override_settings

from chat.agents.builtin.kb import KbSearch
from chat.agents.tools import ToolContext
from chat.knowledge import indexing
from chat.models import Turn
from chat.services import post_message
from tests.conftest import add_provider, channel_events, use_provider, wait_for_done
from tests.knowledge_helpers import add_document, make_base, topic_text

pytestmark = pytest.mark.django_db(transaction=True)


def call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "name": name, "arguments": json.dumps(arguments)}


def use_tools(channel: Any, server: Any, *tools: str) -> None:
    add_provider("tooly", server.base_url, kind="openai_compat")
    use_provider(channel, "tooly")
    channel.tools = list(tools)
    channel.save(update_fields=["tools"])


def bot(channel: Any) -> Turn:
    return cast(Turn, Turn.objects.filter(session__channel=channel, role="bot").order_by("-id").first())


@override_settings(MAX_TOOL_CALLS_PER_ROUND=4)
def test_a_round_runs_at_most_max_tool_calls_per_round(channel, alice, openai_server):
    """Nothing capped the calls of one round: a model (or a hostile provider) could ask
    for thousands at once, each stored as a step, sent to the room and run together. The
    calls beyond the cap are not run, nor stored, nor sent back; the room is told."""
    openai_server.behaviour.tool_calls = [
        [call(f"c{i}", "calculator", expression=f"{i}+1") for i in range(30)]
    ]
    use_tools(channel, openai_server, "calculator")
    post_message(channel=channel, user=alice, text="go wide")
    events = wait_for_done(channel)
    turn = bot(channel)
    assert [s["call_id"] for s in turn.steps] == ["c0", "c1", "c2", "c3"]
    assert all(s["status"] == "ok" for s in turn.steps)
    sent_back = [m for m in openai_server.requests[1]["messages"] if m["role"] == "tool"]
    assert len(sent_back) == 4
    assert any(e["type"] == "status" and "at most 4 tool calls" in e["text"] for e in events)


@override_settings(MAX_TOOL_ROUNDS=0)
def test_a_refused_memory_call_keeps_its_arguments_private(channel, alice, openai_server):
    """The memory tool's arguments are the person's data: a call that runs shows ``{}``,
    but a call refused at the round limit was recorded (and streamed to the room, and kept
    in history) with its arguments in full."""
    openai_server.behaviour.tool_calls = [[call("m1", "memory", action="save", text="alice is pregnant")]]
    use_tools(channel, openai_server, "memory")
    post_message(channel=channel, user=alice, text="remember this")
    events = wait_for_done(channel)
    [step] = bot(channel).steps
    assert step["status"] == "error" and step["arguments"] == {}
    assert step.get("private_arguments") is True
    assert "pregnant" not in json.dumps(bot(channel).steps)
    assert "pregnant" not in json.dumps([e for e in channel_events(channel)] + list(events))


def indexed_base(**kwargs: Any) -> Any:
    base = make_base(**kwargs)
    for names in (("try", "while", "lambda"), ("import", "with", "assert")):
        document = add_document(base, f"{'-'.join(names)}.md", topic_text(*names))
        indexing.index(str(document.pk))
    base.refresh_from_db()
    return base


def test_kb_search_over_two_peoples_bases_is_readable_back_by_neither(alice, bob):
    """A room's base attached by its owner and a member's personal base named in a
    message are both in scope: a search naming passages of both was ``private_to`` the
    first owner only, who could then read the other's passages back through
    GET /api/turns/{id}/steps/{call_id}."""
    import asyncio

    mine = indexed_base(owner=alice, name="Alice's notes")
    theirs = indexed_base(owner=bob, name="Bob's notes")
    context = ToolContext(
        channel_id=1,
        channel_name="lobby",
        session_id=None,
        turn_id=1,
        requester_id=None,
        author_id=None,
        knowledge_base_ids=(str(mine.pk), str(theirs.pk)),
    )
    output = asyncio.run(KbSearch().run({"query": "the try statement and exceptions", "top_k": 10}, context))
    assert {source["kb"]["name"] for source in output.sources or []} == {"Alice's notes", "Bob's notes"}
    assert output.private_to not in (alice.pk, bob.pk, None)


def test_naming_an_agent_searches_only_its_bases_the_author_may_read(channel, bob, carol, openai_server):
    """An agent's bases were all searched for whoever named it: in a room that lets
    members choose, anyone read (in the sources, the prompt and the reply) passages of a
    private room's base or of someone's personal base that an admin gave the agent,
    though GET /api/agents hides those very bases from them."""
    from chat.models import Agent
    from chat.services import create_channel

    backroom = create_channel(name="backroom", owner=carol, visibility="private")
    secret = indexed_base(channel=backroom, name="Secrets")
    diary = indexed_base(owner=carol, name="Carol's diary")
    agent = Agent.objects.create(name="helper", description="Helps.")
    agent.knowledge_bases.set([secret, diary])
    channel.agent_choice = "members"
    channel.save(update_fields=["agent_choice"])
    add_provider("plain", openai_server.base_url, kind="openai_compat")
    use_provider(channel, "plain")
    post_message(channel=channel, user=bob, text="the try statement and exceptions", agent="helper")
    events = wait_for_done(channel)
    seen = json.dumps(events) + json.dumps(openai_server.requests) + (bot(channel).prompt or "")
    assert "Secrets" not in seen and "Carol's diary" not in seen


def test_memories_reach_the_model_but_not_the_stored_prompt_watchers_can_read(alice, openai_server):
    """A personal room's watch link, or a shared room's watchers, read the bot turn's
    prompt (get_turn, GET /api/turns/{id}): the memories the model got stay out of it."""
    from chat.models import Memory
    from chat.services import create_channel

    room = create_channel(name="diary", owner=alice, visibility="private")
    Memory.objects.create(user=alice, text="keeps a spare key under the blue pot")
    add_provider("mem", openai_server.base_url)
    use_provider(room, "mem")
    post_message(channel=room, user=alice, text="where is my key?")
    wait_for_done(room)
    system = openai_server.requests[0]["messages"][0]["content"]
    assert "blue pot" in system  # the model remembers
    turn = Turn.objects.get(session__channel=room, role="bot")
    assert "blue pot" not in turn.prompt and "memories of the author: not shown" in turn.prompt
    assert "blue pot" not in json.dumps(turn.to_dict(substrate=True))

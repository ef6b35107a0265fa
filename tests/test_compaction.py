"""Compaction (issue 17): after a reply whose prompt passed COMPACT_AT of a small context
window, the task model summarises the older turns into a checkpoint in the background;
the next prompt is the summary and the turns after it; every screen hears `compacted`
and history carries the checkpoint; a summarised turn that is hidden or deleted takes the
checkpoint with it. The models are real HTTP servers (tests/fake_models.py), or the
offline demo."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from chat import services
from chat.agents import compaction
from chat.agents.checkpoints import HEADING, latest
from chat.generation.records import DEMO_CONFIG
from chat.models import Checkpoint, Provider, Session, SiteSettings, Turn
from chat.realtime import background
from chat.realtime.async_db import db_call
from tests.conftest import add_provider, channel_events, client_for, use_provider, wait_for, wait_for_done
from tests.ws_helpers import open_socket, receive, receive_until

pytestmark = pytest.mark.django_db(transaction=True)

SUMMARY = "SUMMARY-TEXT: alice keeps old facts."
FILLER = "lorem ipsum " * 10  # with its first sentence, 38 tokens a turn


@pytest.fixture(autouse=True)
def _compaction_on(settings: Any) -> Iterator[None]:
    settings.COMPACT_AT = 0.7  # off in the other tests (tests/environment.py)
    yield
    # A compaction still running would write into the next test's database.
    deadline = time.monotonic() + 15
    while compaction._running and time.monotonic() < deadline:
        time.sleep(0.02)


def seed(channel: Any, author: Any, count: int, label: str = "old fact") -> list[Turn]:
    """``count`` long turns, a user's then the bot's, as an earlier conversation left them."""
    session = channel.active_session
    return [
        Turn.objects.create(
            session=session,
            role="user" if i % 2 == 0 else "bot",
            author=author if i % 2 == 0 else None,
            text=f"{label} {i} is worth keeping. {FILLER}",
            finish_reason=None if i % 2 == 0 else "stop",
        )
        for i in range(count)
    ]


def small_model(channel: Any, server: Any, window: int = 500) -> None:
    """Replies from ``server`` with a window of 500 tokens: 450 for the prompt, compaction
    past 350, the newest 150 kept word for word."""
    add_provider("small", server.base_url, context_window=window)
    use_provider(channel, "small", max_tokens=50)


def task_model(server: Any, tokens: list[str], **behaviour: Any) -> None:
    server.behaviour.tokens = tokens
    for name, value in behaviour.items():
        setattr(server.behaviour, name, value)
    site = SiteSettings.load()
    site.task_provider = add_provider("tasks", server.base_url, priority=50)
    site.task_model = "small-model"
    site.save()


def wait_for_replies(channel: Any, count: int) -> None:
    """Until ``count`` replies are finished (a removal drops the replay log, and with it
    the earlier ``done`` events that wait_for_done counts)."""
    finished = Turn.objects.filter(session__channel=channel, role="bot", finish_reason__isnull=False)
    wait_for(lambda: finished.count() >= count, timeout=15)


def prompt_text(request: dict[str, Any]) -> str:
    return "\n".join(str(message["content"]) for message in request["messages"])


def compacted(channel: Any, server: Any, alice: Any) -> Checkpoint:
    """A long session, a reply, and the checkpoint written after it."""
    small_model(channel, server)
    seed(channel, alice, 10)
    services.post_message(channel=channel, user=alice, text="What did we say?")
    wait_for_done(channel)
    return wait_for(lambda: latest(channel.active_session.pk), timeout=15)


def test_a_long_prompt_is_summarised_and_the_next_prompt_uses_the_summary(
    channel, alice, openai_server, second_openai_server
):
    task_model(second_openai_server, ["SUMMARY-TEXT: alice", " keeps old facts."])
    checkpoint = compacted(channel, openai_server, alice)
    session = channel.active_session
    turns = list(Turn.objects.filter(session=session).order_by("id"))
    # The newest third of the budget stays word for word: turns 7, 8, 9, the question and
    # the reply; turns 0 to 6 are summarised.
    assert checkpoint.summary == SUMMARY and checkpoint.turns == 7
    assert checkpoint.through_turn_id == turns[6].pk
    assert (checkpoint.provider, checkpoint.model) == ("tasks", "small-model")
    (asked,) = second_openai_server.requests
    assert asked["model"] == "small-model" and asked["max_tokens"] == compaction.SUMMARY_TOKENS
    system, user = asked["messages"]
    assert "Summarise the conversation" in system["content"]
    assert "alice: old fact 0 is worth keeping. lorem" in user["content"]
    assert "assistant: old fact 5 is worth keeping. lorem" in user["content"]
    assert "alice: old fact 6 is worth keeping. lorem" in user["content"]
    assert "old fact 7" not in user["content"] and "What did we say?" not in user["content"]

    announced = [e for e in channel_events(channel) if e["type"] == "compacted"]
    assert announced == [
        {
            "type": "compacted",
            "session": str(session.pk),
            "checkpoint": checkpoint.to_dict(),
            "channel": "lobby",
            "seq": announced[0]["seq"],
        }
    ]

    services.post_message(channel=channel, user=alice, text="And then?")
    wait_for_done(channel, count=2)
    sent = prompt_text(openai_server.requests[1])
    assert f"{HEADING}\n{SUMMARY}" in sent
    assert "old fact 6" not in sent and "old fact 0" not in sent
    assert "old fact 7" in sent and sent.endswith("And then?")
    reply = Turn.objects.filter(session=session, role="bot").order_by("-id").first()
    assert reply is not None and reply.dropped_turns == 0  # summarised, not left out

    # The REST page of turns carries it too, placed after its turn.
    page = client_for(alice).get(f"/api/sessions/{session.pk}/turns").json()
    assert page["checkpoints"] == [checkpoint.to_dict()]
    older = client_for(alice).get(f"/api/sessions/{session.pk}/turns?before={turns[3].pk}").json()
    assert [t["id"] for t in older["turns"]] == [t.pk for t in turns[:3]] and older["checkpoints"] == []


@pytest.mark.asyncio
async def test_everyone_hears_compacted_and_a_late_joiners_history_carries_it(
    channel, alice, openai_server, second_openai_server
):
    await db_call(task_model)(second_openai_server, [SUMMARY])
    await db_call(small_model)(channel, openai_server)
    socket, connected, _ = await open_socket("/ws/lobby?watch=1")
    assert connected and (await receive(socket))["type"] == "history"
    await db_call(seed)(channel, alice, 10)
    await db_call(services.post_message)(channel=channel, user=alice, text="What did we say?")
    frames = await receive_until(socket, "compacted", timeout=15)
    event = frames[-1]
    assert "done" in [frame["type"] for frame in frames]  # after the reply, never during it
    session = await db_call(lambda: str(Session.objects.get(channel=channel).pk))()
    assert event["session"] == session and event["checkpoint"]["summary"] == SUMMARY
    assert event["checkpoint"]["turns"] == 7
    await socket.disconnect()

    late, connected, _ = await open_socket("/ws/lobby?watch=1")
    history = await receive(late)
    assert connected and history["type"] == "history"
    assert history["checkpoints"] == [event["checkpoint"]]
    through = event["checkpoint"]["through_turn_id"]
    assert through in [turn["id"] for turn in history["turns"]]
    await late.disconnect()


def test_hiding_a_summarised_turn_drops_the_checkpoint_and_its_text(
    channel, alice, mona, openai_server, second_openai_server
):
    task_model(second_openai_server, [SUMMARY])
    checkpoint = compacted(channel, openai_server, alice)
    hidden = Turn.objects.get(text__startswith="old fact 3 ")
    services.hide_turn(actor=mona, turn=hidden, reason="private")
    assert not Checkpoint.objects.filter(pk=checkpoint.pk).exists()
    assert client_for(alice).get(f"/api/sessions/{hidden.session_id}/turns").json()["checkpoints"] == []

    services.post_message(channel=channel, user=alice, text="Go on.")
    wait_for_replies(channel, 7)  # the five seeded, and two replies
    sent = prompt_text(openai_server.requests[1])
    assert SUMMARY not in sent and "old fact 3" not in sent
    # Still long: summarised again, from the visible turns only.
    wait_for(lambda: len(second_openai_server.requests) == 2, timeout=15)
    again = wait_for(lambda: latest(hidden.session_id), timeout=15)
    assert "old fact 3" not in prompt_text(second_openai_server.requests[1])
    assert "old fact 2" in prompt_text(second_openai_server.requests[1])
    assert again.pk != checkpoint.pk


def test_a_turn_after_the_checkpoint_may_go_and_the_checkpoint_stays(
    channel, alice, mona, openai_server, second_openai_server
):
    task_model(second_openai_server, [SUMMARY])
    checkpoint = compacted(channel, openai_server, alice)
    newer = Turn.objects.get(text__startswith="old fact 8 ")
    services.hide_turn(actor=mona, turn=newer)
    services.delete_turn(actor=mona, turn=Turn.objects.get(text__startswith="old fact 9 "))
    assert latest(checkpoint.session_id) == checkpoint


def test_deleting_or_truncating_a_summarised_turn_drops_the_checkpoints_that_cover_it(channel, alice, mona):
    turns = seed(channel, alice, 10)
    session = channel.active_session

    def checkpoint(through: Turn) -> Checkpoint:
        return Checkpoint.objects.create(session=session, through_turn_id=through.pk, summary="s", turns=1)

    first = checkpoint(turns[2])
    checkpoint(turns[5])
    services.delete_turn(actor=mona, turn=turns[4])  # covered by the second only
    assert list(Checkpoint.objects.all()) == [first]
    services.truncate_session(session=session, user=alice, keep=8, keep_from="end")  # turns 0 (and 1)
    assert not Checkpoint.objects.exists()

    third = checkpoint(turns[6])
    services.truncate_session(session=session, user=alice, keep=7, keep_from="start")  # turns 8 and 9
    assert latest(session.pk) == third
    services.purge_session(actor=mona, session=session)
    assert not Checkpoint.objects.exists()


def test_regenerating_a_summarised_reply_drops_the_checkpoint(channel, alice):
    turns = seed(channel, alice, 4)
    # Every turn after the checkpoint was hidden: the newest visible one is summarised.
    session = channel.active_session
    Checkpoint.objects.create(session=session, through_turn_id=turns[3].pk, summary="s", turns=4)
    services.regenerate(channel=channel, user=alice)
    assert not Checkpoint.objects.exists()
    wait_for_done(channel)


def test_one_compaction_of_a_session_at_a_time(channel, alice, openai_server, second_openai_server):
    task_model(second_openai_server, ["a", "b", "c", "d"], delay=0.2)
    small_model(channel, openai_server)
    newest = seed(channel, alice, 10)[-1]
    session = channel.active_session

    def run() -> Any:
        return background.submit(compaction.compact(session.pk, channel.pk, channel.name, newest.pk))

    results = [future.result(10) for future in (run(), run())]
    written = [result for result in results if result is not None]
    assert len(written) == 1 and written[0]["summary"] == "abcd"  # the other was refused
    assert len(second_openai_server.requests) == 1 and Checkpoint.objects.count() == 1
    # Done: the next one may run (and finds nothing left to summarise).
    assert run().result(10) is None and len(second_openai_server.requests) == 1


def test_a_turn_hidden_while_it_is_summarised_stops_the_checkpoint(
    channel, alice, mona, openai_server, second_openai_server
):
    task_model(second_openai_server, ["a"] * 10, delay=0.1)
    small_model(channel, openai_server)
    turns = seed(channel, alice, 10)
    session = channel.active_session
    running = background.submit(compaction.compact(session.pk, channel.pk, channel.name, turns[-1].pk))
    wait_for(lambda: second_openai_server.requests)
    services.hide_turn(actor=mona, turn=turns[1])
    assert running.result(10) is None
    assert not Checkpoint.objects.exists()
    assert not [e for e in channel_events(channel) if e["type"] == "compacted"]


def test_the_demo_summarises_offline_and_a_checkpoint_covers_the_one_before(channel, alice):
    Provider.objects.create(name="demo", kind="demo", priority=1000, context_window=500)
    use_provider(channel, "demo", max_tokens=40)
    seed(channel, alice, 10, label="Point")
    services.post_message(channel=channel, user=alice, text="Tell me more")
    wait_for_done(channel)
    session = channel.active_session
    first = wait_for(lambda: latest(session.pk), timeout=15)
    assert first.provider == "demo" and first.turns == 7
    lines = first.summary.splitlines()
    assert lines == [
        f"- {'alice' if i % 2 == 0 else 'assistant'}: Point {i} is worth keeping." for i in range(7)
    ]

    seed(channel, alice, 8, label="Later")
    services.post_message(channel=channel, user=alice, text="Tell me more again")
    wait_for_done(channel, count=2)
    reply = Turn.objects.filter(session=session, role="bot").order_by("-id").first()
    assert reply is not None and f"{HEADING}\n{first.summary}" in reply.prompt
    assert "Point 6 is worth keeping. lorem" not in reply.prompt
    second = wait_for(lambda: Checkpoint.objects.count() == 2 and latest(session.pk), timeout=15)
    assert second.summary.startswith(first.summary + "\n- ") and second.turns > first.turns


def test_first_sentences_make_the_demo_summary():
    job = compaction.Job(
        session_id=None,
        channel_id=1,
        channel_name="x",
        config=DEMO_CONFIG,
        previous_id=None,
        previous_summary="Before.",
        previous_turns=0,
        turns=[(1, "alice", "Tomatoes need sun. And water!"), (2, "assistant", "  Yes\nindeed ")],
    )
    assert compaction.demo_summary(job) == "Before.\n- alice: Tomatoes need sun.\n- assistant: Yes indeed"


@pytest.mark.parametrize(
    ("share", "tokens", "window", "needed"),
    [(0.7, 71, 100, True), (0.7, 70, 100, False), (0.0, 99, 100, False), (0.7, 10, 0, False)],
)
def test_needs_compaction(settings, share, tokens, window, needed):
    settings.COMPACT_AT = share
    assert compaction.needs_compaction(tokens, window) is needed

"""The engine: single flight, interrupt, queued messages, crash recovery, the demo."""

import time

import pytest

from chat.generation import engine
from chat.models import Session, Turn
from chat.realtime import store
from chat.services import inject, interrupt, post_message, regenerate, reset
from tests.conftest import (
    add_provider,
    channel_events,
    use_provider,
    use_slow_model,
    wait_for,
    wait_for_done,
    wait_until_no_generation,
)

pytestmark = pytest.mark.django_db(transaction=True)


def bots(channel):
    return list(Turn.objects.filter(session__channel=channel, role="bot").order_by("id"))


def test_interrupt_closes_the_upstream_connection_and_keeps_the_partial_text(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.02, tokens=[f" w{i}" for i in range(500)], max_tokens=1000)
    post_message(channel=channel, user=alice, text="Talk a lot")
    wait_for(lambda: any(e["type"] == "token" for e in channel_events(channel)))
    started = time.monotonic()
    assert interrupt(channel=channel, user=alice) is True
    events = wait_for_done(channel)
    assert time.monotonic() - started < 0.5 + 0.5  # stopped well within a second
    assert openai_server.disconnected.wait(3), "the model server never saw the client hang up"
    turn = bots(channel)[0]
    assert turn.finish_reason == "interrupted"
    assert turn.text and turn.text == "".join(f" w{i}" for i in range(len(turn.text.split())))
    assert [e["type"] for e in events][-3:] == ["turn", "interrupted", "done"]
    assert "".join(e["data"] for e in events if e["type"] == "token") == turn.text


def test_interrupt_reaches_a_stalled_model(channel, alice, openai_server):
    openai_server.behaviour.stall_after = 1
    add_provider("stall", openai_server.base_url)
    use_provider(channel, "stall")
    post_message(channel=channel, user=alice, text="Hi")
    wait_for(lambda: any(e["type"] == "token" for e in channel_events(channel)))
    engine.interrupt(channel.pk)
    wait_for_done(channel, timeout=2)
    assert bots(channel)[0].finish_reason == "interrupted"
    assert openai_server.disconnected.wait(3)


def test_messages_sent_during_a_reply_are_saved_at_once_and_answered_once(channel, alice, bob, openai_server):
    use_slow_model(channel, openai_server, delay=0.02, tokens=[" x"] * 30)
    post_message(channel=channel, user=alice, text="first")
    wait_for(lambda: any(e["type"] == "thinking" for e in channel_events(channel)))
    post_message(channel=channel, user=bob, text="second")
    post_message(channel=channel, user=alice, text="third")
    texts = [t.text for t in Turn.objects.filter(role="user").order_by("id")]
    assert texts == ["first", "second", "third"]  # saved before the reply ends
    wait_for_done(channel, count=2, timeout=15)
    wait_until_no_generation()  # nothing left running or asked for: no third reply
    assert len(bots(channel)) == 2
    assert len(openai_server.requests) == 2
    second_prompt = openai_server.requests[1]["messages"]
    assert second_prompt[-1]["content"] == "second\n\nthird"


def test_one_generation_at_a_time_per_channel(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.02)
    post_message(channel=channel, user=alice, text="go")
    wait_for(lambda: any(e["type"] == "thinking" for e in channel_events(channel)))
    for _ in range(5):  # from this process and, through Redis, any other
        engine.request_generation(channel.pk)
    wait_for_done(channel, count=2, timeout=15)
    wait_until_no_generation()
    events = channel_events(channel)
    # thinking/done strictly alternate: no two replies overlapped
    starts_and_ends = [e["type"] for e in events if e["type"] in ("thinking", "done")]
    assert starts_and_ends == ["thinking", "done"] * 2  # the requests made meanwhile got one reply
    assert Turn.objects.filter(role="bot", finish_reason__isnull=True).count() == 0


def test_a_reply_left_unfinished_by_a_dead_process_is_closed_as_error(channel, alice):
    session = channel.active_session
    Turn.objects.create(session=session, role="user", author=alice, text="hello")
    orphan = Turn.objects.create(session=session, role="bot", text="half a rep")
    assert engine.recover_unfinished() == 1
    orphan.refresh_from_db()
    assert orphan.finish_reason == "error"
    assert orphan.text == "half a rep"
    events = channel_events(channel)
    assert [e["type"] for e in events] == ["turn", "done"]
    assert events[0]["id"] == orphan.pk and events[0]["finish_reason"] == "error"


def test_recovery_leaves_a_reply_that_a_live_process_is_writing(channel, alice):
    session = channel.active_session
    live = Turn.objects.create(session=session, role="bot", text="still going")
    store.sync_redis().set(store.key(channel.pk, "lock"), "someone-else#1", px=5000)
    try:
        assert engine.recover_unfinished() == 0
        live.refresh_from_db()
        assert live.finish_reason is None
    finally:
        store.sync_redis().delete(store.key(channel.pk, "lock"))


def test_partial_text_reaches_the_database_while_the_reply_runs(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.01, tokens=[" y"] * 200, max_tokens=500)
    post_message(channel=channel, user=alice, text="go")
    partial = wait_for(
        lambda: Turn.objects.filter(role="bot", finish_reason__isnull=True).exclude(text="").first(),
        timeout=3,
    )
    assert partial.text.startswith(" y")
    wait_for_done(channel, timeout=10)


def test_the_demo_answers_in_chat_mode(channel, alice):
    post_message(channel=channel, user=alice, text="I feel tired")
    events = wait_for_done(channel)
    turn = bots(channel)[0]
    assert turn.text == "Why do you feel tired?" or turn.text == "How long have you felt tired?"
    assert turn.model == "demo" and turn.provider == "demo"
    assert "".join(e["data"] for e in events if e["type"] == "token") == turn.text


def test_the_demo_answers_in_completion_mode_and_honours_stops(channel, alice):
    channel.mode = "completion"
    channel.save()
    framing = {"user_prefix": "Q: ", "bot_prefix": "A: ", "turn_suffix": "\n", "stop": ["\nQ:"]}
    post_message(channel=channel, user=alice, text="hello", framing=framing)
    wait_for_done(channel)
    turn = bots(channel)[0]
    assert turn.text.startswith("Hello! I am the demo bot")
    assert "Q:" not in turn.text
    assert turn.prompt.endswith("Q: hello\nA: ")


def test_the_demo_honours_max_tokens(channel, alice):
    post_message(channel=channel, user=alice, text="hello", params={"max_tokens": 3})
    wait_for_done(channel)
    turn = bots(channel)[0]
    assert turn.finish_reason == "length" and len(turn.text.split()) == 3


def test_regenerate_hides_the_last_reply_and_writes_a_new_one(channel, alice):
    post_message(channel=channel, user=alice, text="hello")
    wait_for_done(channel)
    first = bots(channel)[0]
    hidden = regenerate(channel=channel, user=alice)
    assert hidden is not None
    assert hidden.pk == first.pk
    wait_for_done(channel)  # the log restarts at the redacting turn_removed (issue 11, item 1)
    first.refresh_from_db()
    assert first.hidden is True
    assert len(bots(channel)) == 2
    assert any(e["type"] == "turn_removed" and e["id"] == first.pk for e in channel_events(channel))


def test_regenerate_interrupts_a_running_reply_first(channel, alice, openai_server):
    use_slow_model(channel, openai_server, delay=0.01, tokens=[" z"] * 300, max_tokens=400)
    post_message(channel=channel, user=alice, text="go")
    wait_for(lambda: any(e["type"] == "token" for e in channel_events(channel)))
    regenerate(channel=channel, user=alice)
    wait_for_done(channel, timeout=15)  # the new reply's: the log restarted at turn_removed
    first, second = bots(channel)
    assert first.finish_reason == "interrupted" and first.hidden is True
    assert second.hidden is False


def test_inject_adds_a_turn_without_an_answer(channel, alice):
    turn = inject(channel=channel, user=alice, role="agent", text="A door creaks.")
    # A reply is asked for (the pending key) before a service returns; none was.
    assert not store.sync_redis().exists(store.key(channel.pk, "pending"))
    assert not store.sync_redis().exists(store.key(channel.pk, "lock"))
    assert turn.role == "agent" and bots(channel) == []
    assert [e["type"] for e in channel_events(channel)] == ["turn"]


def test_reset_archives_the_session_and_deletes_nothing(channel, alice):
    inject(channel=channel, user=alice, role="user", text="old")
    old = channel.active_session
    new = reset(channel=channel, user=alice)
    old.refresh_from_db()
    assert old.status == "archived" and old.archived_at is not None
    assert new.status == "active" and new.pk != old.pk
    assert Turn.objects.filter(session=old).count() == 1
    assert Session.objects.filter(channel=channel, status="active").count() == 1
    assert channel_events(channel)[-1] == {
        "type": "reset",
        "session": str(new.pk),
        "channel": "lobby",
        "seq": 2,
    }


def test_the_next_reply_in_a_channel_closes_a_dead_processs_turn_first(channel, alice):
    session = channel.active_session
    orphan = Turn.objects.create(session=session, role="bot", text="cut off")
    post_message(channel=channel, user=alice, text="hello again")
    events = wait_for_done(channel, count=2)
    orphan.refresh_from_db()
    assert orphan.finish_reason == "error" and orphan.text == "cut off"
    kinds = [(e["type"], e.get("id") or e.get("turn_id")) for e in events]
    thinking = next(i for i, (kind, _) in enumerate(kinds) if kind == "thinking")
    assert kinds.index(("done", orphan.pk)) < thinking
